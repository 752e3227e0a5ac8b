//! The verdict reading (`calibrate --objective both`): an image score read
//! from taps of its own over the same network runs as the map. The map must
//! stay exactly the map, the score must be exactly what those taps read,
//! calibration must keep the map's own scale for masks, the search must keep
//! the pixel objective's map, and tiles and old model files must agree.

mod common;

use common::{cpu, gpu, nudged_tiny_model as model};
use scoredd::calibrate::{self, Objective, SelectOptions};
use scoredd::detect::{self, DetectOptions, Mode};
use scoredd::model_file::{Calibration, DetectionSettings, VerdictReading};
use scoredd::tiles::{tiled_map, Tiling};
use scoredd::Error;

/// Smooth 32×32 gray images in [0, 1], the last with a bright square.
fn images(n: usize) -> Vec<Vec<f32>> {
    let mut v = common::smooth_images(n);
    if let Some(last) = v.last_mut() {
        for y in 12..18 {
            last[y * 32 + 10..y * 32 + 16].fill(0.95);
        }
    }
    v
}

fn refs(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(|x| x.as_slice()).collect()
}

/// The map reads up.0 at its maximum; the verdict reads down.1's first
/// block, smoothed, by its top 5 %.
fn settings() -> DetectionSettings {
    DetectionSettings {
        ts: vec![0.05, 0.1],
        taps: vec!["up.0".into()],
        verdict: Some(VerdictReading {
            taps: vec!["down.1.block.0".into()],
            smooth: 1.0,
            profile: None,
            score_top: 0.05,
        }),
        ..Default::default()
    }
}

/// Maps of a verdict model are the maps without it, bit for bit, and its
/// scores are exactly the scores of detecting with the verdict's taps,
/// smoothing and reading as the map's: on both backends, the GPU within the
/// detector's parity bound (tests/detect.rs, gpu_maps_match_cpu_maps: 1e-2
/// of a map is far above the measured 1e-3).
#[test]
fn a_verdict_reading_scores_from_its_own_taps_and_leaves_the_map_alone() {
    let imgs = images(3);
    let with = DetectOptions::from_settings(settings());
    let without = DetectOptions::from_settings(DetectionSettings {
        verdict: None,
        ..settings()
    });
    let v = settings().verdict.unwrap();
    let as_map = DetectOptions::from_settings(DetectionSettings {
        taps: v.taps.clone(),
        smooth: v.smooth,
        score_top: v.score_top,
        verdict: None,
        ..settings()
    });
    let c = cpu();
    let m = model(&c);
    let run = |o: &DetectOptions| detect::detections(&c, &m, &refs(&imgs), &[0, 1, 2], o).unwrap();
    let (a, b, own) = (run(&with), run(&without), run(&as_map));
    assert_eq!(a.maps, b.maps, "the verdict reading changed the map");
    assert_eq!(a.scores, own.scores, "not the verdict taps' own reading");
    assert_eq!(a.verdict_maps, own.maps);
    assert_ne!(a.scores, b.scores, "the verdict reading made no difference");
    assert!(b.verdict_maps.is_empty());
    // The score of a map without one is its own reading.
    for (map, s) in b.maps.iter().zip(&b.scores) {
        assert_eq!(*s, detect::read_score(map, &without.settings));
    }
    // Ablations score their maps: the verdict is Score-DD's.
    let ablation = DetectOptions {
        mode: Mode::NoScales,
        ..with.clone()
    };
    let nos = run(&ablation);
    for (map, s) in nos.maps.iter().zip(&nos.scores) {
        assert_eq!(*s, detect::read_score(map, &with.settings));
    }
    if let Some(g) = gpu() {
        let mg = model(&g);
        let ga = detect::detections(&g, &mg, &refs(&imgs), &[0, 1, 2], &with).unwrap();
        for (x, y) in ga.scores.iter().zip(&a.scores) {
            assert!((x - y).abs() <= 1e-2 * y.abs(), "GPU score {x} vs CPU {y}");
        }
    }
}

/// A verdict tap the model lacks, or a bad verdict smoothing or fraction,
/// is refused before anything runs.
#[test]
fn bad_verdict_readings_are_refused() {
    let c = cpu();
    let m = model(&c);
    let img = images(1);
    let with = |f: &dyn Fn(&mut VerdictReading)| {
        let mut s = settings();
        f(s.verdict.as_mut().unwrap());
        DetectOptions::from_settings(s)
    };
    for (o, words) in [
        (
            with(&|v| v.taps = vec!["nope".into()]),
            "unknown feature map",
        ),
        (with(&|v| v.taps.clear()), "at least one tap"),
        (with(&|v| v.smooth = -1.0), "smoothing"),
        (with(&|v| v.score_top = 2.0), "top fraction"),
    ] {
        match detect::detections(&c, &m, &refs(&img), &[0], &o) {
            Err(Error::Invalid(msg)) => assert!(msg.contains(words), "{msg}"),
            other => panic!("expected a refusal mentioning {words:?}, got {other:?}"),
        }
    }
}

