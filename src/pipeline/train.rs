//! The training stage: a fresh or resumed model, the training images split
//! into those trained on and those held out for calibration, then steps until
//! the step count, the time budget or a stop request, with periodic
//! checkpoints, loss read-backs and rollback after a divergence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::{Checkpoint, CheckpointKind, PipelineEvents, Progress, Stage, Task};
use super::sources::TrainSource;
use crate::backend::train_ops::Reduce;
use crate::backend::NnBackend;
use crate::calibrate;
use crate::config::{TimeEmbedding, UNetConfig};
use crate::data::{self, Augment, BatchLoader, ImageSpec};
use crate::error::{Error, Result};
use crate::model_file::ModelFile;
use crate::nn::score_model::ScoreModel;
use crate::sde::SdeKind;
use crate::train::{StepReport, TrainConfig, Trainer};

/// What to do when training diverges (a non-finite loss, or several
/// non-finite gradients in a row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnDiverge {
    /// Stop with an explanation (the last checkpoint is kept).
    Stop,
    /// Go back to the last checkpoint and continue with half the learning rate.
    Rollback,
}

/// Divergences rolled back at most; the next one stops training.
const MAX_ROLLBACKS: u64 = 3;

/// Where the model to train comes from.
#[derive(Clone, Debug)]
pub enum ModelStart {
    /// A freshly initialised model of this architecture and SDE.
    New { config: UNetConfig, sde: SdeKind },
    /// A checkpoint written by training: its model, recipe and step count
    /// (the plan's recipe fields are then ignored).
    Resume(Box<ModelFile>),
}

impl ModelStart {
    /// A fresh model from a preset name (tiny, small, ncsnpp256) or a path
    /// to a `.json` model config, with the time embedding the SDE wants.
    pub fn fresh(config: &str, channels: usize, sde: SdeKind) -> Result<Self> {
        let embedding = if sde == SdeKind::Ve {
            TimeEmbedding::Fourier
        } else {
            TimeEmbedding::Sinusoidal
        };
        let config = if config.ends_with(".json") {
            let bytes = std::fs::read(config).map_err(|source| Error::Io {
                path: config.to_string(),
                source,
            })?;
            UNetConfig::from_json(&bytes, config)?
        } else {
            UNetConfig::preset(config, channels, embedding)?
        };
        Ok(ModelStart::New { config, sde })
    }
}

/// Everything the training stage needs besides the data.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    pub start: ModelStart,
    /// Train until this step (counted from 0, so a resumed run does the rest).
    pub steps: u64,
    pub batch: usize,
    pub lr: f32,
    /// Learning-rate warm-up steps; `None`: min(5000, steps/10), or with a
    /// time budget 5 % of the steps the measured rate fits in it.
    pub warmup: Option<u64>,
    pub seed: u64,
    pub reduce: Reduce,
    pub likelihood_weighting: bool,
    pub augment: Augment,
    /// Fraction of the images not trained on, kept for calibration; `None`:
    /// [`calibrate::default_holdout`] of the number of images.
    pub holdout: Option<f64>,
    /// Stop after this many minutes.
    pub minutes: Option<f64>,
    /// Read the loss back every this many steps (and at the last).
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub on_diverge: OnDiverge,
}

impl TrainPlan {
    /// `scoredd train`'s defaults.
    pub fn new(start: ModelStart) -> Self {
        TrainPlan {
            start,
            steps: 1000,
            batch: 8,
            lr: 2e-4,
            warmup: None,
            seed: 0,
            reduce: Reduce::Mean,
            likelihood_weighting: false,
            augment: Augment::none(),
            holdout: None,
            minutes: None,
            log_every: 10,
            checkpoint_every: 500,
            on_diverge: OnDiverge::Rollback,
        }
    }

    fn is_resume(&self) -> bool {
        matches!(self.start, ModelStart::Resume(_))
    }

    fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::Invalid("--steps must be at least 1".into()));
        }
        if self.log_every == 0 || self.checkpoint_every == 0 {
            return Err(Error::Invalid(
                "--log-every and --checkpoint-every must be at least 1".into(),
            ));
        }
        if let Some(h) = self.holdout.filter(|h| !(0.0..0.5).contains(h)) {
            if !self.is_resume() {
                return Err(Error::Invalid(format!(
                    "--holdout must be in [0, 0.5), got {h}"
                )));
            }
        }
        Ok(())
    }
}

/// Why training ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainEnd {
    /// The plan's step count was reached.
    Steps,
    /// The time budget ran out first.
    TimeBudget,
    /// [`PipelineEvents::should_stop`] said so.
    Interrupted,
    /// A resumed model was already at the step count: no step was taken.
    NothingToDo,
}

/// What a training run did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSummary {
    pub end: TrainEnd,
    pub start_step: u64,
    /// The step reached.
    pub step: u64,
    pub seconds: f64,
    /// Exponentially smoothed loss of the read-back steps.
    pub smoothed_loss: Option<f32>,
    /// The loss curve: read-back steps and their losses (skipped steps left out).
    pub curve_steps: Vec<f64>,
    pub curve_losses: Vec<f64>,
}

/// The trained state, handed to the next stage in memory.
pub struct Trained<B: NnBackend> {
    pub trainer: Trainer<B>,
    pub summary: TrainSummary,
    /// The last checkpoint handed out (or, when no step was taken, the
    /// trainer's state): what a model file of this run holds.
    pub file: ModelFile,
    /// The images left out of training, for calibration.
    pub held_out: Vec<Vec<f32>>,
}

impl<B: NnBackend> Trained<B> {
    /// The model detection uses: the EMA weights (on the backend, not
    /// copied back and forth), with the checkpoint's metadata.
    pub fn model(&self) -> Result<ScoreModel<B>> {
        let mut model = self.trainer.ema_model()?;
        model.meta = self.file.meta.clone();
        Ok(model)
    }
}

/// Runs the training stage; see [`super::Pipeline::train`].
pub(super) fn train<B: NnBackend>(
    be: &B,
    ev: &mut dyn PipelineEvents,
    plan: &TrainPlan,
    source: &TrainSource,
) -> Result<Trained<B>> {
    plan.validate()?;
    let mut trainer = start_trainer(be, plan)?;
    let split = load_split(ev, &mut trainer, plan, source)?;
    if trainer.step >= plan.steps {
        ev.on_log(
            Stage::Train,
            &format!(
                "already at step {} ≥ --steps {}: nothing to do",
                trainer.step, plan.steps
            ),
        );
        let summary = TrainSummary {
            end: TrainEnd::NothingToDo,
            start_step: trainer.step,
            step: trainer.step,
            seconds: 0.0,
            smoothed_loss: None,
            curve_steps: Vec::new(),
            curve_losses: Vec::new(),
        };
        return Ok(Trained {
            file: trainer.checkpoint(be)?,
            trainer,
            summary,
            held_out: split.held_out,
        });
    }
    TrainLoop::start(be, ev, plan, trainer, split)?.run()
}

/// A fresh trainer from the plan's recipe, or the resumed one.
fn start_trainer<B: NnBackend>(be: &B, plan: &TrainPlan) -> Result<Trainer<B>> {
    let (config, sde) = match &plan.start {
        ModelStart::Resume(file) => return Trainer::resume(be, file),
        ModelStart::New { config, sde } => (config, sde),
    };
    let sde = sde.config(config.image_size);
    let model = ScoreModel::new(be, config.clone(), sde, plan.seed)?;
    let mut tc = TrainConfig::recipe(model.sde.name(), plan.batch, plan.seed);
    tc.lr = plan.lr;
    tc.warmup = match (plan.warmup, plan.minutes) {
        (Some(w), _) => w,
        // Sized from the measured step rate after a few steps.
        (None, Some(_)) => BudgetWarmup::PROVISIONAL,
        (None, None) => (plan.steps / 10).min(5000),
    };
    tc.reduce = plan.reduce;
    tc.likelihood_weighting = plan.likelihood_weighting;
    // Without a fraction given, it is settled once the data is loaded.
    tc.holdout = plan.holdout.unwrap_or(0.0);
    Trainer::new(be, model, tc)
}

