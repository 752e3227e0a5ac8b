//! All stages in a row: [`super::Pipeline::run`].

use std::path::PathBuf;

use super::calibrate::{CalibratePlan, Calibrated};
use super::evaluate::{EvalPlan, Evaluation};
use super::events::{Checkpoint, CheckpointKind};
use super::sources::{TestSource, TrainSource};
use super::train::{TrainEnd, TrainPlan, TrainSummary};
use super::Pipeline;
use crate::backend::NnBackend;
use crate::detect::DetectOptions;
use crate::error::Result;
use crate::model_file::ModelFile;
use crate::nn::score_model::ScoreModel;

/// The three stages' plans and the data they share.
#[derive(Clone, Debug)]
pub struct RunPlan {
    /// An MVTec-layout category (train/good, test/, ground_truth/), or a
    /// root of categories with `category`.
    pub data: PathBuf,
    pub category: Option<String>,
    pub train: TrainPlan,
    pub calibrate: CalibratePlan,
    pub evaluate: EvalPlan,
    /// Seed of the detection noise (calibration and evaluation).
    pub detect_seed: u64,
}

impl RunPlan {
    /// Training as given; automatic calibration and evaluation with their defaults.
    pub fn new(data: impl Into<PathBuf>, category: Option<String>, train: TrainPlan) -> Self {
        RunPlan {
            data: data.into(),
            category,
            train,
            calibrate: CalibratePlan {
                auto: true,
                ..CalibratePlan::default()
            },
            evaluate: EvalPlan::default(),
            detect_seed: 0,
        }
    }
}

/// What the stages produced.
pub struct RunResult<B: NnBackend> {
    pub train: TrainSummary,
    /// The trained model on the backend (EMA weights), calibrated.
    pub model: ScoreModel<B>,
    /// Its file: the last training checkpoint with the calibration stored
    /// (also handed out as a [`CheckpointKind::Calibrated`] checkpoint).
    pub file: ModelFile,
    /// `None` when training was interrupted (then nothing after it ran).
    pub calibrated: Option<Calibrated>,
    pub evaluation: Option<Evaluation>,
}

pub(super) fn run<B: NnBackend>(p: &mut Pipeline<'_, B>, plan: &RunPlan) -> Result<RunResult<B>> {
    let source = TrainSource::new(&plan.data, plan.category.clone());
    let trained = p.train(&plan.train, &source)?;
    let mut model = trained.model()?;
    let (train, mut file, held_out) = (trained.summary, trained.file, trained.held_out);
    // The optimiser state is not needed any more: free it on the device.
    drop(trained.trainer);
    if train.end == TrainEnd::Interrupted {
        return Ok(RunResult {
            train,
            model,
            file,
            calibrated: None,
            evaluation: None,
        });
    }
    let base = DetectOptions {
        seed: plan.detect_seed,
        ..DetectOptions::from_settings(model.meta.detection.clone())
    };
    let calibrated = p.calibrate(&mut model, &held_out, base, &plan.calibrate)?;
    calibrated.apply(&mut file.meta);
    p.events.on_checkpoint(&Checkpoint {
        kind: CheckpointKind::Calibrated,
        step: file.meta.step,
        file: &file,
    })?;
    let test =
        TestSource::new(&plan.data, plan.category.clone()).load_for(&model, &calibrated.options)?;
    let evaluation = p.evaluate(&model, test, &calibrated.options, &plan.evaluate)?;
    Ok(RunResult {
        train,
        model,
        file,
        calibrated: Some(calibrated),
        evaluation: Some(evaluation),
    })
}
