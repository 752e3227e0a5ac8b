//! What every front end (CLI, reports, browser) says about a detection in
//! the same words: the settings in one line, and a map's score, normalised
//! score, verdict and mask under a model's calibration.

use crate::backend::Sampler;
use crate::config::{Calibration, DetectionSettings, Selection, VerdictReading};
use crate::detect::{self, DetectOptions};

/// One line describing the settings in use.
pub fn describe(o: &DetectOptions) -> String {
    let s = &o.settings;
    let ts: Vec<String> = s.ts.iter().map(|t| format!("{t}")).collect();
    let sampler = match s.sampler {
        Sampler::Ode => "ode",
        Sampler::Sde => "sde",
    };
    let profile = match crate::detect::profile_in_use(s, o.mode) {
        Some(_) => ", normal profile",
        None => "",
    };
    let score = match detect::verdict_in_use(s, o.mode) {
        Some(v) => verdict_words(&v),
        None => reading(s.score_top),
    };
    format!(
        "mode {}, t {{{}}}, r {}, {sampler} sampler, taps {}, smoothing sigma {} px{profile}, image score {score}{}",
        o.mode.name(),
        ts.join(","),
        s.r,
        s.taps.join("+"),
        s.smooth,
        augmentation(s.draws, s.flip)
    )
}

/// Objective `both`: the verdict reading's search, in words.
pub fn verdict_choice_words(v: &Selection, settings: &DetectionSettings) -> String {
    let what = match &settings.verdict {
        Some(r) => format!("image score {}", verdict_words(r)),
        None => "image score read from the map: no reading of its own beat it".into(),
    };
    format!(
        "verdict ({} combinations at the map's times, ranked by image AUROC): {what} → image AUROC {:.3}, pixel AUROC {:.3} (the map's own reading: {:.3})",
        v.candidates, v.chosen_image_auroc, v.chosen_pixel_auroc, v.default_image_auroc
    )
}

/// A verdict reading in words (after "image score ").
pub fn verdict_words(v: &VerdictReading) -> String {
    format!(
        "from its own reading of the same runs (taps {}, smoothing sigma {} px{}, {})",
        v.taps.join("+"),
        v.smooth,
        if v.profile.is_some() {
            ", normal profile"
        } else {
            ""
        },
        reading(v.score_top)
    )
}

/// The extra runs averaged into each map, in words ("" for the default one run).
pub fn augmentation(draws: usize, flip: bool) -> String {
    let mut out = String::new();
    if draws > 1 {
        out += &format!(", {draws} noise draws averaged");
    }
    if flip {
        out += ", averaged with the mirrored image";
    }
    out
}

/// The search's stage 6 in words: the runs averaged per map, their
/// estimated time, and every candidate's AUROC (or that it was over the
/// budget). None when the selection has no stage-6 record.
pub fn augment_words(sel: &Selection, settings: &DetectionSettings) -> Option<String> {
    if sel.augment_trial.is_empty() {
        return None;
    }
    let ms = |v: Option<f64>| v.map_or("? ms".to_string(), |m| format!("{m:.1} ms"));
    let name = |d: usize, f: bool| format!("{d} draw(s){}", if f { " + flip" } else { "" });
    let tried: Vec<String> = sel
        .augment_trial
        .iter()
        .map(|t| {
            let what = name(t.draws, t.flip);
            match t.auroc {
                Some(a) => format!("{what}: {a:.3} ({})", ms(t.ms_per_image)),
                None => format!("{what}: over budget ({})", ms(t.ms_per_image)),
            }
        })
        .collect();
    let chosen = sel
        .augment_trial
        .iter()
        .find(|t| (t.draws, t.flip) == (settings.draws, settings.flip))
        .and_then(|t| t.ms_per_image);
    let rule = match sel.budget_ms {
        Some(b) => format!("budget {b} ms/image"),
        None => "no budget: a costlier setting must gain 0.002 AUROC per doubling of time".into(),
    };
    Some(format!(
        "maps averaged over {}, estimated {} per image on the calibrating backend ({rule}); {} of each tried: {}",
        name(settings.draws, settings.flip),
        ms(chosen),
        sel.objective.auroc_words(),
        tried.join(", ")
    ))
}

/// How an image score is read, in words.
pub fn reading(score_top: f32) -> String {
    if score_top > 0.0 {
        format!("mean of the top {}% of the map", score_top * 100.0)
    } else {
        "the map's maximum".into()
    }
}

/// An image's verdict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// The raw image score (see [`detect::Detections`]).
    pub score: f64,
    /// The score mapped to [0, 1] with the threshold at 0.5; `None` for an
    /// uncalibrated model.
    pub normalised: Option<f64>,
    /// Whether the image is called defective; `None` for an uncalibrated model.
    pub defect: Option<bool>,
}

/// The verdict on an image's raw score under a model's calibration (if it
/// has one).
pub fn judge(score: f32, calibration: Option<&Calibration>) -> Verdict {
    let score = score as f64;
    Verdict {
        score,
        normalised: calibration.map(|c| c.normalise(score)),
        defect: calibration.map(|c| c.is_defect(score)),
    }
}

/// The binary defect mask (0/1): pixels above the map's threshold
/// ([`Calibration::map_scale`]: a value no held-out normal image's map
/// reached) and within half of the map's peak — the second rule keeps a
/// strong defect's mask to its core instead of its halo.
pub fn defect_mask(map: &[f32], threshold: f64) -> Vec<u8> {
    let cut = threshold.max(0.5 * detect::image_score(map) as f64);
    map.iter().map(|&v| u8::from(v as f64 >= cut)).collect()
}
