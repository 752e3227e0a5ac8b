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
