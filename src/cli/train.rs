//! `scoredd train`: learn a score model from a folder of good images.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use scoredd::backend::train_ops::{Reduce, TrainOps};
use scoredd::backend::{open_backend, BackendChoice, NnBackend};
use scoredd::data::{self, Augment, BatchLoader, ImageSpec, Loaded};
use scoredd::model_file::ModelFile;
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{TimeEmbedding, UNetConfig};
use scoredd::sde::SdeKind;
use scoredd::train::{StepReport, TrainConfig, Trainer};
use scoredd::{calibrate, plot, with_backend, Error};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnDiverge {
    /// Stop with an explanation (the last checkpoint is kept).
    Stop,
    /// Go back to the last checkpoint and continue with half the learning rate.
    Rollback,
}

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
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
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
}

pub fn run(choice: BackendChoice, args: TrainArgs) -> Result<(), Error> {
    let (backend, why) = open_backend(choice)?;
    eprintln!("{why}");
    with_backend!(&backend, |b| train_on(b, &args))
}

fn model_config(args: &TrainArgs, embedding: TimeEmbedding) -> Result<UNetConfig, Error> {
    if args.config.ends_with(".json") {
        let bytes = std::fs::read(&args.config).map_err(|source| Error::Io {
            path: args.config.clone(),
            source,
        })?;
        return UNetConfig::from_json(&bytes, &args.config);
    }
    UNetConfig::preset(&args.config, args.channels, embedding)
}

/// Finds the training images the way the `--data` help describes.
fn load_data(args: &TrainArgs, spec: ImageSpec) -> Result<(Loaded, String), Error> {
    load_training_images(&args.data, args.category.as_deref(), args.digit, spec)
}

/// The images `scoredd train --data D [--category C] [--digit N]` reads, all
/// of them (before the hold-out split), with a description.
pub fn load_training_images(
    data: &Path,
    category: Option<&str>,
    digit: Option<u8>,
    spec: ImageSpec,
) -> Result<(Loaded, String), Error> {
    let root = match category {
        Some(c) => data.join(c),
        None => data.to_path_buf(),
    };
    if root.join("train").join("good").is_dir() {
        return Ok((
            data::mvtec_train(&root, spec)?,
            format!("{} (MVTec layout, train/good)", root.display()),
        ));
    }
    let is_mnist = ["t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"]
        .iter()
        .any(|f| root.join(f).exists());
    if is_mnist {
        let digit = digit.ok_or_else(|| {
            Error::Invalid(format!(
                "{} holds MNIST: pass --digit 0-9 for one-class training",
                root.display()
            ))
        })?;
        return Ok((
            data::mnist(&root, digit, spec)?,
            format!("{} (MNIST digit {digit})", root.display()),
        ));
    }
    if category.is_none() && !root.join("train").exists() {
        let subdirs = std::fs::read_dir(&root)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().join("train").join("good").is_dir())
                    .count()
            })
            .unwrap_or(0);
        if subdirs > 0 {
            return Err(Error::Invalid(format!(
                "{} holds {subdirs} MVTec categories: pick one with --category",
                root.display()
            )));
        }
    }
    Ok((
        data::folder(&root, spec)?,
        format!("{} (folder of good images)", root.display()),
    ))
}

fn train_on<B: NnBackend + TrainOps>(be: &B, args: &TrainArgs) -> Result<(), Error> {
    check_step_counts(args)?;
    let mut trainer = match &args.resume {
        Some(path) => {
            let t = Trainer::resume(be, &ModelFile::load(path)?)?;
            eprintln!("resuming {} at step {}", path.display(), t.step);
            t
        }
        None => new_trainer(be, args)?,
    };
    let (images, spec) = load_training_split(&mut trainer, args)?;
    let start_step = trainer.step;
    let end_step = args.steps.max(start_step);
    if start_step >= end_step {
        eprintln!(
            "already at step {start_step} ≥ --steps {}: nothing to do",
            args.steps
        );
        return Ok(());
    }
    Run::start(be, args, trainer, Arc::new(images), spec)?.run()
}

