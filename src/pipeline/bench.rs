//! The quality benchmark (`scoredd bench-quality`): train with a budget →
//! calibrate (automatic choice) → evaluate, per MVTec category under a root
//! or per MNIST digit (one-class), gathered into one table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::calibrate::CalibratePlan;
use super::detection::reading;
use super::evaluate::{EvalPlan, Evaluation};
use super::report::fmt_metric;
use super::run::RunPlan;
use super::sources::{TestData, TrainSource};
use super::train::{TrainEnd, TrainPlan, TrainSummary};
use super::Pipeline;
use crate::backend::NnBackend;
use crate::data::{self, ImageSpec, TestItem, TestSet};
use crate::detect::DetectOptions;
use crate::error::{Error, Result};
use crate::model_file::ModelFile;

/// What every row of a benchmark shares: the training recipe (its start is
/// a fresh model; `minutes` is the per-row budget), calibration and
/// evaluation.
#[derive(Clone, Debug)]
pub struct BenchPlan {
    pub train: TrainPlan,
    pub calibrate: CalibratePlan,
    pub evaluate: EvalPlan,
    /// Where to write each row's calibrated model (`<row>.safetensors`), so
    /// a long benchmark's models can be looked at or reused; `None`: not kept.
    pub save_models: Option<PathBuf>,
}

/// One category's (or digit's) line of the table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BenchRow {
    pub name: String,
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub aupro: Option<f64>,
    pub f1_max: Option<f64>,
    pub training_steps: f64,
    pub training_minutes: f64,
    /// Detection time per test image (batched, amortised), milliseconds.
    pub detect_ms_per_image: f64,
    pub test_images: usize,
    /// The chosen settings in words (times, taps, smoothing, score reading).
    pub settings: String,
}

/// The whole table: rows, their mean and how they were made.
#[derive(Clone, Debug, Serialize)]
pub struct BenchTable {
    pub protocol: String,
    pub rows: Vec<BenchRow>,
    pub mean: BenchRow,
}

/// The categories under `root`: `root` itself when it is an MVTec-layout
/// category (train/good and test/), else every sub-folder that is one,
/// sorted by name.
pub fn categories(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let is_category = |p: &Path| p.join("train").join("good").is_dir() && p.join("test").is_dir();
    if is_category(root) {
        let name = root
            .file_name()
            .map_or("category".into(), |n| n.to_string_lossy().into_owned());
        return Ok(vec![(name, root.to_path_buf())]);
    }
    let entries = std::fs::read_dir(root).map_err(|source| Error::Io {
        path: root.display().to_string(),
        source,
    })?;
    let mut found: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_category(p))
        .map(|p| {
            (
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                p,
            )
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no MVTec-layout category (a folder with train/good/ and test/), and is not one itself",
            root.display()
        )));
    }
    Ok(found)
}

/// A row from a finished training and evaluation.
fn row(name: &str, train: &TrainSummary, ev: &Evaluation) -> BenchRow {
    let n = ev.set.items.len();
    let o = &ev.overall;
    let s = &ev.options.settings;
    BenchRow {
        name: name.to_string(),
        image_auroc: o.image_auroc,
        pixel_auroc: o.pixel_auroc,
        aupro: o.aupro,
        f1_max: o.f1_max,
        training_steps: (train.step - train.start_step) as f64,
        training_minutes: train.seconds / 60.0,
        detect_ms_per_image: ev.seconds * 1000.0 / n.max(1) as f64,
        test_images: n,
        settings: format!(
            "t {:?}, taps {}, σ {}{}, score {}, {} draw(s){}",
            s.ts,
            s.taps.join("+"),
            s.smooth,
            if s.profile.is_some() {
                ", normal profile"
            } else {
                ""
            },
            reading(s.score_top),
            s.draws,
            if s.flip { " + flip" } else { "" }
        ),
    }
}

/// Writes a row's calibrated model as `<row>.safetensors` (spaces as `_`)
/// under `plan.save_models`, if set.
fn save_model(plan: &BenchPlan, name: &str, file: &ModelFile) -> Result<()> {
    let Some(dir) = &plan.save_models else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    file.save(&dir.join(format!("{}.safetensors", name.replace(' ', "_"))))
}

fn interrupted(name: &str) -> Error {
    Error::Invalid(format!("training on {name} was interrupted"))
}

/// Train → calibrate → evaluate on one MVTec-layout category folder.
pub fn bench_category<B: NnBackend>(
    p: &mut Pipeline<'_, B>,
    name: &str,
    dir: &Path,
    plan: &BenchPlan,
) -> Result<BenchRow> {
    let run = RunPlan {
        data: dir.to_path_buf(),
        category: None,
        train: plan.train.clone(),
        calibrate: plan.calibrate.clone(),
        evaluate: plan.evaluate.clone(),
        detect_seed: 0,
    };
    let r = p.run(&run)?;
    if r.train.end == TrainEnd::Interrupted {
        return Err(interrupted(name));
    }
    save_model(plan, name, &r.file)?;
    let ev = r.evaluation.ok_or_else(|| interrupted(name))?;
    Ok(row(name, &r.train, &ev))
}

