//! `scoredd demo`: the whole product in one command — synthesise a data set
//! (or take the user's), train a small model, calibrate it, evaluate it, and
//! say where the report and pictures are.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use scoredd::backend::train_ops::Reduce;
use scoredd::backend::BackendChoice;
use scoredd::sde::SdeKind;
use scoredd::Error;

use super::calibrate::CalibrateArgs;
use super::detect::DetectFlags;
use super::eval::EvalArgs;
use super::synth::SynthArgs;
use super::train::{OnDiverge, TrainArgs};

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
    super::detect::make_dir(&args.out)?;
    let (data, category) = match &args.data {
        Some(d) => (d.clone(), args.category.clone()),
        None => {
            let cat = args.category.clone().unwrap_or_else(|| "stripes".into());
            let root = args.out.join("data");
            eprintln!(
                "== 1/4 synthesising the {cat} texture data set into {}",
                root.display()
            );
            super::synth::run(&SynthArgs {
                out: root.clone(),
                categories: Some(vec![cat.clone()]),
                seed: args.seed,
                size: 64,
                train: 320,
                test_good: 20,
                test_per_defect: 10,
            })?;
            (root, Some(cat))
        }
    };
    let model = args.out.join("model.safetensors");
    eprintln!("== 2/4 training a {} score model", args.config);
    super::train::run(
        choice,
        TrainArgs {
            data: data.clone(),
            category: category.clone(),
            digit: None,
            config: args.config.clone(),
            channels: args.channels,
            sde: SdeKind::Ve,
            steps: args.steps,
            batch: args.batch,
            lr: args.lr,
            warmup: Some((args.steps / 10).min(500)),
            seed: args.seed,
            reduce: Reduce::Mean,
            likelihood_weighting: false,
            hflip: false,
            vflip: false,
            crop: 0.0,
            holdout: None, // 25 % of 320: 16 normals choose {t}/taps, 64 set the threshold
            minutes: args.minutes,
            out: model.clone(),
            resume: None,
            log_every: 10,
            checkpoint_every: 500,
            on_diverge: OnDiverge::Rollback,
        },
    )?;
    eprintln!("== 3/4 choosing {{t}} and taps on synthetic defects, and calibrating on held-out normal images");
    super::calibrate::run(
        choice,
        CalibrateArgs {
            model: model.clone(),
            data: Some(data.clone()),
            category: category.clone(),
            digit: None,
            normals: None,
            auto: true,
            quantile: 0.99,
            select_images: 16,
            objective: scoredd::calibrate::Objective::Pixel,
            out: None,
            flags: DetectFlags {
                batch: 8,
                ..Default::default()
            },
        },
    )?;
    eprintln!("== 4/4 evaluating on the test images");
    let report = super::eval::run(
        choice,
        EvalArgs {
            data,
            category,
            model: model.clone(),
            out: args.out.clone(),
            gallery: 4,
            limit: None,
            flags: DetectFlags {
                batch: 8,
                ..Default::default()
            },
        },
    )?;
    println!(
        "\ndemo finished in {:.1} min: image AUROC {:.3}, pixel AUROC {:.3}",
        t0.elapsed().as_secs_f64() / 60.0,
        report.image_auroc.unwrap_or(f64::NAN),
        report.pixel_auroc.unwrap_or(f64::NAN)
    );
    println!("  report:  {}", args.out.join("report.md").display());
    println!("  gallery: {}", report.gallery);
    println!(
        "  model:   {} (try: scoredd detect --model {} <images>)",
        model.display(),
        model.display()
    );
    Ok(())
}
