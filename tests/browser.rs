//! The page in real headless Chromium: builds `web/dist` (web/build.sh), writes
//! the native anomaly map of the bundled model on a bundled sample (CPU
//! backend, seed 0, image id 0 — what `scoredd detect` computes), then runs
//! `web/test/browser.mjs`, which checks the page's maps on WebGPU (SwiftShader
//! here) and on the CPU-wasm fallback against it, plus bad input and a
//! phone-sized screen, and saves screenshots.
//!
//! Needs node, playwright-core in web/node_modules (`npm ci` in web/),
//! Debian's chromium, the wasm32 target and wasm-bindgen-cli (build.sh installs
//! the last two). `.ci/setup` installs them all. Outside CI (`CI` not "true")
//! the test skips, saying why, when one is missing; under CI that is a failure.
//!
//! Output (screenshots, reference.json, browser-results.json):
//! `$SCOREDD_BROWSER_OUT`, default `<target dir>/browser-test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use scoredd::backend::cpu::CpuBackend;
use scoredd::data::{inputs, ImageSpec};
use scoredd::detect::{anomaly_maps, image_score, DetectOptions};
use scoredd::model_file::ModelFile;
use scoredd::nn::score_model::ScoreModel;

/// The bundled sample the parity check runs on (model-sized, so no resizing).
const SAMPLE: &str = "stripes-cut-000.png";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[path = "support/skip.rs"]
mod skip;
use skip::{skip, under_ci};

/// The target directory this test was built into (CARGO_TARGET_TMPDIR is `<target>/tmp`).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root().join("target"))
}

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What is missing to run the browser test, if anything.
fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if !runs("node", &["--version"]) {
        missing.push("node (apt-get install nodejs)".to_string());
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        missing.push(format!("{chromium} (apt-get install chromium)"));
    }
    if !root().join("web/node_modules/playwright-core").exists() {
        missing.push("playwright-core (cd web && npm ci)".to_string());
    }
    if !under_ci() {
        // build.sh would install these, but that takes minutes: only under CI.
        if !runs("wasm-bindgen", &["--version"]) {
            missing.push(
                "wasm-bindgen (web/build.sh installs it; or cargo install wasm-bindgen-cli)".into(),
            );
        }
        let targets = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !targets
            .lines()
            .any(|l| l.trim() == "wasm32-unknown-unknown")
        {
            missing.push(
                "the wasm32-unknown-unknown target (rustup target add wasm32-unknown-unknown)"
                    .into(),
            );
        }
    }
    missing
}

/// The native map of the bundled model on `SAMPLE`, as JSON for browser.mjs.
fn write_reference(out: &Path) -> PathBuf {
    let file = ModelFile::load(&root().join("web/models/default.safetensors")).unwrap();
    let be = CpuBackend::new();
    let model = ScoreModel::from_file(&be, &file).unwrap();
    let cfg = &file.meta.model;
    let spec = ImageSpec {
        size: cfg.image_size,
        channels: cfg.channels,
    };
    let loaded = inputs(&[root().join("web/samples").join(SAMPLE)], spec).unwrap();
    assert!(loaded.skipped.is_empty(), "{:?}", loaded.skipped);
    let opts = DetectOptions::from_settings(file.meta.detection.clone());
    let maps = anomaly_maps(&be, &model, &[&loaded.images[0]], &[0], &opts).unwrap();
    let map = &maps[0];
    let json = serde_json::json!({
        "sample": SAMPLE,
        "size": cfg.image_size,
        "score": image_score(map),
        "backend": "native cpu",
        "map": map,
    });
    let path = out.join("reference.json");
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    path
}

#[test]
fn page_detects_like_the_cli_on_webgpu_and_cpu_wasm() {
    let missing = missing_tools();
    if !missing.is_empty() {
        skip(&format!("the browser test needs: {}", missing.join("; ")));
        return;
    }
    let out = std::env::var_os("SCOREDD_BROWSER_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("browser-test"));
    std::fs::create_dir_all(&out).unwrap();
    let reference = write_reference(&out);

    // Build into a target dir of its own: the one this test runs from is locked
    // by the running `cargo test`. SCOREDD_WASM_TARGET_DIR overrides it.
    let wasm_target = std::env::var_os("SCOREDD_WASM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("web-wasm"));
    let status = Command::new("bash")
        .arg(root().join("web/build.sh"))
        .env("CARGO_TARGET_DIR", wasm_target)
        .status()
        .expect("run web/build.sh");
    assert!(status.success(), "web/build.sh failed");

    let status = Command::new("node")
        .arg(root().join("web/test/browser.mjs"))
        .arg(&out)
        .env("SCOREDD_REFERENCE", &reference)
        .status()
        .expect("run node web/test/browser.mjs");
    assert!(
        status.success(),
        "the browser test failed (details above; screenshots in {})",
        out.display()
    );
}
