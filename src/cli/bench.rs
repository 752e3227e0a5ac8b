//! `scoredd bench-quality`: train (with a time budget), calibrate --auto and
//! evaluate every category under a root, or every MNIST digit one-class,
//! and write quality.md and quality.json.

use std::path::{Path, PathBuf};

use clap::Args;
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::calibrate::Objective;
use scoredd::pipeline::{
    self, BenchPlan, BenchRow, BenchTable, CalibratePlan, EvalPlan, ModelStart, Pipeline, TrainPlan,
};
use scoredd::sde::SdeKind;
use scoredd::{with_backend, Error};

use super::console::Console;
use super::detect::make_dir;

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["data", "mnist"])))]
pub struct BenchArgs {
    /// A root of MVTec-layout categories (each with train/good and test/),
    /// or one category folder.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A folder with MNIST's t10k idx files: the one-class protocol per digit.
    #[arg(long)]
    pub mnist: Option<PathBuf>,
    /// MNIST digits to run, comma-separated (default: all ten).
    #[arg(long, value_delimiter = ',')]
    pub digits: Option<Vec<u8>>,
    /// Training budget per category or digit, in minutes.
    #[arg(long, default_value_t = 5.0)]
    pub minutes: f64,
    /// Train exactly this many steps instead of the time budget (for tests).
    #[arg(long)]
    pub steps: Option<u64>,
    /// tiny | small | ncsnpp256 | a .json model config (default: small for
    /// MVTec, tiny (32 px) for MNIST).
    #[arg(long)]
    pub config: Option<String>,
    /// Image channels (default: 3 for MVTec, 1 for MNIST).
    #[arg(long)]
    pub channels: Option<usize>,
    /// The SDE (default: ve for MVTec, vp for MNIST as in the paper).
    #[arg(long, value_enum)]
    pub sde: Option<SdeKind>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Adam's learning rate (after the warm-up).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f32,
    /// What calibrate --auto maximises (default: both — the map for pixel
    /// AUROC, the image score for image AUROC — for MVTec, semantic for
    /// MNIST, whose anomalies are other digits, not local marks).
    #[arg(long, value_enum)]
    pub objective: Option<Objective>,
    /// Evaluate about this many test images per category.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write each row's calibrated model there, as
    /// `<category>.safetensors` or `digit_N.safetensors`.
    #[arg(long)]
    pub save_models: Option<PathBuf>,
    /// Folder for quality.md and quality.json.
    #[arg(long, default_value = "scoredd-quality")]
    pub out: PathBuf,
}

pub fn run(choice: BackendChoice, args: BenchArgs) -> Result<BenchTable, Error> {
    check(&args)?;
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    with_backend!(&backend, |b| bench_on(b, &args))
}

/// Input errors before a backend is opened.
fn check(args: &BenchArgs) -> Result<(), Error> {
    if !(args.minutes.is_finite() && args.minutes > 0.0) {
        return Err(Error::Invalid(format!(
            "--minutes must be positive, got {}",
            args.minutes
        )));
    }
    if let Some(d) = args.digits.iter().flatten().find(|&&d| d > 9) {
        return Err(Error::Invalid(format!(
            "--digits: {d} is not a digit (0-9)"
        )));
    }
    if args.digits.as_ref().is_some_and(|d| d.is_empty()) {
        return Err(Error::Invalid("--digits lists no digit".into()));
    }
    Ok(())
}

/// The shared plan: a fresh model per row, trained for the budget (or
/// `--steps`), calibrated automatically.
fn plan(args: &BenchArgs, mnist: bool) -> Result<BenchPlan, Error> {
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| if mnist { "tiny" } else { "small" }.into());
    let channels = args.channels.unwrap_or(if mnist { 1 } else { 3 });
    let sde = args
        .sde
        .unwrap_or(if mnist { SdeKind::Vp } else { SdeKind::Ve });
    let mut train = TrainPlan::new(ModelStart::fresh(&config, channels, sde)?);
    train.batch = args.batch;
    train.lr = args.lr;
    train.seed = args.seed;
    match args.steps {
        Some(s) => train.steps = s,
        None => {
            train.steps = u64::MAX / 4;
            train.minutes = Some(args.minutes);
        }
    }
    train.checkpoint_every = u64::MAX / 4;
    let objective = args.objective.unwrap_or(if mnist {
        Objective::Semantic
    } else {
        Objective::Both
    });
    Ok(BenchPlan {
        train,
        calibrate: CalibratePlan {
            auto: true,
            objective,
            batch: args.batch,
            ..CalibratePlan::default()
        },
        evaluate: EvalPlan {
            limit: args.limit,
            batch: args.batch,
        },
        save_models: args.save_models.clone(),
    })
}