fn check_step_counts(args: &TrainArgs) -> Result<(), Error> {
    if args.steps == 0 {
        return Err(Error::Invalid("--steps must be at least 1".into()));
    }
    if args.log_every == 0 || args.checkpoint_every == 0 {
        return Err(Error::Invalid(
            "--log-every and --checkpoint-every must be at least 1".into(),
        ));
    }
    Ok(())
}

/// A fresh model and training recipe from the command line.
fn new_trainer<B: NnBackend + TrainOps>(be: &B, args: &TrainArgs) -> Result<Trainer<B>, Error> {
    let embedding = if args.sde == SdeKind::Ve {
        TimeEmbedding::Fourier
    } else {
        TimeEmbedding::Sinusoidal
    };
    let cfg = model_config(args, embedding)?;
    let sde = args.sde.config(cfg.image_size);
    let model = ScoreModel::new(be, cfg, sde.clone(), args.seed)?;
    let mut tc = TrainConfig::recipe(model.sde.name(), args.batch, args.seed);
    tc.lr = args.lr;
    tc.warmup = match (args.warmup, args.minutes) {
        (Some(w), _) => w,
        // Sized from the measured step rate after a few steps.
        (None, Some(_)) => BudgetWarmup::PROVISIONAL,
        (None, None) => (args.steps / 10).min(5000),
    };
    tc.reduce = args.reduce;
    tc.likelihood_weighting = args.likelihood_weighting;
    if let Some(h) = args.holdout.filter(|h| !(0.0..0.5).contains(h)) {
        return Err(Error::Invalid(format!(
            "--holdout must be in [0, 0.5), got {h}"
        )));
    }
    // Without --holdout the fraction is settled once the data is loaded.
    tc.holdout = args.holdout.unwrap_or(0.0);
    Trainer::new(be, model, tc)
}

/// Loads the images at the model's size, settles the hold-out fraction if it
/// was left to the data, and returns the images trained on (the hold-out
/// split left out), saying what was found.
fn load_training_split<B: NnBackend + TrainOps>(
    trainer: &mut Trainer<B>,
    args: &TrainArgs,
) -> Result<(Vec<Vec<f32>>, ImageSpec), Error> {
    let mc = trainer.model.net.config.clone();
    let spec = ImageSpec {
        size: mc.image_size,
        channels: mc.channels,
    };
    let (all, what) = load_data(args, spec)?;
    for s in &all.skipped {
        eprintln!("skipped {}: {}", s.path, s.reason);
    }
    if args.holdout.is_none() && args.resume.is_none() {
        trainer.config.holdout = calibrate::default_holdout(all.images.len());
    }
    let (train_idx, held) = data::holdout_split(all.images.len(), trainer.config.holdout);
    warn_if_few_held_out(held.len());
    let loaded = data::select(&all, &train_idx);
    if !held.is_empty() {
        eprintln!(
            "holding out {} of {} images for `scoredd calibrate` (--holdout {})",
            held.len(),
            all.images.len(),
            trainer.config.holdout
        );
    }
    let params: usize = (0..trainer.model.params.len())
        .filter(|&i| trainer.model.net.is_trainable(i))
        .map(|i| trainer.model.params.shapes[i].iter().product::<usize>())
        .sum();
    eprintln!(
        "data: {what}: {} images at {}×{}, {} channel(s); model: {params} parameters, {} SDE; batch {}",
        loaded.images.len(),
        spec.size,
        spec.size,
        spec.channels,
        trainer.model.sde.name(),
        trainer.config.batch
    );
    Ok((loaded.images, spec))
}

