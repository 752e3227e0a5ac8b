//! An evaluation as a report: the report.json content, the report.md text
//! and the overlay gallery. Where they are written is the caller's choice.

use std::fmt::Write as _;
use std::path::Path;

use image::RgbImage;

use super::detection::{augment_words, defect_mask, describe, verdict_choice_words};
use super::evaluate::Evaluation;
use crate::config::Calibration;
use crate::detect;
use crate::error::Result;
use crate::evaluate::{Metrics, VerdictStats};
use crate::viz;

/// What an evaluation found: the report.json content.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub model: String,
    pub data: String,
    pub settings: String,
    pub backend: String,
    pub image_auroc: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub aupro: Option<f64>,
    pub f1_max: Option<f64>,
    pub images: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub seconds_per_image: f64,
    pub images_per_second: f64,
    pub batch: usize,
    pub per_defect: std::collections::BTreeMap<String, Metrics>,
    pub verdicts: Option<VerdictStats>,
    pub gallery: String,
}

impl Report {
    /// The report of `ev`, naming the model file, the backend and the
    /// gallery file as the caller has them.
    pub fn new(ev: &Evaluation, model: &str, backend: &str, gallery: &str) -> Self {
        let n = ev.set.items.len().max(1) as f64;
        Report {
            model: model.to_string(),
            data: ev.root.display().to_string(),
            settings: describe(&ev.options),
            backend: backend.to_string(),
            image_auroc: ev.overall.image_auroc,
            pixel_auroc: ev.overall.pixel_auroc,
            aupro: ev.overall.aupro,
            f1_max: ev.overall.f1_max,
            images: ev.set.items.len(),
            skipped: ev.set.skipped.len(),
            seconds: ev.seconds,
            seconds_per_image: ev.seconds / n,
            images_per_second: n / ev.seconds.max(1e-9),
            batch: ev.batch,
            per_defect: ev.per_defect.clone(),
            verdicts: ev.verdicts.clone(),
            gallery: gallery.to_string(),
        }
    }
}

/// A metric with three decimals, or a dash when undefined.
pub fn fmt_metric(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

/// report.md: the metrics table, timing, verdicts and how the settings were chosen.
pub fn markdown(r: &Report, ev: &Evaluation) -> String {
    let mut s = String::new();
    let m = &ev.meta;
    let _ = writeln!(s, "# Score-DD evaluation\n");
    let _ = writeln!(
        s,
        "Model `{}` ({} px, {} channel(s), nf {}, {} SDE, {} training steps) on `{}`.\n",
        r.model, m.model.image_size, m.model.channels, m.model.nf, ev.sde, m.step, r.data
    );
    let _ = writeln!(s, "Settings: {}. Backend: {}.\n", r.settings, r.backend);
    metrics_table(&mut s, r, &ev.overall);
    let _ = writeln!(
        s,
        "\nTime: {:.1} s for {} images, {:.3} s per image ({:.2} images/s, batches of {}).\n",
        r.seconds, r.images, r.seconds_per_image, r.images_per_second, r.batch
    );
    if let (Some(v), Some(cal)) = (&r.verdicts, &m.calibration) {
        let _ = writeln!(
            s,
            "Verdicts at the calibrated threshold {:.4e}: accuracy {:.3}, defects caught {:.3}, false alarms on good images {:.3}.\n",
            v.threshold, v.accuracy, v.true_positive_rate, v.false_positive_rate
        );
        let _ = writeln!(s, "{}\n", false_alarm_note(v, cal));
    } else {
        let _ = writeln!(
            s,
            "The model is not calibrated (`scoredd calibrate`), so there are no verdicts.\n"
        );
    }
    if let Some(sel) = &m.selection {
        let _ = writeln!(
            s,
            "{{t}} and taps were chosen automatically on {} held-out normal images with {} synthetic defects: pixel AUROC {:.3} (image {:.3}) against {:.3} ({:.3}) for the default {:?} / {}.\n",
            sel.normals,
            sel.defects,
            sel.chosen_pixel_auroc,
            sel.chosen_image_auroc,
            sel.default_pixel_auroc,
            sel.default_image_auroc,
            sel.default_ts,
            sel.default_taps.join("+")
        );
        if let Some([off, on]) = sel.profile_trial {
            let _ = writeln!(
                s,
                "Normal profile (each tap's map divided by its per-position mean on good images): {}; {} {off:.3} without, {on:.3} with, on held-apart normals.\n",
                if m.detection.profile.is_some() { "used" } else { "not used" },
                sel.objective.auroc_words()
            );
        }
        if let Some(words) = augment_words(sel, &m.detection) {
            let _ = writeln!(s, "Runs per image: {words}.\n");
        }
        if let Some(v) = &sel.verdict {
            let _ = writeln!(
                s,
                "{}.\n",
                upper_first(&verdict_choice_words(v, &m.detection))
            );
        }
    }
    if r.skipped > 0 {
        let _ = writeln!(s, "{} file(s) were skipped (see the log).\n", r.skipped);
    }
    let _ = writeln!(
        s,
        "![gallery](gallery.png)\n\nGallery: input | heat map with the ground-truth outline | predicted mask; highest-scoring images of each type first."
    );
    s
}

/// The metrics table: all images, then each defect type with the good ones.
fn metrics_table(s: &mut String, r: &Report, overall: &Metrics) {
    let _ = writeln!(
        s,
        "| subset | images | defective | image AUROC | pixel AUROC | AUPRO@0.3 | F1-max |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let row = |s: &mut String, name: &str, x: &Metrics| {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            x.images,
            x.defective,
            fmt_metric(x.image_auroc),
            fmt_metric(x.pixel_auroc),
            fmt_metric(x.aupro),
            fmt_metric(x.f1_max)
        );
    };
    row(s, "**all**", overall);
    for (k, x) in &r.per_defect {
        row(s, &format!("{k} (+ good)"), x);
    }
}

