//! End to end, as a user runs it: `scoredd demo` synthesises the `stripes`
//! textures (seed 0), trains the `tiny` model for 500 steps on the CPU,
//! chooses {t} and taps on synthetic defects, calibrates and evaluates; the
//! report must show image and pixel AUROC ≥ 0.90. Then `scoredd detect` on
//! good, defective, odd-sized and broken inputs with the model it produced.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scoredd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scoredd"))
}

fn ok(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what} should have failed");
    assert!(
        err.contains("error:") && !err.contains("panicked"),
        "{what}: {err}"
    );
    err
}

fn first_file(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.remove(0)
}

#[test]
fn demo_reaches_the_accuracy_bar_and_detect_handles_bad_input() {
    let dir = std::env::temp_dir().join(format!("scoredd-e2e-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let out = scoredd()
        .args([
            "demo",
            "--backend",
            "cpu",
            "--steps",
            "500",
            "--seed",
            "0",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = ok(&out, "demo");
    assert!(stdout.contains("report.md"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let image = report["image_auroc"].as_f64().unwrap();
    let pixel = report["pixel_auroc"].as_f64().unwrap();
    assert!(
        image >= 0.90 && pixel >= 0.90,
        "image AUROC {image}, pixel AUROC {pixel}"
    );
    for kind in ["cut", "scratch", "spot", "stain"] {
        assert!(
            report["per_defect"][kind]["image_auroc"].as_f64().is_some(),
            "{kind}"
        );
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("| **all** |") && md.contains("chosen automatically"),
        "{md}"
    );
    let gallery = image::open(dir.join("gallery.png")).unwrap();
    assert!(gallery.width() > 400 && gallery.height() > 200);
    let model = dir.join("model.safetensors");

    // The reconstruction ablation and the SDE sampler through `eval`, on a subset.
    for (mode, sampler) in [("reconstruction", "ode"), ("no-scales", "sde")] {
        let out_dir = dir.join(mode);
        let out = scoredd()
            .args([
                "eval",
                "--backend",
                "cpu",
                "--mode",
                mode,
                "--sampler",
                sampler,
            ])
            .args([
                "--ts",
                "0.02",
                "--limit",
                "10",
                "--category",
                "stripes",
                "--data",
            ])
            .arg(dir.join("data"))
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        ok(&out, mode);
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(r["images"], 10, "{mode}");
        assert!(r["settings"].as_str().unwrap().contains(mode), "{mode}");
        assert!(r["pixel_auroc"].as_f64().is_some(), "{mode}");
    }

    // detect: a good image, a defective one, an odd-sized copy, and broken files in a folder.
    let data = dir.join("data").join("stripes");
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::copy(first_file(&data.join("test/good")), inputs.join("good.png")).unwrap();
    std::fs::copy(first_file(&data.join("test/spot")), inputs.join("spot.png")).unwrap();
    image::open(inputs.join("spot.png"))
        .unwrap()
        .resize_exact(100, 80, image::imageops::FilterType::Triangle)
        .save(inputs.join("spot-odd-size.png"))
        .unwrap();
    std::fs::write(inputs.join("notes.png"), b"not an image").unwrap();
    let png = std::fs::read(inputs.join("good.png")).unwrap();
    std::fs::write(inputs.join("cut-short.png"), &png[..png.len() / 2]).unwrap();
    let maps = dir.join("maps");
    let out = scoredd()
        .args(["detect", "--backend", "cpu", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&maps)
        .arg(&inputs)
        .output()
        .unwrap();
    let stdout = ok(&out, "detect");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped") && err.contains("notes.png") && err.contains("cut-short.png"),
        "{err}"
    );
    assert!(
        err.contains("spot-odd-size.png is 100×80; resized"),
        "{err}"
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let by_name = |n: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().unwrap().ends_with(n))
            .unwrap()
    };
    assert_eq!(by_name("spot.png")["verdict"], "defect", "{stdout}");
    assert_eq!(by_name("good.png")["verdict"], "good", "{stdout}");
    for l in &lines {
        let n = l["normalized"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&n));
        assert!(Path::new(l["overlay"].as_str().unwrap()).is_file());
        let mask = image::open(l["mask"].as_str().unwrap()).unwrap().to_luma8();
        assert_eq!(mask.dimensions(), (32, 32));
    }
    // The defect's mask is not empty, the good image's is.
    let lit = |n: &str| {
        image::open(by_name(n)["mask"].as_str().unwrap())
            .unwrap()
            .to_luma8()
            .pixels()
            .filter(|p| p.0[0] > 0)
            .count()
    };
    assert!(lit("spot.png") > 0 && lit("good.png") == 0);

    // Tiled: every image at its own size in 32 px tiles (64×64, and the
    // odd-sized one at 100×80), masks and overlays of that size; bad files
    // skipped.
    let tiled = |extra: &[&str], input: &Path| {
        scoredd()
            .args(["detect", "--backend", "cpu", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(dir.join("tiled"))
            .args(extra)
            .arg(input)
            .output()
            .unwrap()
    };
    let out = tiled(&["--tile", "32"], &inputs);
    let stdout = ok(&out, "tiled detect");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for l in &lines {
        let (w, h) = image::image_dimensions(l["path"].as_str().unwrap()).unwrap();
        let mask = image::open(l["mask"].as_str().unwrap()).unwrap();
        assert_eq!((mask.width(), mask.height()), (w, h));
        let overlay = image::open(l["overlay"].as_str().unwrap()).unwrap();
        let zoom = 256 / w.max(h);
        assert_eq!((overlay.width(), overlay.height()), (w * zoom, h * zoom));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in 32 px tiles overlapping by 8 px"), "{err}");
    assert!(
        err.contains("skipped") && err.contains("notes.png") && err.contains("cut-short.png"),
        "{err}"
    );
    let odd = inputs.join("spot-odd-size.png");
    let out = tiled(&["--tile", "128"], &odd);
    assert!(failed(&out, "a tile larger than the image").contains("smaller than one 128 px tile"));
    let out = tiled(&["--tile", "32", "--tile-overlap", "32"], &odd);
    assert!(failed(&out, "an overlap of a whole tile").contains("overlap must be smaller"));

    verdict_reading_through_calibrate_and_detect(&dir, &model, &inputs);
    tiled_calibration_through_the_cli(&dir, &model, &inputs);

    // Only bad inputs, a missing path, a model of other channels: explained errors.
    let out = scoredd()
        .args(["detect", "--backend", "cpu", "--model"])
        .arg(&model)
        .arg(inputs.join("notes.png"))
        .output()
        .unwrap();
    assert!(failed(&out, "a non-image").contains("no usable images"));
    let out = scoredd()
        .args(["detect", "--backend", "cpu", "--model"])
        .arg(&model)
        .arg(dir.join("nope.png"))
        .output()
        .unwrap();
    assert!(failed(&out, "a missing file").contains("does not exist"));
    // The header (JSON inside a JSON string, hence the backslash) says 3
    // channels, the weights are for 1; same byte length, so the file parses.
    let mut bytes = std::fs::read(&model).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"channels\\\":1")
        .expect("channels in the header");
    bytes[at + 11] = b'3';
    let rgb = dir.join("rgb.safetensors");
    std::fs::write(&rgb, bytes).unwrap();
    let out = scoredd()
        .args(["detect", "--backend", "cpu", "--model"])
        .arg(&rgb)
        .arg(inputs.join("good.png"))
        .output()
        .unwrap();
    let err = failed(&out, "a model whose weights do not fit its channels");
    assert!(err.contains("rgb.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A model whose image score has a reading of its own (as `calibrate
/// --objective both` stores it): `calibrate` sets the threshold on that
/// reading's scores and keeps the map's own scale apart, and `detect` prints
/// the reading's score — the library's, for the same image — with a mask.
fn verdict_reading_through_calibrate_and_detect(dir: &Path, model: &Path, inputs: &Path) {
    use scoredd::backend::cpu::CpuBackend;
    use scoredd::data::{self, ImageSpec};
    use scoredd::detect::{self, DetectOptions};
    use scoredd::model_file::{ModelFile, VerdictReading};
    use scoredd::nn::score_model::ScoreModel;

    let mut file = ModelFile::load(model).unwrap();
    let map_taps = file.meta.detection.taps.clone();
    let tap = ["down.0.block.0", "up.0"]
        .into_iter()
        .find(|t| !map_taps.iter().any(|m| m == t))
        .unwrap();
    file.meta.detection.verdict = Some(VerdictReading {
        taps: vec![tap.to_string()],
        smooth: 1.0,
        profile: None,
        score_top: 0.01,
    });
    let path = dir.join("verdict.safetensors");
    file.save(&path).unwrap();
    let out = calibrate_stripes(dir, &path, &[]);
    ok(&out, "calibrate a verdict model");
    let file = ModelFile::load(&path).unwrap();
    let cal = file.meta.calibration.clone().unwrap();
    let map_scale = cal.map.as_deref().expect("the map's own scale is kept");
    assert_ne!(map_scale.threshold, cal.threshold);

    let out = scoredd()
        .args(["detect", "--backend", "cpu", "--model"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("verdict-maps"))
        .arg(inputs.join("spot.png"))
        .output()
        .unwrap();
    let line: serde_json::Value =
        serde_json::from_str(ok(&out, "detect, verdict model").trim()).unwrap();
    let be = CpuBackend::new();
    let m = ScoreModel::from_file(&be, &file).unwrap();
    let spec = ImageSpec {
        size: 32,
        channels: 1,
    };
    let img = data::inputs(&[inputs.join("spot.png")], spec).unwrap();
    let o = DetectOptions::from_settings(file.meta.detection.clone());
    let found = detect::detections(&be, &m, &[&img.images[0]], &[0], &o).unwrap();
    let printed = line["score"].as_f64().unwrap();
    assert!(
        (printed - found.scores[0] as f64).abs() <= 1e-6 * printed.abs(),
        "detect printed {printed}, the verdict reading gives {}",
        found.scores[0]
    );
    assert_ne!(
        found.scores[0],
        detect::read_score(&found.maps[0], &o.settings)
    );
    assert!(
        Path::new(line["mask"].as_str().unwrap()).is_file(),
        "{line}"
    );
}

/// `calibrate --tile 32`: the threshold is set on tiles and said so; `detect
/// --tile 32` then has no mismatch to report, `detect` on whole images and
/// `detect --tile` on the untiled model say what the threshold was set on.
fn tiled_calibration_through_the_cli(dir: &Path, model: &Path, inputs: &Path) {
    let path = dir.join("tiled.safetensors");
    std::fs::copy(model, &path).unwrap();
    let out = calibrate_stripes(dir, &path, &["--tile", "32"]);
    let said = ok(&out, "calibrate --tile");
    assert!(
        said.contains("set on tiled detection") && said.contains("32 px tiles"),
        "{said}"
    );
    let detect = |model: &Path, extra: &[&str]| {
        let out = scoredd()
            .args(["detect", "--backend", "cpu", "--model"])
            .arg(model)
            .arg("--out")
            .arg(dir.join("tiled-cal"))
            .args(extra)
            .arg(inputs.join("spot-odd-size.png"))
            .output()
            .unwrap();
        ok(&out, "detect after a tiled calibration");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = detect(&path, &["--tile", "32"]);
    assert!(!err.contains("threshold was set"), "{err}");
    let err = detect(&path, &[]);
    assert!(
        err.contains("set on 32 px tiles") && err.contains("--tile 32"),
        "{err}"
    );
    let err = detect(model, &["--tile", "32"]);
    assert!(
        err.contains("set on whole images") && err.contains("calibrate --tile 32"),
        "{err}"
    );
    let err = detect(&path, &["--tile", "32", "--tile-overlap", "4"]);
    assert!(err.contains("not these"), "{err}");
}

/// `scoredd calibrate` of `model` on the demo's stripes, with `extra` flags.
fn calibrate_stripes(dir: &Path, model: &Path, extra: &[&str]) -> Output {
    scoredd()
        .args(["calibrate", "--backend", "cpu", "--category", "stripes"])
        .args(extra)
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--model")
        .arg(model)
        .output()
        .unwrap()
}
