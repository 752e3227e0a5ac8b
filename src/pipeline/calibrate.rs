//! The calibration stage: with `auto`, {t} and taps chosen on synthetic
//! defects pasted onto some held-out normal images; then the verdict
//! threshold from the others (split conformal, see [`crate::calibrate`]).

use super::detection::describe;
use super::events::{PipelineEvents, Progress, Stage, Task};
use crate::backend::NnBackend;
use crate::calibrate::{self, Objective, SelectOptions};
use crate::config::{Calibration, DetectionSettings, ModelMeta, Selection};
use crate::detect::{self, DetectOptions, Detections};
use crate::error::{Error, Result};
use crate::nn::score_model::ScoreModel;
use crate::tiles::{self, Tiling};

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

/// The threshold set on tiled detection (`calibrate --tile`): the normals
/// at their own size, in the order of the model-size normals, read one at a
/// time when their turn comes (so large images never sit in memory
/// together), and the tiling `detect --tile` will use.
#[derive(Clone, Copy)]
pub struct TiledNormals<'a> {
    /// Each normal's (width, height) as it is detected.
    pub sizes: &'a [(usize, usize)],
    /// Normal i's pixels (CHW, `sizes[i]`).
    pub read: &'a dyn Fn(usize) -> Result<Vec<f32>>,
    pub tiling: Tiling,
}

/// Runs the calibration stage; see [`super::Pipeline::calibrate`].
pub(super) fn calibrate<B: NnBackend>(
    be: &B,
    ev: &mut dyn PipelineEvents,
    model: &mut ScoreModel<B>,
    normals: &[Vec<f32>],
    tiled: Option<TiledNormals>,
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
    // Refused before the (long) automatic choice, not after it.
    if let Some(t) = tiled {
        check_tiled(model, t, normals.len())?;
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
    let total = threshold_idx.len() as u64;
    let mut progress = |done: usize| {
        ev.on_progress(&Progress {
            task: Task::ScoringNormals,
            done: done as u64,
            total,
            message: None,
        })
    };
    let (calibration, scores) = match tiled {
        None => {
            let images: Vec<Vec<f32>> = threshold_idx.iter().map(|&i| normals[i].clone()).collect();
            calibrate::calibrate_on_normals(
                be,
                model,
                &images,
                &options,
                plan.batch,
                plan.quantile,
                &mut progress,
            )?
        }
        Some(t) => threshold_on_tiles(be, model, &threshold_idx, t, &options, plan, &mut progress)?,
    };
    let out = Calibrated {
        options,
        selection,
        calibration,
        scores,
    };
    out.apply(&mut model.meta);
    Ok(out)
}

/// The threshold from the normals at `idx` detected in tiles at their own
/// size, as `detect --tile` detects; the calibration records the tiling.
fn threshold_on_tiles<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    idx: &[usize],
    tiled: TiledNormals,
    options: &DetectOptions,
    plan: &CalibratePlan,
    progress: &mut dyn FnMut(usize),
) -> Result<(Calibration, Vec<f64>)> {
    let mut found = Detections::default();
    for (done, &i) in idx.iter().enumerate() {
        let (width, height) = tiled.sizes[i];
        let image = (tiled.read)(i)?;
        let quiet = &mut |_, _| {};
        found.extend(tiles::tiled_map(
            be,
            model,
            &image,
            width,
            height,
            options,
            tiled.tiling,
            quiet,
        )?);
        progress(done + 1);
    }
    let (mut cal, scores) = calibrate::calibration_of(&found, options, plan.quantile)?;
    cal.tiles = Some(tiled.tiling.layout());
    Ok((cal, scores))
}

/// A tiling `detect --tile` accepts for this model and every image, and
/// one image at its own size for each of the `n` normals.
fn check_tiled<B: NnBackend>(model: &ScoreModel<B>, t: TiledNormals, n: usize) -> Result<()> {
    t.tiling.validate()?;
    let side = t.tiling.tile;
    model.net.config.check_input_size(side, side)?;
    for &(width, height) in t.sizes {
        tiles::TileGrid::new(width, height, side, t.tiling.overlap)?;
    }
    if t.sizes.len() != n {
        return Err(Error::Invalid(format!(
            "{} normal images at their own size for {n} at the model's: tiled calibration needs the same images both ways",
            t.sizes.len()
        )));
    }
    Ok(())
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