/// Tiled detection blends the verdict maps as it blends the maps and reads
/// the score from the whole: one tile covering the image is one pass.
#[test]
fn one_tile_with_a_verdict_reading_is_one_pass() {
    let c = cpu();
    let m = model(&c);
    let img = images(2).pop().unwrap();
    let o = DetectOptions::from_settings(settings());
    let tiling = Tiling {
        tile: 32,
        overlap: 8,
        batch: 1,
    };
    let tiled = tiled_map(&c, &m, &img, 32, 32, &o, tiling, &mut |_, _| {}).unwrap();
    let whole = detect::detections(&c, &m, &[&img], &[0], &o).unwrap();
    assert_eq!((&tiled.maps, &tiled.scores), (&whole.maps, &whole.scores));
}

/// Objective `both`: the map is exactly the pixel objective's choice, and
/// the verdict (when kept) reads the map's own times, beats the map's own
/// reading on image AUROC, and is recorded with its search. Calibrating a
/// verdict model keeps the map's scale apart for masks.
#[test]
fn objective_both_keeps_the_pixel_map_and_adds_a_verdict_with_its_own_scale() {
    let be = cpu();
    let m = model(&be);
    let normals = images(4);
    let base = m.meta.detection.clone();
    let grid = SelectOptions {
        t_grid: vec![0.025, 0.05, 0.1, 0.2],
        max_times: 2,
        max_taps: 2,
        batch: 4,
        ..Default::default()
    };
    let select = |objective| {
        let o = SelectOptions {
            objective,
            ..grid.clone()
        };
        calibrate::select_settings(&be, &m, &normals, &base, &o, &mut |_, _, _| {}).unwrap()
    };
    let (pixel, _) = select(Objective::Pixel);
    let (both, sel) = select(Objective::Both);
    assert_eq!(
        DetectionSettings {
            verdict: None,
            ..both.clone()
        },
        pixel
    );
    assert_eq!(sel.objective, Objective::Both);
    let v = sel
        .verdict
        .as_deref()
        .expect("the verdict search is recorded");
    assert_eq!(v.objective, Objective::Image);
    assert!(v.chosen_image_auroc >= v.default_image_auroc);
    assert_eq!(v.default_ts, both.ts);
    assert!(
        v.augment_trial.is_empty(),
        "the verdict runs no network of its own"
    );
    match &both.verdict {
        Some(r) => {
            assert!(v.chosen_image_auroc > v.default_image_auroc);
            assert!(r.profile.as_ref().is_none_or(|p| p.ts == both.ts));
        }
        None => assert_eq!(v.chosen_image_auroc, v.default_image_auroc),
    }

    // Calibration: the threshold on the verdict's scores, the map's scale
    // from the same maps read as the map reads them.
    let opts = DetectOptions::from_settings(settings());
    let (cal, scores) =
        calibrate::calibrate_on_normals(&be, &m, &normals, &opts, 2, 0.75, &mut |_| {}).unwrap();
    // In the same batches: a map may differ in its last bits between batch sizes.
    let found =
        detect::detections_batched(&be, &m, &refs(&normals), &[0; 4], &opts, 2, &mut |_| {})
            .unwrap();
    let expect: Vec<f64> = found.scores.iter().map(|&s| s as f64).collect();
    assert_eq!(scores, expect);
    assert_eq!(cal, with_map(&found, &opts.settings, 0.75));
    let plain = DetectOptions::from_settings(DetectionSettings {
        verdict: None,
        ..settings()
    });
    let (cal, _) =
        calibrate::calibrate_on_normals(&be, &m, &normals, &plain, 2, 0.75, &mut |_| {}).unwrap();
    assert!(cal.map.is_none());
    assert!(std::ptr::eq(cal.map_scale(), &cal));
}

/// The calibration `calibrate_on_normals` should give a verdict model.
fn with_map(found: &detect::Detections, s: &DetectionSettings, q: f64) -> Calibration {
    let scores: Vec<f64> = found.scores.iter().map(|&v| v as f64).collect();
    let maps: Vec<f64> = found
        .maps
        .iter()
        .map(|m| detect::read_score(m, s) as f64)
        .collect();
    let mut cal = calibrate::calibration_from_scores(&scores, q).unwrap();
    let map = calibrate::calibration_from_scores(&maps, q).unwrap();
    assert_ne!(
        cal.threshold, map.threshold,
        "the two scales should differ here"
    );
    cal.map = Some(Box::new(map));
    cal
}

/// Model files written before the verdict reading load without one and
/// score as before; one with it survives a round trip.
#[test]
fn settings_without_a_verdict_load_as_before_and_with_one_round_trip() {
    let old = serde_json::to_value(DetectionSettings::default()).unwrap();
    assert!(old.get("verdict").is_none(), "None is not written");
    let back: DetectionSettings = serde_json::from_value(old).unwrap();
    assert_eq!(back.verdict, None);
    let s = settings();
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<DetectionSettings>(&text).unwrap(), s);
    let cal = serde_json::json!({"threshold": 1.0, "low": 0.5, "high": 2.0});
    let cal: Calibration = serde_json::from_value(cal).unwrap();
    assert!(cal.map.is_none());
}