/// A training run in progress: the trainer and everything the step loop
/// updates (data loader, loss log, progress bar, last checkpoint, curve).
struct Run<'a, B: NnBackend + TrainOps> {
    be: &'a B,
    args: &'a TrainArgs,
    trainer: Trainer<B>,
    images: Arc<Vec<Vec<f32>>>,
    spec: ImageSpec,
    augment: Augment,
    loader: BatchLoader,
    stop: Arc<AtomicBool>,
    log: std::fs::File,
    log_path: PathBuf,
    bar: ProgressBar,
    /// The last checkpoint written, as bytes: where a rollback goes back to.
    last_ckpt: Vec<u8>,
    t0: Instant,
    start_step: u64,
    end_step: u64,
    smoothed: Option<f32>,
    /// The loss curve: steps and losses read back.
    xs: Vec<f64>,
    ys: Vec<f64>,
    budget_warmup: Option<BudgetWarmup>,
}

impl<'a, B: NnBackend + TrainOps> Run<'a, B> {
    /// Data loader, Ctrl-C handler, loss log and progress bar for a run from
    /// `trainer.step` to `--steps`.
    fn start(
        be: &'a B,
        args: &'a TrainArgs,
        trainer: Trainer<B>,
        images: Arc<Vec<Vec<f32>>>,
        spec: ImageSpec,
    ) -> Result<Self, Error> {
        let augment = Augment {
            hflip: args.hflip,
            vflip: args.vflip,
            crop: args.crop,
        };
        let start_step = trainer.step;
        let end_step = args.steps.max(start_step);
        let loader = BatchLoader::new(
            images.clone(),
            spec,
            trainer.config.batch,
            augment,
            trainer.config.loader_seed(),
            start_step,
            BatchLoader::DEFAULT_PREFETCH,
        )?;

        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A second Ctrl-C while saving is ignored; the handler only sets the flag.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));

        let log_path = args.out.with_extension("log.csv");
        let log = open_log(&log_path, args.resume.is_none() || !log_path.exists())?;
        let bar = ProgressBar::new(end_step - start_step);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {msg} ({eta} left)",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let last_ckpt = trainer.checkpoint(be)?.to_bytes()?;
        let budget_warmup = match (args.minutes, args.warmup, &args.resume) {
            (Some(m), None, None) => Some(BudgetWarmup::new(m * 60.0)),
            _ => None,
        };
        Ok(Run {
            be,
            args,
            trainer,
            images,
            spec,
            augment,
            loader,
            stop,
            log,
            log_path,
            bar,
            last_ckpt,
            t0: Instant::now(),
            start_step,
            end_step,
            smoothed: None,
            xs: Vec::new(),
            ys: Vec::new(),
            budget_warmup,
        })
    }

    /// Steps until `--steps`, the time budget or Ctrl-C, then saves.
    fn run(mut self) -> Result<(), Error> {
        let deadline = self
            .args
            .minutes
            .map(|m| self.t0 + std::time::Duration::from_secs_f64(m.max(0.0) * 60.0));
        while self.trainer.step < self.end_step {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                say(
                    &self.bar,
                    format!(
                        "time budget of {} min reached at step {}",
                        self.args.minutes.unwrap_or(0.0),
                        self.trainer.step
                    ),
                );
                break;
            }
            if self.stop.load(Ordering::SeqCst) {
                return self.interrupted();
            }
            if !self.step()? {
                continue; // rolled back
            }
            self.bar.inc(1);
            self.settle_budget_warmup();
            if self.trainer.step.is_multiple_of(self.args.checkpoint_every) {
                self.checkpoint()?;
            }
        }
        self.finish()
    }

    /// One training step, its report logged when read back. False when the
    /// step diverged and the run went back to the last checkpoint.
    fn step(&mut self) -> Result<bool, Error> {
        let batch = self.loader.next_batch()?;
        let x = self.be.upload(&batch.data, &batch.shape)?;
        let read = (self.trainer.step + 1).is_multiple_of(self.args.log_every)
            || self.trainer.step + 1 == self.end_step;
        match self.trainer.train_step(self.be, &x, read) {
            Ok(Some(r)) => self.record(&r)?,
            Ok(None) => {}
            Err(Error::Diverged { step, detail })
                if self.args.on_diverge == OnDiverge::Rollback
                    && self.trainer.config.rollbacks < 3 =>
            {
                self.roll_back(step, &detail)?;
                return Ok(false);
            }
            Err(e) => {
                self.bar.abandon();
                return Err(e);
            }
        }
        Ok(true)
    }

    /// A read-back step: progress message, log line, loss curve point.
    fn record(&mut self, r: &StepReport) -> Result<(), Error> {
        let s = self.smoothed.map_or(r.loss, |s| 0.9 * s + 0.1 * r.loss);
        self.smoothed = Some(s);
        let secs = self.t0.elapsed().as_secs_f64();
        let done = (self.trainer.step - self.start_step) as f64;
        self.bar.set_message(format!(
            "loss {s:.4} | {:.1} img/s",
            done * self.trainer.config.batch as f64 / secs
        ));
        writeln!(
            self.log,
            "{},{},{},{},{:.3}",
            r.step, r.loss, r.grad_norm, r.lr, secs
        )
        .map_err(|source| Error::Io {
            path: self.log_path.display().to_string(),
            source,
        })?;
        if r.skipped {
            say(
                &self.bar,
                format!(
                    "step {}: non-finite gradients, step skipped (weights unchanged)",
                    r.step
                ),
            );
        } else {
            self.xs.push(r.step as f64);
            self.ys.push(r.loss as f64);
        }
        Ok(())
    }

    /// After a divergence at `step`: back to the last checkpoint with half the
    /// learning rate and a reseeded data loader.
    fn roll_back(&mut self, step: u64, detail: &str) -> Result<(), Error> {
        let back = self.trainer.rolled_back(
            self.be,
            &ModelFile::from_bytes(&self.last_ckpt, "last checkpoint")?,
        )?;
        say(
            &self.bar,
            format!(
                "step {step}: {detail}; back to step {} with learning rate {} (rollback {})",
                back.step, back.config.lr, back.config.rollbacks
            ),
        );
        self.trainer = back;
        self.loader = BatchLoader::new(
            self.images.clone(),
            self.spec,
            self.trainer.config.batch,
            self.augment,
            self.trainer.config.loader_seed(),
            self.trainer.step,
            BatchLoader::DEFAULT_PREFETCH,
        )?;
        // The rolled-back state is the new last checkpoint: a kill now
        // resumes with the halved rate and the new loader seed.
        self.checkpoint()
    }

    /// With a time budget: sets the warm-up once the step rate is measured.
    fn settle_budget_warmup(&mut self) {
        let Some(plan) = self.budget_warmup.as_mut() else {
            return;
        };
        let done = self.trainer.step - self.start_step;
        if let Some((w, total)) =
            plan.observe(done, self.end_step - self.start_step, self.t0.elapsed())
        {
            self.trainer.config.warmup = w;
            say(&self.bar, format!(
                "time budget: about {total} steps at the measured rate; learning-rate warm-up over {w} steps"
            ));
            self.budget_warmup = None;
        }
    }

    /// Saves a checkpoint to `--out` and keeps it as the rollback point.
    fn checkpoint(&mut self) -> Result<(), Error> {
        let file = self.trainer.checkpoint(self.be)?;
        file.save(&self.args.out)?;
        self.last_ckpt = file.to_bytes()?;
        Ok(())
    }

    /// Ctrl-C: saves the checkpoint and the loss curve, says how to resume.
    fn interrupted(self) -> Result<(), Error> {
        let out = &self.args.out;
        self.bar.abandon_with_message("interrupted");
        save(self.be, &self.trainer, out)?;
        plot::save_png(
            &plot::loss_curve(&self.xs, &self.ys, 800, 450)?,
            &out.with_extension("loss.png"),
        )?;
        eprintln!(
            "interrupted at step {}: checkpoint saved to {} (continue with --resume {})",
            self.trainer.step,
            out.display(),
            out.display()
        );
        Ok(())
    }

    /// The end of the run: the model, the loss curve and a summary.
    fn finish(self) -> Result<(), Error> {
        let out = &self.args.out;
        self.bar
            .finish_with_message(format!("loss {:.4}", self.smoothed.unwrap_or(f32::NAN)));
        save(self.be, &self.trainer, out)?;
        let plot_path = out.with_extension("loss.png");
        plot::save_png(&plot::loss_curve(&self.xs, &self.ys, 800, 450)?, &plot_path)?;
        println!(
            "trained {} steps in {:.0} s; model: {}; loss log: {}; loss curve: {}",
            self.trainer.step - self.start_step,
            self.t0.elapsed().as_secs_f64(),
            out.display(),
            self.log_path.display(),
            plot_path.display()
        );
        println!(
            "see what it learned: scoredd sample --model {}",
            out.display()
        );
        Ok(())
    }
}

