//! `scoredd demo`: the whole product in one command — synthesise a data set
//! (or take the user's), train a small model, calibrate it, evaluate it, and
//! say where the report and pictures are. The stages are the library's
//! [`Pipeline::run`] on one opened backend: the trained model goes to
//! calibration and evaluation in memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::calibrate::Objective;
use scoredd::pipeline::{
    CalibratePlan, Checkpoint, EvalPlan, ModelStart, Pipeline, PipelineEvents, Progress, RunPlan,
    Stage, TrainPlan,
};
use scoredd::sde::SdeKind;
use scoredd::synth::{self, SynthConfig};
use scoredd::train::StepReport;
use scoredd::{with_backend, Error};

use super::console::Console;
use super::detect::make_dir;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where everything goes: data/ (if synthesised), model.safetensors, report.md, report.json, gallery.png.
    #[arg(long, default_value = "scoredd-demo")]
    pub out: PathBuf,
    /// Your own MVTec-layout data (a category folder, or a root with --category)
    /// instead of the synthetic textures.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Category: a synthetic texture (stripes, weave, dots, grain) or a folder under --data.
    #[arg(long)]
    pub category: Option<String>,
    /// Model preset: tiny (32 px, minutes on a CPU) or small (64 px).
    #[arg(long, default_value = "tiny")]
    pub config: String,
    /// Image channels the model sees (1 = grayscale).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    #[arg(long, default_value_t = 800)]
    pub steps: u64,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Stop training after this many minutes even if --steps is not reached.
    #[arg(long)]
    pub minutes: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(choice: BackendChoice, args: DemoArgs) -> Result<(), Error> {
    let t0 = Instant::now();
    make_dir(&args.out)?;
    let (data, category) = data_set(&args)?;
    let plan = plan(&args, data, category)?;
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    let backend_name = super::eval::backend_name(&why);
    with_backend!(&backend, |b| demo_on(b, &args, &plan, &backend_name, t0))
}

/// The user's data, or the synthetic textures written into `<out>/data`.
fn data_set(args: &DemoArgs) -> Result<(PathBuf, Option<String>), Error> {
    if let Some(d) = &args.data {
        return Ok((d.clone(), args.category.clone()));
    }
    let cat = args.category.clone().unwrap_or_else(|| "stripes".into());
    let root = args.out.join("data");
    eprintln!(
        "== 1/4 synthesising the {cat} texture data set into {}",
        root.display()
    );
    let summary = synth::generate(
        &root,
        &SynthConfig {
            seed: args.seed,
            size: 64,
            train: 320,
            test_good: 20,
            test_per_defect: 10,
            categories: vec![cat.clone()],
        },
    )?;
    super::synth::print_summary(&summary);
    Ok((root, Some(cat)))
}

/// The demo's recipe: a short training run, automatic calibration, evaluation.
fn plan(args: &DemoArgs, data: PathBuf, category: Option<String>) -> Result<RunPlan, Error> {
    let train = TrainPlan {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        warmup: Some((args.steps / 10).min(500)),
        seed: args.seed,
        minutes: args.minutes,
        // holdout: the default, 25 % of 320: 16 normals choose {t}/taps, 64 set the threshold
        ..TrainPlan::new(ModelStart::fresh(&args.config, args.channels, SdeKind::Ve)?)
    };
    Ok(RunPlan {
        data,
        category,
        train,
        calibrate: CalibratePlan {
            auto: true,
            quantile: 0.99,
            select_images: 16,
            objective: Objective::Both,
            batch: 8,
            budget_ms: None,
        },
        evaluate: EvalPlan {
            limit: None,
            batch: 8,
        },
        detect_seed: 0,
    })
}

fn demo_on<B: NnBackend>(
    be: &B,
    args: &DemoArgs,
    plan: &RunPlan,
    backend: &str,
    t0: Instant,
) -> Result<(), Error> {
    let model_path = args.out.join("model.safetensors");
    let mut events = Headed {
        console: super::train::training_console(&model_path, true),
        stage: None,
        config: args.config.clone(),
    };
    let result = Pipeline::new(be, &mut events).run(plan)?;
    events.console.end_bar();
    super::train::report(&result.train, &model_path)?;
    let (Some(calibrated), Some(evaluation)) = (&result.calibrated, &result.evaluation) else {
        return Ok(()); // interrupted while training; the report above says how to resume
    };
    super::calibrate::print_result(calibrated, plan.calibrate.auto);
    let model_name = model_path.display().to_string();
    let report = super::eval::write_report(evaluation, &model_name, backend, &args.out, 4)?;
    println!(
        "\ndemo finished in {:.1} min: image AUROC {:.3}, pixel AUROC {:.3}",
        t0.elapsed().as_secs_f64() / 60.0,
        report.image_auroc.unwrap_or(f64::NAN),
        report.pixel_auroc.unwrap_or(f64::NAN)
    );
    print_where(&args.out, &report.gallery, &model_path);
    Ok(())
}

fn print_where(out: &Path, gallery: &str, model: &Path) {
    println!("  report:  {}", out.join("report.md").display());
    println!("  gallery: {gallery}");
    println!(
        "  model:   {} (try: scoredd detect --model {} <images>)",
        model.display(),
        model.display()
    );
}

/// The console with a header line as each stage begins.
struct Headed {
    console: Console,
    stage: Option<Stage>,
    /// The model preset, for the training header.
    config: String,
}

impl Headed {
    fn enter(&mut self, stage: Stage) {
        if self.stage == Some(stage) {
            return;
        }
        self.stage = Some(stage);
        let header = match stage {
            Stage::Train => format!("== 2/4 training a {} score model", self.config),
            Stage::Calibrate => "== 3/4 choosing {t} and taps on synthetic defects, and calibrating on held-out normal images".into(),
            Stage::Evaluate => "== 4/4 evaluating on the test images".into(),
        };
        self.console.say(&header);
    }
}

impl PipelineEvents for Headed {
    fn on_progress(&mut self, p: &Progress<'_>) {
        self.enter(p.task.stage());
        self.console.on_progress(p);
    }

    fn on_train_step(&mut self, r: &StepReport, seconds: f64) -> Result<(), Error> {
        self.console.on_train_step(r, seconds)
    }

    fn on_checkpoint(&mut self, c: &Checkpoint<'_>) -> Result<(), Error> {
        self.console.on_checkpoint(c)
    }

    fn on_log(&mut self, stage: Stage, line: &str) {
        self.enter(stage);
        self.console.on_log(stage, line);
    }

    fn should_stop(&mut self) -> bool {
        self.console.should_stop()
    }
}
