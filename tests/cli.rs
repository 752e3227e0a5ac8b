//! The `scoredd` binary as a user runs it.

use std::process::Command;

fn scoredd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scoredd"))
}

#[test]
fn toy_prints_the_experiment_and_writes_a_png() {
    let dir = std::env::temp_dir().join(format!("scoredd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("toy.png");
    let out = scoredd()
        .args(["toy", "--backend", "cpu", "--draws", "64", "--out"])
        .arg(&png)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = stdout
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("ode  t =") || l.trim_start().starts_with("sde  t =")
        })
        .count();
    assert_eq!(rows, 8, "one line per (sampler, t, r):\n{stdout}");
    assert!(stdout.contains("other mode"), "{stdout}");
    let img = image::open(&png).expect("a readable PNG");
    assert!(img.width() > 500 && img.height() > 200);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_arguments_are_explained_not_panics() {
    let out = scoredd()
        .args(["toy", "--backend", "cpu", "--draws", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--draws must be at least 1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let out = scoredd()
        .args(["toy", "--backend", "quantum"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

#[test]
fn unwritable_output_is_an_error() {
    let out = scoredd()
        .args([
            "toy",
            "--backend",
            "cpu",
            "--draws",
            "8",
            "--out",
            "/nonexistent-dir/x.png",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
}

/// A folder of `n` small PNGs (gradients with a disc), plus the temp dir.
fn image_folder(tag: &str, n: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("scoredd-cli-{tag}-{}", std::process::id()));
    let imgs = dir.join("good");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..n {
        let img = image::GrayImage::from_fn(40, 40, |x, y| {
            let d = (x as i32 - 10 - i as i32 * 3).pow(2) + (y as i32 - 20).pow(2);
            image::Luma([(60 + x * 3 + if d < 36 { 80 } else { 0 }) as u8])
        });
        img.save(imgs.join(format!("{i:03}.png"))).unwrap();
    }
    dir
}

#[test]
fn train_resume_and_sample_from_the_command_line() {
    let dir = image_folder("train", 6);
    let model = dir.join("m.safetensors");
    let train = |steps: &str, extra: &[&str]| {
        scoredd()
            .args([
                "train",
                "--backend",
                "cpu",
                "--config",
                "tiny",
                "--batch",
                "4",
                "--log-every",
                "2",
                "--checkpoint-every",
                "3",
                "--steps",
                steps,
                "--data",
            ])
            .arg(dir.join("good"))
            .arg("--out")
            .arg(&model)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = train("4", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(model.exists() && dir.join("m.log.csv").exists() && dir.join("m.loss.png").exists());
    let curve = image::open(dir.join("m.loss.png")).expect("a readable loss curve");
    assert_eq!((curve.width(), curve.height()), (800, 450));
    let resume = train("8", &["--resume", model.to_str().unwrap()]);
    assert!(
        resume.status.success(),
        "{}",
        String::from_utf8_lossy(&resume.stderr)
    );
    assert!(String::from_utf8_lossy(&resume.stderr).contains("resuming"));
    let f = scoredd::model_file::ModelFile::load(&model).unwrap();
    assert_eq!(f.meta.step, 8);
    let log = std::fs::read_to_string(dir.join("m.log.csv")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("8,")).count(),
        1,
        "{log}"
    );
    let png = dir.join("s.png");
    let s = scoredd()
        .args([
            "sample",
            "--backend",
            "cpu",
            "--n",
            "4",
            "--steps",
            "5",
            "--model",
        ])
        .arg(&model)
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    assert!(image::open(&png).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn training_on_no_usable_images_is_an_explained_error() {
    let dir = std::env::temp_dir().join(format!("scoredd-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    let out = scoredd()
        .args([
            "train",
            "--backend",
            "cpu",
            "--config",
            "tiny",
            "--steps",
            "2",
            "--data",
        ])
        .arg(&dir)
        .arg("--out")
        .arg(dir.join("m.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
    assert!(
        !dir.join("m.safetensors").exists(),
        "no model may be written without training data"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_save_killed_before_its_rename_leaves_the_old_model_intact() {
    // ModelFile::save writes <out>.safetensors.tmp, then renames it over <out>.
    // A process killed between the two leaves a stray .tmp and the previous model.
    let dir = image_folder("atomic", 4);
    let model = dir.join("m.safetensors");
    let out = scoredd()
        .args([
            "train",
            "--backend",
            "cpu",
            "--config",
            "tiny",
            "--batch",
            "2",
            "--steps",
            "2",
            "--data",
        ])
        .arg(dir.join("good"))
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = std::fs::read(&model).unwrap();
    std::fs::write(dir.join("m.safetensors.tmp"), &before[..before.len() / 3]).unwrap();
    assert_eq!(
        scoredd::model_file::ModelFile::load(&model)
            .unwrap()
            .meta
            .step,
        2,
        "the old model still loads"
    );
    // Resuming works and the next save replaces the stray temp file.
    let out = scoredd()
        .args(["train", "--backend", "cpu", "--steps", "3", "--data"])
        .arg(dir.join("good"))
        .arg("--out")
        .arg(&model)
        .arg("--resume")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        scoredd::model_file::ModelFile::load(&model)
            .unwrap()
            .meta
            .step,
        3
    );
    assert!(!dir.join("m.safetensors.tmp").exists());
    std::fs::remove_dir_all(&dir).ok();
}