/// The loss log (CSV), appended to; with a header when `new`.
fn open_log(path: &Path, new: bool) -> Result<std::fs::File, Error> {
    let io_err = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err)?;
    if new {
        writeln!(log, "step,loss,grad_norm,lr,seconds").map_err(io_err)?;
    }
    Ok(log)
}

fn save<B: NnBackend + TrainOps>(be: &B, t: &Trainer<B>, path: &Path) -> Result<(), Error> {
    t.checkpoint(be)?.save(path)
}

/// Says when the held-out images cannot give `calibrate --auto` both its
/// settings choice and a threshold with a guaranteed 1 % false-alarm rate.
fn warn_if_few_held_out(held: usize) {
    let wanted = calibrate::holdout_wanted(calibrate::QUANTILE, calibrate::SELECT_IMAGES);
    if held < 4 || held >= wanted {
        return;
    }
    let (select, threshold) = calibrate::split_held_out(held, calibrate::SELECT_IMAGES);
    eprintln!(
        "note: {held} images held out; `calibrate --auto` will choose settings on {} and set the threshold on {}, which guarantees at most {:.2} % false alarms (1 % needs {wanted} held out: more good images or a larger --holdout)",
        select.len(),
        threshold.len(),
        100.0 * calibrate::false_alarm_bound(threshold.len(), calibrate::QUANTILE)
    );
}

