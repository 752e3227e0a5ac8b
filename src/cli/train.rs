//! `scoredd train`: learn a score model from a folder of good images.

use std::path::{Path, PathBuf};

use clap::Args;
use scoredd::backend::train_ops::Reduce;
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::data::Augment;
use scoredd::model_file::ModelFile;
use scoredd::pipeline::{
    ModelStart, OnDiverge, Pipeline, TrainEnd, TrainPlan, TrainSource, TrainSummary,
};
use scoredd::sde::SdeKind;
use scoredd::{plot, with_backend, Error};

use super::console::Console;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training images: an MVTec-style category folder (holding train/good), a root
    /// of categories with --category, a plain folder of good images, or a folder
    /// with MNIST's t10k idx files (with --digit).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub category: Option<String>,
    /// MNIST digit to train on (one-class).
    #[arg(long)]
    pub digit: Option<u8>,
    /// tiny | small | ncsnpp256 | a .json model config
    #[arg(long, default_value = "small")]
    pub config: String,
    /// Image channels: 1 (grayscale) or 3 (RGB).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    #[arg(long, value_enum, default_value_t = SdeKind::Ve)]
    pub sde: SdeKind,
    /// Training steps (default: 1000, or with --minutes as many as fit).
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f32,
    /// Learning-rate warm-up steps (default: min(5000, steps/10); with
    /// --minutes, 5 % of the steps the measured step rate fits in the budget).
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = Reduce::Mean)]
    pub reduce: Reduce,
    #[arg(long)]
    pub likelihood_weighting: bool,
    /// Random horizontal / vertical flips and random crops (max fraction trimmed).
    #[arg(long)]
    pub hflip: bool,
    #[arg(long)]
    pub vflip: bool,
    #[arg(long, default_value_t = 0.0)]
    pub crop: f32,
    /// Fraction of the images NOT trained on, kept for `scoredd calibrate`
    /// (every k-th image in file-name order; 0 trains on all). Default: enough
    /// for `calibrate --auto` (32 to choose settings + 99 for a 1 % false-alarm
    /// threshold), within 10–25 % of the images.
    #[arg(long)]
    pub holdout: Option<f64>,
    /// Stop after this many minutes (the model is saved as usual).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Output model file (also the checkpoint).
    #[arg(long, default_value = "model.safetensors")]
    pub out: PathBuf,
    /// Continue from a checkpoint written by `scoredd train`.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Read the loss back every this many steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    #[arg(long, value_enum, default_value_t = OnDiverge::Rollback)]
    pub on_diverge: OnDiverge,
    /// Also print, on the GPU backend, the kernel variant the autotuner
    /// picked per tuned kernel family (one line each).
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(choice: BackendChoice, args: TrainArgs) -> Result<(), Error> {
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    with_backend!(&backend, |b| train_on(b, &args))?;
    if args.verbose {
        super::console::print_tuner_choices(&backend);
    }
    Ok(())
}

impl TrainArgs {
    /// The training stage's plan from the flags (loading the checkpoint to
    /// resume from, if any).
    fn plan(&self) -> Result<TrainPlan, Error> {
        let start = match &self.resume {
            Some(path) => {
                let file = ModelFile::load(path)?;
                eprintln!("resuming {} at step {}", path.display(), file.meta.step);
                ModelStart::Resume(Box::new(file))
            }
            None => ModelStart::fresh(&self.config, self.channels, self.sde)?,
        };
        Ok(TrainPlan {
            start,
            // `--minutes` alone is a time budget, not capped at the default.
            steps: self.steps.unwrap_or(if self.minutes.is_some() {
                u64::MAX / 4
            } else {
                1000
            }),
            batch: self.batch,
            lr: self.lr,
            warmup: self.warmup,
            seed: self.seed,
            reduce: self.reduce,
            likelihood_weighting: self.likelihood_weighting,
            augment: Augment {
                hflip: self.hflip,
                vflip: self.vflip,
                crop: self.crop,
            },
            holdout: self.holdout,
            minutes: self.minutes,
            log_every: self.log_every,
            checkpoint_every: self.checkpoint_every,
            on_diverge: self.on_diverge,
        })
    }

    fn source(&self) -> TrainSource {
        TrainSource {
            data: self.data.clone(),
            category: self.category.clone(),
            digit: self.digit,
            mnist_train_half: false,
        }
    }
}

fn train_on<B: NnBackend>(be: &B, args: &TrainArgs) -> Result<(), Error> {
    let plan = args.plan()?;
    let mut console = training_console(&args.out, args.resume.is_none());
    let trained = Pipeline::new(be, &mut console).train(&plan, &args.source())?;
    report(&trained.summary, &args.out)
}

/// The terminal and files of a training run writing `out`: checkpoints to
/// `out`, the loss log to `<out>.log.csv` (appended to when resuming), and
/// Ctrl-C as a clean stop.
pub fn training_console(out: &Path, fresh: bool) -> Console {
    let log = loss_log_path(out);
    let new = fresh || !log.exists();
    Console::new()
        .saving_to(out)
        .logging_loss_to(&log, new)
        .stopping_on_ctrl_c()
}

fn loss_log_path(out: &Path) -> PathBuf {
    out.with_extension("log.csv")
}

/// The end of a run: the loss curve next to the model, and a summary (or
/// how to resume after an interruption).
pub fn report(s: &TrainSummary, out: &Path) -> Result<(), Error> {
    if s.end == TrainEnd::NothingToDo {
        return Ok(());
    }
    let plot_path = out.with_extension("loss.png");
    plot::save_png(
        &plot::loss_curve(&s.curve_steps, &s.curve_losses, 800, 450)?,
        &plot_path,
    )?;
    if s.end == TrainEnd::Interrupted {
        eprintln!(
            "interrupted at step {}: checkpoint saved to {} (continue with --resume {})",
            s.step,
            out.display(),
            out.display()
        );
        return Ok(());
    }
    println!(
        "trained {} steps in {:.0} s (loss {:.4}); model: {}; loss log: {}; loss curve: {}",
        s.step - s.start_step,
        s.seconds,
        s.smoothed_loss.unwrap_or(f32::NAN),
        out.display(),
        loss_log_path(out).display(),
        plot_path.display()
    );
    println!(
        "see what it learned: scoredd sample --model {}",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TrainArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn steps_of(flags: &[&str]) -> u64 {
        let args = ["train", "--data", "x"].iter().chain(flags);
        let cli = Cli::try_parse_from(args).expect("flags parse");
        cli.train.plan().expect("a fresh plan").steps
    }

    #[test]
    fn minutes_alone_are_a_time_budget_not_capped_at_the_default_steps() {
        assert_eq!(steps_of(&[]), 1000);
        assert!(steps_of(&["--minutes", "60"]) > 1_000_000_000);
        assert_eq!(steps_of(&["--minutes", "60", "--steps", "50"]), 50);
        assert_eq!(steps_of(&["--steps", "7"]), 7);
    }
}