/// The one-class MNIST protocol for `digit` (only the t10k files): train on
/// the digit's even-position images ([`data::mnist_halves`]), calibrate on
/// those training held out, test on its odd-position images as normals
/// against as many images of the other digits (an equal share of each, the
/// first in file order) as anomalies. Image AUROC only: MNIST has no masks.
pub fn bench_mnist_digit<B: NnBackend>(
    p: &mut Pipeline<'_, B>,
    dir: &Path,
    digit: u8,
    plan: &BenchPlan,
) -> Result<BenchRow> {
    let name = format!("digit {digit}");
    let source = TrainSource {
        data: dir.to_path_buf(),
        category: None,
        digit: Some(digit),
        mnist_train_half: true,
    };
    let trained = p.train(&plan.train, &source)?;
    let mut model = trained.model()?;
    let (summary, held, mut file) = (trained.summary, trained.held_out, trained.file);
    drop(trained.trainer);
    if summary.end == TrainEnd::Interrupted {
        return Err(interrupted(&name));
    }
    let base = DetectOptions::from_settings(model.meta.detection.clone());
    let calibrated = p.calibrate(&mut model, &held, base, &plan.calibrate)?;
    calibrated.apply(&mut file.meta);
    save_model(plan, &name, &file)?;
    let c = &model.net.config;
    let spec = ImageSpec {
        size: c.image_size,
        channels: c.channels,
    };
    let test = TestData {
        set: mnist_test_set(dir, digit, spec)?,
        root: dir.to_path_buf(),
    };
    let ev = p.evaluate(&model, test, &calibrated.options, &plan.evaluate)?;
    Ok(row(&name, &summary, &ev))
}

/// The test half of `digit` ("good") and as many other digits' images
/// (defect "digit K"), split as evenly as the count allows over the nine.
pub fn mnist_test_set(dir: &Path, digit: u8, spec: ImageSpec) -> Result<TestSet> {
    let all = data::mnist(dir, digit, spec)?;
    let (_, test) = data::mnist_halves(all.images.len());
    let item = |path: &str, defect: String, image: &[f32]| TestItem {
        path: path.to_string(),
        defect,
        image: image.to_vec(),
        mask: None,
        mask_path: None,
    };
    let mut items: Vec<TestItem> = test
        .iter()
        .map(|&i| item(&all.paths[i], "good".into(), &all.images[i]))
        .collect();
    let others: Vec<u8> = (0..10).filter(|&d| d != digit).collect();
    let n = test.len();
    for (k, &d) in others.iter().enumerate() {
        let want = n / others.len() + usize::from(k < n % others.len());
        let o = data::mnist(dir, d, spec)?;
        for i in 0..want.min(o.images.len()) {
            items.push(item(&o.paths[i], format!("digit {d}"), &o.images[i]));
        }
    }
    Ok(TestSet {
        items,
        skipped: Vec::new(),
    })
}

/// Mean of the present values (None when none is).
fn mean_of(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let xs: Vec<f64> = v.flatten().collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

impl BenchTable {
    pub fn new(protocol: String, rows: Vec<BenchRow>) -> Self {
        let avg = |f: fn(&BenchRow) -> f64| mean_of(rows.iter().map(|r| Some(f(r)))).unwrap_or(0.0);
        let mean = BenchRow {
            name: "mean".into(),
            image_auroc: mean_of(rows.iter().map(|r| r.image_auroc)),
            pixel_auroc: mean_of(rows.iter().map(|r| r.pixel_auroc)),
            aupro: mean_of(rows.iter().map(|r| r.aupro)),
            f1_max: mean_of(rows.iter().map(|r| r.f1_max)),
            training_steps: avg(|r| r.training_steps),
            training_minutes: avg(|r| r.training_minutes),
            detect_ms_per_image: avg(|r| r.detect_ms_per_image),
            test_images: rows.iter().map(|r| r.test_images).sum(),
            settings: String::new(),
        };
        BenchTable {
            protocol,
            rows,
            mean,
        }
    }

    /// quality.md: the protocol, then one line per row and the mean.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Score-DD detection quality\n\n");
        let _ = writeln!(s, "{}\n", self.protocol);
        s.push_str("| category | image AUROC | pixel AUROC | AUPRO | F1-max | training steps | training minutes | detection ms/image | test images | settings |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for r in self.rows.iter().chain([&self.mean]) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.1} | {} | {} |",
                r.name,
                fmt_metric(r.image_auroc),
                fmt_metric(r.pixel_auroc),
                fmt_metric(r.aupro),
                fmt_metric(r.f1_max),
                r.training_steps,
                r.training_minutes,
                r.detect_ms_per_image,
                r.test_images,
                r.settings
            );
        }
        s
    }
}
