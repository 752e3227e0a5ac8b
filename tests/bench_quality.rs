//! `scoredd bench-quality` on a tiny synthetic MVTec root: both output files
//! with every column, one row per category plus the mean; bad inputs are
//! explained, not panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scoredd::data;
use scoredd::model_file::ModelFile;
use scoredd::synth::{self, SynthConfig};

mod common;

fn scoredd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scoredd"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scoredd-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two 32 px categories: 24 good training images, 4 good and one per
/// defect kind to test on.
fn root(dir: &Path) -> PathBuf {
    let root = dir.join("data");
    synth::generate(
        &root,
        &SynthConfig {
            seed: 5,
            size: 32,
            train: 24,
            test_good: 4,
            test_per_defect: 1,
            categories: vec!["dots".into(), "stripes".into()],
        },
    )
    .unwrap();
    root
}

fn bench(data: &Path, out: &Path) -> Output {
    bench_with(data, out, &[])
}

fn bench_with(data: &Path, out: &Path, extra: &[&str]) -> Output {
    scoredd()
        .args(["--backend", "cpu", "bench-quality", "--data"])
        .arg(data)
        .args(extra)
        .args([
            "--steps",
            "3",
            "--config",
            "tiny",
            "--channels",
            "1",
            "--batch",
            "4",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn bench_quality_writes_a_table_per_category_with_the_mean() {
    let dir = tmpdir("table");
    let data = root(&dir);
    let out_dir = dir.join("out");
    let out = bench(&data, &out_dir);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("quality.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dots", "stripes"]);
    for r in rows.iter().chain([&json["mean"]]) {
        for key in [
            "image_auroc",
            "pixel_auroc",
            "aupro",
            "f1_max",
            "training_steps",
            "training_minutes",
            "detect_ms_per_image",
            "test_images",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        let auc = r["image_auroc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{r}");
        assert!(r["pixel_auroc"].as_f64().is_some(), "{r}");
        assert!(r["detect_ms_per_image"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(rows[0]["training_steps"].as_f64(), Some(3.0));
    assert_eq!(
        rows[0]["test_images"].as_u64(),
        Some(4 + synth::DEFECTS.len() as u64)
    );
    let mean =
        (rows[0]["image_auroc"].as_f64().unwrap() + rows[1]["image_auroc"].as_f64().unwrap()) / 2.0;
    assert!((json["mean"]["image_auroc"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(json["protocol"]
        .as_str()
        .unwrap()
        .contains("3 training steps"));
    let md = std::fs::read_to_string(out_dir.join("quality.md")).unwrap();
    assert!(md.contains("| category | image AUROC | pixel AUROC | AUPRO | F1-max | training steps | training minutes | detection ms/image |"), "{md}");
    assert!(
        md.contains("| dots |") && md.contains("| stripes |") && md.contains("| mean |"),
        "{md}"
    );
    assert!(json["protocol"]
        .as_str()
        .unwrap()
        .contains("learning rate 0.0002"));
    // One category folder given directly is a table of one; its calibrated
    // model is kept on request, at the learning rate asked for.
    let one = dir.join("one");
    let models = dir.join("models");
    let extra = ["--save-models", models.to_str().unwrap(), "--lr", "5e-4"];
    let out = bench_with(&data.join("dots"), &one, &extra);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = std::fs::read_to_string(one.join("quality.md")).unwrap();
    assert!(
        md.contains("| dots |") && !md.contains("| stripes |"),
        "{md}"
    );
    assert!(md.contains("learning rate 0.0005"), "{md}");
    assert_saved_model_matches(&models.join("dots.safetensors"), &one);
    std::fs::remove_dir_all(&dir).ok();
}

/// The kept model is calibrated, trained at the row's step count, and
/// carries the settings the row reports.
fn assert_saved_model_matches(path: &Path, out_dir: &Path) {
    let file = ModelFile::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("quality.json")).unwrap()).unwrap();
    let row = &json["rows"][0];
    assert!(file.meta.calibration.is_some(), "no calibration stored");
    assert!(file.meta.selection.is_some(), "no automatic choice stored");
    assert_eq!(
        file.meta.step as f64,
        row["training_steps"].as_f64().unwrap()
    );
    let settings = row["settings"].as_str().unwrap();
    let d = &file.meta.detection;
    let head = format!("t {:?}, taps {}, σ {}", d.ts, d.taps.join("+"), d.smooth);
    assert!(settings.starts_with(&head), "{settings} vs {head}");
}

#[test]
fn bench_quality_on_mnist_keeps_each_digits_calibrated_model() {
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    if !mnist.is_dir() {
        common::skip(&format!("{} not found", mnist.display()));
        return;
    }
    let dir = tmpdir("mnist");
    let (out_dir, models) = (dir.join("out"), dir.join("models"));
    let out = scoredd()
        .args(["--backend", "cpu", "bench-quality", "--mnist"])
        .arg(&mnist)
        .args(["--digits", "1", "--steps", "3", "--limit", "24", "--out"])
        .arg(&out_dir)
        .arg("--save-models")
        .arg(&models)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_saved_model_matches(&models.join("digit_1.safetensors"), &out_dir);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_quality_explains_bad_inputs() {
    let dir = tmpdir("bad");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = bench(&empty, &dir.join("out"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("holds no MVTec-layout category"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = bench(&dir.join("missing"), &dir.join("out"));
    assert!(!out.status.success() && !stderr(&out).contains("panicked"));
    // A model folder that cannot be made fails before any training.
    let data = root(&dir);
    let blocked = dir.join("a-file");
    std::fs::write(&blocked, b"").unwrap();
    let models = blocked.join("models");
    let extra = ["--save-models", models.to_str().unwrap()];
    let out = bench_with(&data, &dir.join("out2"), &extra);
    let err = stderr(&out);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("a-file") && !err.contains("category dots"),
        "{err}"
    );
    for args in [
        vec!["--mnist", "x", "--digits", "12"],
        vec!["--mnist", "x", "--minutes", "0"],
        vec!["--minutes", "1"],
    ] {
        let out = scoredd()
            .args(["--backend", "cpu", "bench-quality"])
            .args(&args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            !out.status.success() && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(err.contains("error"), "{args:?}: {err}");
    }
    assert!(!dir.join("out").exists(), "no table written on failure");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mnist_halves_split_by_position_parity() {
    assert_eq!(data::mnist_halves(5), (vec![0, 2, 4], vec![1, 3]));
    assert_eq!(data::mnist_halves(0), (vec![], vec![]));
}
