//! The calibration stage: with `auto`, {t} and taps chosen on synthetic
//! defects pasted onto some held-out normal images; then the verdict
//! threshold from the others (split conformal, see [`crate::calibrate`]).

use super::detection::describe;
use super::events::{PipelineEvents, Progress, Stage, Task};
use crate::backend::NnBackend;
use crate::calibrate::{self, Objective, SelectOptions};
use crate::config::{Calibration, DetectionSettings, ModelMeta, Selection};
use crate::detect::{self, DetectOptions};
use crate::error::{Error, Result};
use crate::nn::score_model::ScoreModel;

/// How to calibrate.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibratePlan {
    /// Also choose {t} and taps automatically.
    pub auto: bool,
    /// Quantile of the normal images' scores used as the verdict threshold.
    pub quantile: f64,
    /// At most this many normal images for the automatic choice (fewer
    /// when the threshold would keep too few: [`calibrate::select_count`]).
    pub select_images: usize,
    /// What the automatic choice maximises.
    pub objective: Objective,
    /// Images per network batch.
    pub batch: usize,
    /// Detection time per image (ms) the automatic choice may not exceed
    /// with noise draws and flip; None weighs time against AUROC instead.
    pub budget_ms: Option<f64>,
}

impl Default for CalibratePlan {
    /// `scoredd calibrate`'s defaults.
    fn default() -> Self {
        CalibratePlan {
            auto: false,
            quantile: calibrate::QUANTILE,
            select_images: calibrate::SELECT_IMAGES_MAX,
            objective: Objective::Both,
            batch: 8,
            budget_ms: None,
        }
    }
}

/// What calibration found.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibrated {
    /// The detection options in force: the base ones, with the chosen {t},
    /// taps and smoothing under `auto`.
    pub options: DetectOptions,
    /// How the settings were chosen (`auto` only).
    pub selection: Option<Selection>,
    pub calibration: Calibration,
    /// Scores of the normal images that set the threshold.
    pub scores: Vec<f64>,
}

impl Calibrated {
    /// Stores the settings and the threshold in a model's metadata (a
    /// selection from an earlier `auto` run is kept when this one had none).
    pub fn apply(&self, meta: &mut ModelMeta) {
        meta.detection = self.options.settings.clone();
        if let Some(sel) = &self.selection {
            meta.selection = Some(sel.clone());
        }
        meta.calibration = Some(self.calibration.clone());
    }
}

/// Runs the calibration stage; see [`super::Pipeline::calibrate`].
pub(super) fn calibrate<B: NnBackend>(
    be: &B,
    ev: &mut dyn PipelineEvents,
    model: &mut ScoreModel<B>,
    normals: &[Vec<f32>],
    base: DetectOptions,
    plan: &CalibratePlan,
) -> Result<Calibrated> {
    detect::validate(model, &base)?;
    if base.mode != detect::Mode::ScoreDd {
        return Err(Error::Invalid(
            "calibrate stores settings for Score-DD itself; the ablation modes are for `eval` only"
                .into(),
        ));
    }
    let (select_idx, threshold_idx) = split_normals(normals.len(), plan)?;
    let mut options = base;
    let mut selection = None;
    if plan.auto {
        let chosen: Vec<Vec<f32>> = select_idx.iter().map(|&i| normals[i].clone()).collect();
        let (settings, sel) = choose_settings(be, ev, model, &chosen, &options, plan)?;
        options.settings = settings;
        selection = Some(sel);
    }
    ev.on_log(Stage::Calibrate, &describe(&options));
    let threshold_images: Vec<Vec<f32>> =
        threshold_idx.iter().map(|&i| normals[i].clone()).collect();
    let total = threshold_images.len() as u64;
    let (calibration, scores) = calibrate::calibrate_on_normals(
        be,
        model,
        &threshold_images,
        &options,
        plan.batch,
        plan.quantile,
        &mut |done| {
            ev.on_progress(&Progress {
                task: Task::ScoringNormals,
                done: done as u64,
                total,
                message: None,
            })
        },
    )?;
    let out = Calibrated {
        options,
        selection,
        calibration,
        scores,
    };
    out.apply(&mut model.meta);
    Ok(out)
}

/// Which normals choose the settings and which set the threshold (all of
/// them without `auto`).
fn split_normals(n: usize, plan: &CalibratePlan) -> Result<(Vec<usize>, Vec<usize>)> {
    if !plan.auto {
        return Ok((Vec::new(), (0..n).collect()));
    }
    if n < 4 {
        return Err(Error::Invalid(format!(
            "--auto needs at least 4 held-out normal images (2 to choose the settings, 2 for the threshold), got {n}"
        )));
    }
    let select = calibrate::select_count(n, plan.quantile, plan.select_images.max(2));
    Ok(calibrate::split_held_out(n, select))
}

/// {t} and taps chosen on synthetic defects pasted onto `normals`.
fn choose_settings<B: NnBackend>(
    be: &B,
    ev: &mut dyn PipelineEvents,
    model: &ScoreModel<B>,
    normals: &[Vec<f32>],
    opts: &DetectOptions,
    plan: &CalibratePlan,
) -> Result<(DetectionSettings, Selection)> {
    calibrate::select_settings(
        be,
        model,
        normals,
        &opts.settings,
        &SelectOptions {
            batch: plan.batch.clamp(1, 4),
            seed: opts.seed,
            budget_ms: plan.budget_ms,
            ..SelectOptions::for_objective(plan.objective)
        },
        &mut |what, done, total| {
            ev.on_progress(&Progress {
                task: Task::ChoosingSettings,
                done: done as u64,
                total: total as u64,
                message: Some(what),
            })
        },
    )
}
