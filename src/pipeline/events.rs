//! What a running pipeline tells its caller: progress, loss read-backs,
//! checkpoints worth keeping, and lines for the user. The library decides
//! nothing about presentation or storage; the CLI draws progress bars and
//! writes files, a test records the events, a browser could post messages.

use crate::error::Result;
use crate::model_file::ModelFile;
use crate::train::StepReport;

/// The pipeline's stages, in the order [`super::Pipeline::run`] runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    Train,
    Calibrate,
    Evaluate,
}

/// What is being counted within a stage. A new task starts a new count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// Training steps.
    Training,
    /// `calibrate --auto`: scoring the grid of {t} and taps on synthetic defects.
    ChoosingSettings,
    /// Scoring the held-out normal images that set the threshold.
    ScoringNormals,
    /// Detecting on the test images.
    Evaluating,
}

impl Task {
    pub fn stage(self) -> Stage {
        match self {
            Task::Training => Stage::Train,
            Task::ChoosingSettings | Task::ScoringNormals => Stage::Calibrate,
            Task::Evaluating => Stage::Evaluate,
        }
    }

    /// A few words for a progress bar.
    pub fn describe(self) -> &'static str {
        match self {
            Task::Training => "training",
            Task::ChoosingSettings => "choosing {t} and taps",
            Task::ScoringNormals => "scoring normal images",
            Task::Evaluating => "evaluating",
        }
    }
}

/// Progress within a task: `done` of `total` units (steps, images).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress<'a> {
    pub task: Task,
    pub done: u64,
    pub total: u64,
    /// A new status line (the smoothed loss and speed while training, the
    /// phase of the settings search), or `None` when it did not change.
    pub message: Option<&'a str>,
}

/// Why a checkpoint is handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Every `checkpoint_every` training steps.
    Periodic,
    /// After a divergence rolled training back: the state to resume from now.
    Rollback,
    /// The end of training (steps or time budget reached).
    Final,
    /// Training was stopped ([`PipelineEvents::should_stop`]).
    Interrupted,
    /// The trained model with its detection settings and threshold
    /// ([`super::Pipeline::run`] only).
    Calibrated,
}

/// A model file worth keeping: the caller stores it (the CLI rewrites its
/// output file) or not; training goes on from memory either way.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint<'a> {
    pub kind: CheckpointKind,
    /// Training steps taken.
    pub step: u64,
    /// The whole file: EMA weights as the model, plus the raw weights and
    /// Adam's state for resuming (see [`crate::train::Trainer::checkpoint`]).
    pub file: &'a ModelFile,
}

/// The caller's side of a running pipeline; every method has a do-nothing
/// default. Methods that return a `Result` can stop the pipeline with an
/// error (a checkpoint that could not be saved must not pass silently).
pub trait PipelineEvents {
    /// Progress within a task; called often (every training step).
    fn on_progress(&mut self, _progress: &Progress<'_>) {}

    /// A training step whose loss was read back (every `log_every` steps
    /// and the last), with the seconds since training started.
    fn on_train_step(&mut self, _report: &StepReport, _seconds: f64) -> Result<()> {
        Ok(())
    }

    /// A model file to keep (see [`CheckpointKind`] for when).
    fn on_checkpoint(&mut self, _checkpoint: &Checkpoint<'_>) -> Result<()> {
        Ok(())
    }

    /// A line for the user: what was found, skipped files, notes, warnings.
    fn on_log(&mut self, _stage: Stage, _line: &str) {}

    /// Asked before each training step: true stops training after saving
    /// a checkpoint (the CLI answers true after Ctrl-C).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// Events nobody listens to.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quiet;

impl PipelineEvents for Quiet {}