/// The images trained on and those held out.
struct Split {
    train: Vec<Vec<f32>>,
    held_out: Vec<Vec<f32>>,
    spec: ImageSpec,
}

/// Loads the images at the model's size, settles the hold-out fraction if
/// the plan left it to the data, and splits them, saying what was found.
fn load_split<B: NnBackend>(
    ev: &mut dyn PipelineEvents,
    trainer: &mut Trainer<B>,
    plan: &TrainPlan,
    source: &TrainSource,
) -> Result<Split> {
    let mc = &trainer.model.net.config;
    let spec = ImageSpec {
        size: mc.image_size,
        channels: mc.channels,
    };
    let (all, what) = source.load(spec)?;
    for s in &all.skipped {
        ev.on_log(Stage::Train, &format!("skipped {}: {}", s.path, s.reason));
    }
    if plan.holdout.is_none() && !plan.is_resume() {
        trainer.config.holdout = calibrate::default_holdout(all.images.len());
    }
    let (train_idx, held) = data::holdout_split(all.images.len(), trainer.config.holdout);
    if let Some(note) = few_held_out_note(held.len()) {
        ev.on_log(Stage::Train, &note);
    }
    if !held.is_empty() {
        ev.on_log(
            Stage::Train,
            &format!(
                "holding out {} of {} images for `scoredd calibrate` (--holdout {})",
                held.len(),
                all.images.len(),
                trainer.config.holdout
            ),
        );
    }
    let split = Split {
        train: train_idx.iter().map(|&i| all.images[i].clone()).collect(),
        held_out: held.iter().map(|&i| all.images[i].clone()).collect(),
        spec,
    };
    ev.on_log(Stage::Train, &describe_run(trainer, &what, &split));
    Ok(split)
}

/// One line on the data and the model.
fn describe_run<B: NnBackend>(trainer: &Trainer<B>, what: &str, split: &Split) -> String {
    let m = &trainer.model;
    let params: usize = (0..m.params.len())
        .filter(|&i| m.net.is_trainable(i))
        .map(|i| m.params.shapes[i].iter().product::<usize>())
        .sum();
    format!(
        "data: {what}: {} images at {}×{}, {} channel(s); model: {params} parameters, {} SDE; batch {}",
        split.train.len(),
        split.spec.size,
        split.spec.size,
        split.spec.channels,
        m.sde.name(),
        trainer.config.batch
    )
}

/// Says when the held-out images cannot give `calibrate --auto` both its
/// settings choice and a threshold with a guaranteed 1 % false-alarm rate.
fn few_held_out_note(held: usize) -> Option<String> {
    let wanted = calibrate::holdout_wanted(calibrate::QUANTILE, calibrate::SELECT_IMAGES);
    if held < 4 || held >= wanted {
        return None;
    }
    let select = calibrate::select_count(held, calibrate::QUANTILE, calibrate::SELECT_IMAGES_MAX);
    let (select, threshold) = calibrate::split_held_out(held, select);
    Some(format!(
        "note: {held} images held out; `calibrate --auto` will choose settings on {} and set the threshold on {}, which guarantees at most {:.2} % false alarms (1 % needs {wanted} held out: more good images or a larger --holdout)",
        select.len(),
        threshold.len(),
        100.0 * calibrate::false_alarm_bound(threshold.len(), calibrate::QUANTILE)
    ))
}