/// Nominal against observed false alarms, in words a user can act on.
fn false_alarm_note(v: &VerdictStats, cal: &Calibration) -> String {
    let (lo, hi) = v.false_positive_interval;
    let nominal = 1.0 - cal.quantile;
    let bound = cal.false_alarm_bound;
    let mut s = format!(
        "False alarms: {} of {} good test images ({:.1} %, 95 % interval {:.1}–{:.1} %); calibration asked for {:.1} % on {} held-out normal images",
        v.false_alarms,
        v.good_images,
        100.0 * v.false_positive_rate,
        100.0 * lo,
        100.0 * hi,
        100.0 * nominal,
        cal.normals
    );
    match bound {
        Some(b) => {
            let _ = write!(s, " and guarantees at most {:.2} %.", 100.0 * b);
            if lo > b {
                s.push_str(" The observed rate is above that: the good test images differ from the held-out normals (another lighting, batch or camera?), or the model has not seen enough good images. Calibrate on normals like the test images.");
            } else if hi < b * 0.5 && v.good_images > 0 {
                s.push_str(" The observed rate is well below the bound: the threshold is conservative for these images.");
            }
        }
        None => s.push_str(" (this model was calibrated before false-alarm bounds were recorded: recalibrate to get one)."),
    }
    s
}

/// Up to `per_type` images of each type (highest-scoring defects and good
/// images first, so the gallery shows both hits and false alarms).
pub fn gallery(ev: &Evaluation, per_type: usize) -> Result<RgbImage> {
    // The map's own scale: with a verdict reading it is not the score's.
    let cal = ev.meta.calibration.as_ref().map(|c| c.map_scale());
    let maps = &ev.found.maps;
    // From "typical normal" to the strongest response, so strong defects
    // do not all saturate.
    let top = maps
        .iter()
        .map(|m| detect::image_score(m))
        .fold(f32::MIN, f32::max);
    let range = match cal {
        Some(c) => (c.low as f32, top.max(c.high as f32)),
        None => viz::finite_range(maps.iter().map(|m| m.as_slice())),
    };
    let mut tiles = Vec::new();
    for kind in ev.set.defect_types() {
        let mut idx: Vec<usize> = (0..ev.set.items.len())
            .filter(|&i| ev.set.items[i].defect == kind)
            .collect();
        let scores = &ev.found.scores;
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        for &i in idx.iter().take(per_type) {
            tiles.push(gallery_tile(ev, i, &kind, range)?);
        }
    }
    let title = format!("Score-DD: {}", describe(&ev.options));
    Ok(viz::gallery(&tiles, per_type.max(1), &title, range))
}

/// Test image `i`: input, heat map with the true outline, predicted mask, caption.
fn gallery_tile(ev: &Evaluation, i: usize, kind: &str, range: (f32, f32)) -> Result<RgbImage> {
    let cal = ev.meta.calibration.as_ref();
    let item = &ev.set.items[i];
    let map = &ev.found.maps[i];
    let rgb = viz::image_to_rgb(&item.image, ev.meta.model.channels, ev.size);
    let score = ev.found.scores[i] as f64;
    let predicted: Option<Vec<u8>> = cal.map(|cal| defect_mask(map, cal.map_scale().threshold));
    let name = Path::new(&item.path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let caption = match cal {
        Some(cal) => format!(
            "{kind} {name} {:.2} {}",
            cal.normalise(score),
            if cal.is_defect(score) {
                "DEFECT"
            } else {
                "good"
            }
        ),
        None => format!("{kind} {name} {score:.3}"),
    };
    viz::tile(
        &viz::Tile {
            image: &rgb,
            map,
            truth: item.mask.as_deref(),
            predicted: predicted.as_deref(),
            caption,
        },
        range,
        128,
    )
}

/// `text` with its first letter capitalised (a sentence from a phrase).
fn upper_first(text: &str) -> String {
    let mut c = text.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
