//! Scoring anomaly maps against an MVTec-layout test set: the metrics table,
//! overall and per defect type, as written to report.json.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::TestItem;
use crate::detect::Detections;
use crate::error::{Error, Result};
use crate::metrics;

/// MVTec's AUPRO integration limit.
pub const AUPRO_MAX_FPR: f64 = 0.3;

/// Metrics of one subset; a metric is `None` when the subset cannot define it
/// (e.g. no good images, so no image AUROC).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub images: usize,
    pub defective: usize,
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub aupro: Option<f64>,
    /// Best F1 over image-score thresholds, and that threshold.
    pub f1_max: Option<f64>,
    pub f1_threshold: Option<f64>,
}

/// Metrics of the items at `idx` with their maps (`size×size` each) and
/// image scores.
pub fn metrics_of(
    items: &[TestItem],
    found: &Detections,
    idx: &[usize],
    size: usize,
) -> Result<Metrics> {
    let maps = &found.maps;
    if items.len() != maps.len() || found.scores.len() != maps.len() {
        return Err(Error::Invalid(format!(
            "{} test items but {} maps and {} scores",
            items.len(),
            maps.len(),
            found.scores.len()
        )));
    }
    let zeros = vec![0u8; size * size];
    let scores: Vec<f64> = idx.iter().map(|&i| found.scores[i] as f64).collect();
    let labels: Vec<bool> = idx.iter().map(|&i| items[i].is_anomalous()).collect();
    let map_refs: Vec<&[f32]> = idx.iter().map(|&i| maps[i].as_slice()).collect();
    let mask_refs: Vec<&[u8]> = idx
        .iter()
        .map(|&i| items[i].mask.as_deref().unwrap_or(&zeros))
        .collect();
    let defective = labels.iter().filter(|&&l| l).count();
    let two_classes = defective > 0 && defective < labels.len();
    let has_defect_pixels = mask_refs.iter().any(|m| m.iter().any(|&v| v != 0));
    let (f1, thr) = if two_classes {
        let (f, t) = metrics::f1_max(&scores, &labels)?;
        (Some(f), Some(t))
    } else {
        (None, None)
    };
    Ok(Metrics {
        images: idx.len(),
        defective,
        image_auroc: if two_classes {
            Some(metrics::auroc(&scores, &labels)?)
        } else {
            None
        },
        pixel_auroc: if has_defect_pixels {
            Some(metrics::pixel_auroc(&map_refs, &mask_refs)?)
        } else {
            None
        },
        aupro: if has_defect_pixels {
            Some(metrics::aupro(
                &map_refs,
                &mask_refs,
                size,
                size,
                AUPRO_MAX_FPR,
            )?)
        } else {
            None
        },
        f1_max: f1,
        f1_threshold: thr,
    })
}

/// Overall metrics and, per defect type, the metrics of that type plus all
/// good images (MVTec's convention).
pub fn metrics_by_defect(
    items: &[TestItem],
    found: &Detections,
    size: usize,
) -> Result<(Metrics, BTreeMap<String, Metrics>)> {
    let all: Vec<usize> = (0..items.len()).collect();
    let overall = metrics_of(items, found, &all, size)?;
    let mut per = BTreeMap::new();
    let mut kinds: Vec<&str> = items.iter().map(|i| i.defect.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds.into_iter().filter(|k| *k != "good") {
        let idx: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].defect == kind || !items[i].is_anomalous())
            .collect();
        per.insert(kind.to_string(), metrics_of(items, found, &idx, size)?);
    }
    Ok((overall, per))
}

/// How verdicts at a calibrated threshold fare on the test set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerdictStats {
    pub threshold: f64,
    pub accuracy: f64,
    /// Defective images called defective.
    pub true_positive_rate: f64,
    /// Good images called defective.
    pub false_positive_rate: f64,
    /// Good test images, and how many of them were called defective.
    pub good_images: usize,
    pub false_alarms: usize,
    /// 95 % Wilson interval of the false-alarm rate, from the good test images.
    pub false_positive_interval: (f64, f64),
}

/// The 95 % Wilson score interval of a binomial rate k/n (NaNs when n = 0).
pub fn wilson_interval(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (z, n, p) = (1.959_964, n as f64, k as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Verdicts of the items' image `scores` at `threshold`.
pub fn verdict_stats(items: &[TestItem], scores: &[f32], threshold: f64) -> VerdictStats {
    let (mut tp, mut fp, mut pos, mut neg) = (0usize, 0usize, 0usize, 0usize);
    for (it, &score) in items.iter().zip(scores) {
        let called = score as f64 >= threshold;
        if it.is_anomalous() {
            pos += 1;
            tp += usize::from(called);
        } else {
            neg += 1;
            fp += usize::from(called);
        }
    }
    let rate = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    VerdictStats {
        threshold,
        accuracy: rate(tp + (neg - fp), pos + neg),
        true_positive_rate: rate(tp, pos),
        false_positive_rate: rate(fp, neg),
        good_images: neg,
        false_alarms: fp,
        false_positive_interval: wilson_interval(fp, neg),
    }
}