/// A training run in progress: the trainer and everything the step loop
/// updates (data loader, last checkpoint, loss curve, warm-up plan).
struct TrainLoop<'a, B: NnBackend> {
    be: &'a B,
    ev: &'a mut dyn PipelineEvents,
    plan: &'a TrainPlan,
    trainer: Trainer<B>,
    images: Arc<Vec<Vec<f32>>>,
    held_out: Vec<Vec<f32>>,
    spec: ImageSpec,
    loader: BatchLoader,
    /// The last checkpoint: where a rollback goes back to.
    last_ckpt: ModelFile,
    t0: Instant,
    start_step: u64,
    end_step: u64,
    smoothed: Option<f32>,
    /// The status line to send with the next progress event.
    message: Option<String>,
    curve_steps: Vec<f64>,
    curve_losses: Vec<f64>,
    budget_warmup: Option<BudgetWarmup>,
}

impl<'a, B: NnBackend> TrainLoop<'a, B> {
    /// The data loader and the first rollback point for a run from
    /// `trainer.step` to the plan's step count.
    fn start(
        be: &'a B,
        ev: &'a mut dyn PipelineEvents,
        plan: &'a TrainPlan,
        trainer: Trainer<B>,
        split: Split,
    ) -> Result<Self> {
        let images = Arc::new(split.train);
        let start_step = trainer.step;
        let loader = new_loader(&images, split.spec, &trainer, plan.augment)?;
        let last_ckpt = trainer.checkpoint(be)?;
        let budget_warmup = match (plan.minutes, plan.warmup, plan.is_resume()) {
            (Some(m), None, false) => Some(BudgetWarmup::new(m * 60.0)),
            _ => None,
        };
        Ok(TrainLoop {
            be,
            ev,
            plan,
            trainer,
            images,
            held_out: split.held_out,
            spec: split.spec,
            loader,
            last_ckpt,
            t0: Instant::now(),
            start_step,
            end_step: plan.steps.max(start_step),
            smoothed: None,
            message: None,
            curve_steps: Vec::new(),
            curve_losses: Vec::new(),
            budget_warmup,
        })
    }

