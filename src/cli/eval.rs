//! `scoredd eval`: a model against an MVTec-layout test split → report.json,
//! report.md and an overlay gallery.

use std::path::{Path, PathBuf};

use clap::Args;
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::model_file::ModelFile;
use scoredd::nn::score_model::ScoreModel;
use scoredd::pipeline::{
    self, fmt_metric as fmt, EvalPlan, Evaluation, Pipeline, Report, TestSource,
};
use scoredd::{plot, with_backend, Error};

use super::console::Console;
use super::detect::{make_dir, DetectFlags};

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// An MVTec-layout category folder (test/, ground_truth/), or a root of
    /// categories with --category.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long, default_value = "model.safetensors")]
    pub model: PathBuf,
    /// Folder for report.json, report.md and gallery.png.
    #[arg(long, default_value = "scoredd-eval")]
    pub out: PathBuf,
    /// Gallery images per defect type.
    #[arg(long, default_value_t = 4)]
    pub gallery: usize,
    /// Evaluate about this many test images, an evenly spaced subset in which
    /// every defect type keeps its share (for slow settings such as ablations).
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub flags: DetectFlags,
}

pub fn run(choice: BackendChoice, args: EvalArgs) -> Result<Report, Error> {
    let file = ModelFile::load(&args.model)?;
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    let name = backend_name(&why);
    with_backend!(&backend, |b| eval_on(b, &file, &args, &name))
}

/// The backend's description without the "backend: " prefix, for the report.
pub fn backend_name(why: &str) -> String {
    why.trim_start_matches("backend: ").to_string()
}

fn eval_on<B: NnBackend>(
    be: &B,
    file: &ModelFile,
    args: &EvalArgs,
    backend: &str,
) -> Result<Report, Error> {
    let model = ScoreModel::from_file(be, file)?;
    let opts = args.flags.options(&file.meta);
    let test = TestSource::new(&args.data, args.category.clone()).load_for(&model, &opts)?;
    make_dir(&args.out)?;
    let plan = EvalPlan {
        limit: args.limit,
        batch: args.flags.batch,
    };
    let mut console = Console::new();
    let evaluation = Pipeline::new(be, &mut console).evaluate(&model, test, &opts, &plan)?;
    console.end_bar();
    let model_name = args.model.display().to_string();
    write_report(&evaluation, &model_name, backend, &args.out, args.gallery)
}

/// report.json, report.md and gallery.png (`per_type` images of each type)
/// in `out`, and the headline numbers on stdout.
pub fn write_report(
    ev: &Evaluation,
    model: &str,
    backend: &str,
    out: &Path,
    per_type: usize,
) -> Result<Report, Error> {
    let gallery_path = out.join("gallery.png");
    plot::save_png(&pipeline::gallery(ev, per_type)?, &gallery_path)?;
    let report = Report::new(ev, model, backend, &gallery_path.display().to_string());
    let json_path = out.join("report.json");
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Invalid(format!("report.json: {e}")))?;
    write_file(&json_path, &json)?;
    let md_path = out.join("report.md");
    write_file(&md_path, &pipeline::markdown(&report, ev))?;
    println!(
        "image AUROC {}, pixel AUROC {}, AUPRO@0.3 {}, F1-max {} on {} images ({:.3} s/image)",
        fmt(report.image_auroc),
        fmt(report.pixel_auroc),
        fmt(report.aupro),
        fmt(report.f1_max),
        report.images,
        report.seconds_per_image
    );
    println!(
        "report: {} and {}; gallery: {}",
        md_path.display(),
        json_path.display(),
        gallery_path.display()
    );
    Ok(report)
}

fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
}