/// Warm-up for a run given a time budget (`--minutes`): the first steps run
/// with a provisional warm-up while the step rate is measured, then the
/// warm-up is set to 5 % of the steps the budget allows, so it ends early in
/// the run whatever the machine (the checkpoint stores the choice).
struct BudgetWarmup {
    budget_s: f64,
    first_step_done: Option<std::time::Duration>,
}

impl BudgetWarmup {
    /// Long enough that the measuring steps run at a small rate.
    const PROVISIONAL: u64 = 1000;
    /// Steps timed (after the first, which pays one-off costs).
    const MEASURED: u64 = 3;

    fn new(budget_s: f64) -> Self {
        BudgetWarmup {
            budget_s,
            first_step_done: None,
        }
    }

    /// Called after each step with the steps done, the most allowed and the
    /// time since the start; returns (warm-up, expected steps) once decided.
    fn observe(
        &mut self,
        done: u64,
        max_steps: u64,
        elapsed: std::time::Duration,
    ) -> Option<(u64, u64)> {
        if done == 1 {
            self.first_step_done = Some(elapsed);
        }
        let first = self.first_step_done?;
        if done < 1 + Self::MEASURED {
            return None;
        }
        let rate = Self::MEASURED as f64 / (elapsed - first).as_secs_f64().max(1e-6);
        let left = (self.budget_s - elapsed.as_secs_f64()).max(0.0);
        let total = (done + (rate * left) as u64).min(max_steps);
        Some(((total / 20).clamp(done + 1, 5000), total))
    }
}

/// A message beside the progress bar, or on stderr when the bar is hidden
/// (output not a terminal), so logs of unattended runs keep it.
fn say(bar: &ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}