    /// Steps until the step count, the time budget or a stop request, then
    /// hands out the final checkpoint.
    fn run(mut self) -> Result<Trained<B>> {
        let deadline = self
            .plan
            .minutes
            .map(|m| self.t0 + Duration::from_secs_f64(m.max(0.0) * 60.0));
        while self.trainer.step < self.end_step {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let line = format!(
                    "time budget of {} min reached at step {}",
                    self.plan.minutes.unwrap_or(0.0),
                    self.trainer.step
                );
                self.ev.on_log(Stage::Train, &line);
                return self.finish(TrainEnd::TimeBudget);
            }
            if self.ev.should_stop() {
                return self.finish(TrainEnd::Interrupted);
            }
            if !self.step()? {
                continue; // rolled back
            }
            self.progress();
            self.settle_budget_warmup();
            if self.trainer.step.is_multiple_of(self.plan.checkpoint_every) {
                self.checkpoint(CheckpointKind::Periodic)?;
            }
        }
        self.finish(TrainEnd::Steps)
    }

    /// One training step, its report recorded when read back. False when
    /// the step diverged and the run went back to the last checkpoint.
    fn step(&mut self) -> Result<bool> {
        let batch = self.loader.next_batch()?;
        let x = self.be.upload(&batch.data, &batch.shape)?;
        let read = (self.trainer.step + 1).is_multiple_of(self.plan.log_every)
            || self.trainer.step + 1 == self.end_step;
        match self.trainer.train_step(self.be, &x, read) {
            Ok(Some(r)) => self.record(&r)?,
            Ok(None) => {}
            Err(Error::Diverged { step, detail })
                if self.plan.on_diverge == OnDiverge::Rollback
                    && self.trainer.config.rollbacks < MAX_ROLLBACKS =>
            {
                self.roll_back(step, &detail)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    fn progress(&mut self) {
        let message = self.message.take();
        self.ev.on_progress(&Progress {
            task: Task::Training,
            done: self.trainer.step.saturating_sub(self.start_step),
            total: self.end_step - self.start_step,
            message: message.as_deref(),
        });
    }

    /// A read-back step: status line, loss event, loss curve point.
    fn record(&mut self, r: &StepReport) -> Result<()> {
        let s = self.smoothed.map_or(r.loss, |s| 0.9 * s + 0.1 * r.loss);
        self.smoothed = Some(s);
        let secs = self.t0.elapsed().as_secs_f64();
        let done = (self.trainer.step - self.start_step) as f64;
        self.message = Some(format!(
            "loss {s:.4} | {:.1} img/s",
            done * self.trainer.config.batch as f64 / secs
        ));
        self.ev.on_train_step(r, secs)?;
        if r.skipped {
            self.ev.on_log(
                Stage::Train,
                &format!(
                    "step {}: non-finite gradients, step skipped (weights unchanged)",
                    r.step
                ),
            );
        } else {
            self.curve_steps.push(r.step as f64);
            self.curve_losses.push(r.loss as f64);
        }
        Ok(())
    }

    /// After a divergence at `step`: back to the last checkpoint with half the
    /// learning rate and a reseeded data loader.
    fn roll_back(&mut self, step: u64, detail: &str) -> Result<()> {
        let back = self.trainer.rolled_back(self.be, &self.last_ckpt)?;
        let line = format!(
            "step {step}: {detail}; back to step {} with learning rate {} (rollback {})",
            back.step, back.config.lr, back.config.rollbacks
        );
        self.ev.on_log(Stage::Train, &line);
        self.trainer = back;
        self.loader = new_loader(&self.images, self.spec, &self.trainer, self.plan.augment)?;
        // The rolled-back state is the new last checkpoint: a kill now
        // resumes with the halved rate and the new loader seed.
        self.checkpoint(CheckpointKind::Rollback)
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
            self.ev.on_log(Stage::Train, &format!(
                "time budget: about {total} steps at the measured rate; learning-rate warm-up over {w} steps"
            ));
            self.budget_warmup = None;
        }
    }

    /// Hands out a checkpoint and keeps it as the rollback point.
    fn checkpoint(&mut self, kind: CheckpointKind) -> Result<()> {
        let file = self.trainer.checkpoint(self.be)?;
        self.ev.on_checkpoint(&Checkpoint {
            kind,
            step: self.trainer.step,
            file: &file,
        })?;
        self.last_ckpt = file;
        Ok(())
    }

    /// The end of the run: the last checkpoint and the summary.
    fn finish(mut self, end: TrainEnd) -> Result<Trained<B>> {
        let kind = if end == TrainEnd::Interrupted {
            CheckpointKind::Interrupted
        } else {
            CheckpointKind::Final
        };
        self.checkpoint(kind)?;
        let summary = TrainSummary {
            end,
            start_step: self.start_step,
            step: self.trainer.step,
            seconds: self.t0.elapsed().as_secs_f64(),
            smoothed_loss: self.smoothed,
            curve_steps: self.curve_steps,
            curve_losses: self.curve_losses,
        };
        Ok(Trained {
            trainer: self.trainer,
            summary,
            file: self.last_ckpt,
            held_out: self.held_out,
        })
    }
}

/// The batches from the trainer's step on, with its loader seed.
fn new_loader<B: NnBackend>(
    images: &Arc<Vec<Vec<f32>>>,
    spec: ImageSpec,
    trainer: &Trainer<B>,
    augment: Augment,
) -> Result<BatchLoader> {
    BatchLoader::new(
        images.clone(),
        spec,
        trainer.config.batch,
        augment,
        trainer.config.loader_seed(),
        trainer.step,
        BatchLoader::DEFAULT_PREFETCH,
    )
}

/// Warm-up for a run given a time budget: the first steps run with a
/// provisional warm-up while the step rate is measured, then the warm-up is
/// set to 5 % of the steps the budget allows, so it ends early in the run
/// whatever the machine (the checkpoint stores the choice).
struct BudgetWarmup {
    budget_s: f64,
    first_step_done: Option<Duration>,
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
    fn observe(&mut self, done: u64, max_steps: u64, elapsed: Duration) -> Option<(u64, u64)> {
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