fn bench_on<B: NnBackend>(be: &B, args: &BenchArgs) -> Result<BenchTable, Error> {
    let mut console = Console::new();
    let mut p = Pipeline::new(be, &mut console);
    let mut rows: Vec<BenchRow> = Vec::new();
    let budget = match args.steps {
        Some(s) => format!("{s} training steps per row"),
        None => format!("a training budget of {} minute(s) per row", args.minutes),
    };
    let budget = format!("{budget}, batch {}, learning rate {}", args.batch, args.lr);
    let protocol = if let Some(dir) = &args.mnist {
        let plan = plan(args, true)?;
        let digits = args.digits.clone().unwrap_or_else(|| (0..10).collect());
        prepare_outputs(args)?;
        for d in digits {
            eprintln!("digit {d}");
            rows.push(pipeline::bench_mnist_digit(&mut p, dir, d, &plan)?);
            eprintln!("{}", line(rows.last().expect("just pushed")));
        }
        format!(
            "One-class MNIST from the t10k files in {}: for each digit, its images in file order are split by position — even positions (0, 2, 4, …) train (less those held out for calibration), odd positions are the test normals — against as many images of the other nine digits (an equal share of each, the first in file order) as anomalies. Image AUROC only (no masks). {} model, {} channel(s), {:?} SDE, {budget}, calibrate --auto ({:?} objective).",
            dir.display(),
            args.config.as_deref().unwrap_or("tiny"),
            args.channels.unwrap_or(1),
            args.sde.unwrap_or(SdeKind::Vp),
            plan.calibrate.objective
        )
    } else {
        let root = args
            .data
            .as_deref()
            .expect("clap requires --data or --mnist");
        let cats = pipeline::categories(root)?;
        let plan = plan(args, false)?;
        prepare_outputs(args)?;
        for (name, dir) in &cats {
            eprintln!("category {name}");
            rows.push(pipeline::bench_category(&mut p, name, dir, &plan)?);
            eprintln!("{}", line(rows.last().expect("just pushed")));
        }
        format!(
            "MVTec-layout categories under {}: train on train/good (less those held out for calibration), calibrate --auto ({:?} objective), evaluate on test/. {} model, {budget}.",
            root.display(),
            plan.calibrate.objective,
            args.config.as_deref().unwrap_or("small"),
        )
    };
    let table = BenchTable::new(protocol, rows);
    write(&table, &args.out)?;
    print!("{}", table.markdown());
    Ok(table)
}

/// Makes the output folders before any training, so that a folder that
/// cannot be written fails at once, not after the first row's budget.
fn prepare_outputs(args: &BenchArgs) -> Result<(), Error> {
    make_dir(&args.out)?;
    args.save_models.as_deref().map_or(Ok(()), make_dir)
}

fn line(r: &BenchRow) -> String {
    format!(
        "{}: image AUROC {}, pixel AUROC {}, {:.0} steps in {:.2} min, {:.1} ms/image",
        r.name,
        pipeline::fmt_metric(r.image_auroc),
        pipeline::fmt_metric(r.pixel_auroc),
        r.training_steps,
        r.training_minutes,
        r.detect_ms_per_image
    )
}

fn write(table: &BenchTable, out: &Path) -> Result<(), Error> {
    make_dir(out)?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    let md = out.join("quality.md");
    std::fs::write(&md, table.markdown()).map_err(io(&md))?;
    let js = out.join("quality.json");
    let text = serde_json::to_string_pretty(table)
        .map_err(|e| Error::Invalid(format!("quality.json: {e}")))?;
    std::fs::write(&js, text).map_err(io(&js))?;
    eprintln!("wrote {} and {}", md.display(), js.display());
    Ok(())
}
