//! The evaluation stage: maps of an MVTec-layout test split, their metrics
//! overall and per defect type, and how the calibrated verdicts fare.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::detection::describe;
use super::events::{PipelineEvents, Progress, Stage, Task};
use super::sources::TestData;
use crate::backend::NnBackend;
use crate::config::ModelMeta;
use crate::data::{ImageSpec, TestSet};
use crate::detect::{self, DetectOptions, Detections};
use crate::error::{Error, Result};
use crate::evaluate::{self, Metrics, VerdictStats};
use crate::nn::score_model::ScoreModel;

/// How to evaluate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalPlan {
    /// Evaluate about this many test images, an evenly spaced subset in
    /// which every defect type keeps its share.
    pub limit: Option<usize>,
    /// Images per network batch.
    pub batch: usize,
}

impl Default for EvalPlan {
    /// `scoredd eval`'s defaults.
    fn default() -> Self {
        EvalPlan {
            limit: None,
            batch: 8,
        }
    }
}

/// What evaluation found: everything a report needs.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The test images evaluated (the subset, with a limit).
    pub set: TestSet,
    /// The category folder they came from.
    pub root: PathBuf,
    /// One `size × size` map and image score per test image.
    pub found: Detections,
    pub size: usize,
    pub overall: Metrics,
    /// Each defect type with the good images.
    pub per_defect: BTreeMap<String, Metrics>,
    /// Verdicts at the calibrated threshold (calibrated models only).
    pub verdicts: Option<VerdictStats>,
    /// Seconds the maps took.
    pub seconds: f64,
    pub options: DetectOptions,
    pub batch: usize,
    /// The model's metadata (architecture, training step, calibration, …)
    /// and its SDE's name.
    pub meta: ModelMeta,
    pub sde: String,
}

/// Runs the evaluation stage; see [`super::Pipeline::evaluate`].
pub(super) fn evaluate<B: NnBackend>(
    be: &B,
    ev: &mut dyn PipelineEvents,
    model: &ScoreModel<B>,
    mut data: TestData,
    opts: &DetectOptions,
    plan: &EvalPlan,
) -> Result<Evaluation> {
    detect::validate(model, opts)?;
    let size = opts.size_for(model);
    let want = ImageSpec {
        size,
        channels: model.net.config.channels,
    }
    .numel();
    if let Some(item) = data.set.items.iter().find(|i| i.image.len() != want) {
        return Err(Error::Invalid(format!(
            "{}: {} values, but the model detects at {size}×{size} px, {} channel(s)",
            item.path,
            item.image.len(),
            model.net.config.channels
        )));
    }
    if let Some(n) = plan.limit {
        limit(ev, &mut data.set, n)?;
    }
    for s in &data.set.skipped {
        ev.on_log(
            Stage::Evaluate,
            &format!("skipped {}: {}", s.path, s.reason),
        );
    }
    let line = format!(
        "{} test images from {}; {}",
        data.set.items.len(),
        data.root.display(),
        describe(opts)
    );
    ev.on_log(Stage::Evaluate, &line);
    let t0 = Instant::now();
    let found = detect_all(be, ev, model, &data.set, opts, plan.batch)?;
    let seconds = t0.elapsed().as_secs_f64();
    let (overall, per_defect) = evaluate::metrics_by_defect(&data.set.items, &found, size)?;
    let verdicts = model
        .meta
        .calibration
        .as_ref()
        .map(|cal| evaluate::verdict_stats(&data.set.items, &found.scores, cal.threshold));
    Ok(Evaluation {
        set: data.set,
        root: data.root,
        found,
        size,
        overall,
        per_defect,
        verdicts,
        seconds,
        options: opts.clone(),
        batch: plan.batch,
        meta: model.meta.clone(),
        sde: model.sde.name().to_string(),
    })
}

/// Keeps every k-th test image so that about `n` remain.
fn limit(ev: &mut dyn PipelineEvents, set: &mut TestSet, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Invalid("--limit must be at least 1".into()));
    }
    // Items are sorted by defect type, so every k-th keeps the proportions.
    let k = set.items.len().div_ceil(n).max(1);
    set.items = std::mem::take(&mut set.items)
        .into_iter()
        .step_by(k)
        .collect();
    ev.on_log(
        Stage::Evaluate,
        &format!("evaluating every {k}th test image (--limit {n})"),
    );
    Ok(())
}

/// Maps and scores of every test image.
fn detect_all<B: NnBackend>(
    be: &B,
    ev: &mut dyn PipelineEvents,
    model: &ScoreModel<B>,
    set: &TestSet,
    opts: &DetectOptions,
    batch: usize,
) -> Result<Detections> {
    let refs: Vec<&[f32]> = set.items.iter().map(|i| i.image.as_slice()).collect();
    let ids = vec![0u64; refs.len()];
    let total = refs.len() as u64;
    detect::detections_batched(be, model, &refs, &ids, opts, batch, &mut |done| {
        ev.on_progress(&Progress {
            task: Task::Evaluating,
            done: done as u64,
            total,
            message: None,
        })
    })
}
