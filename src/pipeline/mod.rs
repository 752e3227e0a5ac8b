//! The product as a library: train → calibrate → evaluate on one opened
//! backend, each stage handing its result to the next in memory (the trained
//! model goes to calibration as it sits on the backend, never through a file).
//! Progress, loss read-backs, checkpoints and log lines go to the caller's
//! [`PipelineEvents`]; the `scoredd` CLI (`train`, `calibrate`, `eval`,
//! `demo`) is one such caller, which draws progress bars and writes files.
//!
//! ```no_run
//! use scoredd::backend::cpu::CpuBackend;
//! use scoredd::pipeline::{ModelStart, Pipeline, Quiet, RunPlan, TrainPlan};
//! use scoredd::sde::SdeKind;
//!
//! let be = CpuBackend::new();
//! let mut train = TrainPlan::new(ModelStart::fresh("tiny", 1, SdeKind::Ve)?);
//! train.steps = 500;
//! let plan = RunPlan::new("textures", Some("stripes".into()), train);
//! let result = Pipeline::new(&be, &mut Quiet).run(&plan)?;
//! if let Some(e) = &result.evaluation {
//!     println!("image AUROC {:?}", e.overall.image_auroc);
//! }
//! # Ok::<(), scoredd::Error>(())
//! ```

#[cfg(not(target_arch = "wasm32"))]
mod bench;
mod calibrate;
mod detection;
#[cfg(not(target_arch = "wasm32"))]
mod evaluate;
mod events;
#[cfg(not(target_arch = "wasm32"))]
mod report;
#[cfg(not(target_arch = "wasm32"))]
mod run;
#[cfg(not(target_arch = "wasm32"))]
mod sources;
#[cfg(not(target_arch = "wasm32"))]
mod train;

#[cfg(not(target_arch = "wasm32"))]
pub use bench::{
    bench_category, bench_mnist_digit, categories, mnist_test_set, BenchPlan, BenchRow, BenchTable,
};
pub use calibrate::{CalibratePlan, Calibrated, TiledNormals};
pub use detection::{
    augment_words, defect_mask, describe, judge, reading, verdict_choice_words, verdict_words,
    Verdict,
};
#[cfg(not(target_arch = "wasm32"))]
pub use evaluate::{EvalPlan, Evaluation};
pub use events::{Checkpoint, CheckpointKind, PipelineEvents, Progress, Quiet, Stage, Task};
#[cfg(not(target_arch = "wasm32"))]
pub use report::{fmt_metric, gallery, markdown, Report};
#[cfg(not(target_arch = "wasm32"))]
pub use run::{RunPlan, RunResult};
#[cfg(not(target_arch = "wasm32"))]
pub use sources::{TestData, TestSource, TrainSource};
#[cfg(not(target_arch = "wasm32"))]
pub use train::{ModelStart, OnDiverge, TrainEnd, TrainPlan, TrainSummary, Trained};

use crate::backend::NnBackend;
use crate::detect::DetectOptions;
use crate::error::Result;
use crate::nn::score_model::ScoreModel;

/// An opened backend and the caller's events: the stages run on it.
pub struct Pipeline<'a, B: NnBackend> {
    be: &'a B,
    events: &'a mut dyn PipelineEvents,
}

impl<'a, B: NnBackend> Pipeline<'a, B> {
    pub fn new(be: &'a B, events: &'a mut dyn PipelineEvents) -> Self {
        Pipeline { be, events }
    }

    pub fn backend(&self) -> &'a B {
        self.be
    }

    /// Trains a fresh or resumed model on `source`'s images (less those held
    /// out for calibration) until the plan's step count or time budget, or
    /// until [`PipelineEvents::should_stop`]. Checkpoints go to
    /// [`PipelineEvents::on_checkpoint`] every `checkpoint_every` steps,
    /// after a rollback and at the end; a bad data folder or plan is an
    /// [`Error`](crate::Error) before any step.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn train(&mut self, plan: &TrainPlan, source: &TrainSource) -> Result<Trained<B>> {
        train::train(self.be, &mut *self.events, plan, source)
    }

    /// Fits the detector to `model` with `normals`, good images it was not
    /// trained on: under `plan.auto` {t} and taps are chosen on synthetic
    /// defects pasted onto some of them, and the threshold comes from the
    /// others. Starts from `base` (the model's stored settings with any
    /// overrides); stores the result in `model.meta` and returns it.
    pub fn calibrate(
        &mut self,
        model: &mut ScoreModel<B>,
        normals: &[Vec<f32>],
        base: DetectOptions,
        plan: &CalibratePlan,
    ) -> Result<Calibrated> {
        calibrate::calibrate(self.be, &mut *self.events, model, normals, None, base, plan)
    }

    /// [`Pipeline::calibrate`] with the threshold set on tiled detection:
    /// `tiled` holds the same normals at their own size, which are detected
    /// in tiles as `detect --tile` detects (the settings are still chosen
    /// on `normals` at the model's size).
    pub fn calibrate_tiled(
        &mut self,
        model: &mut ScoreModel<B>,
        normals: &[Vec<f32>],
        tiled: TiledNormals,
        base: DetectOptions,
        plan: &CalibratePlan,
    ) -> Result<Calibrated> {
        let (be, ev) = (self.be, &mut *self.events);
        calibrate::calibrate(be, ev, model, normals, Some(tiled), base, plan)
    }

    /// Maps, metrics and verdicts of `model` on a test split (loaded with
    /// [`TestSource::load_for`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate(
        &mut self,
        model: &ScoreModel<B>,
        test: TestData,
        opts: &DetectOptions,
        plan: &EvalPlan,
    ) -> Result<Evaluation> {
        evaluate::evaluate(self.be, &mut *self.events, model, test, opts, plan)
    }

    /// All three stages on one MVTec-layout category: train on train/good,
    /// calibrate on the images training held out, evaluate on test/. Stops
    /// after training when it was interrupted.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn run(&mut self, plan: &RunPlan) -> Result<RunResult<B>> {
        run::run(self, plan)
    }
}
