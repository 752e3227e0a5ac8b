//! Score-DD detection speed: `cargo bench --bench detect`.
//!
//! The `small` model (64 px, RGB, VE) with T = 5 start times and r = 1 —
//! T·(r+2) = 15 network evaluations per image — for 1 image and a batch of 8,
//! on the CPU backend and the GPU backend (lavapipe on a machine without a
//! GPU), next to the PyTorch reference's `Score-DD T5 r1` figures
//! (`PEER_RESULTS`, default ../shared/peer/results_cpu.json, the faster of its malloc modes;
//! measure it on the same machine for a fair ratio). Target: ≤ 1.0× PyTorch.
//!
//! Then the peak resident memory of detecting one 256 px image with the
//! paper's `ncsnpp256`, in a child process of its own (about 1 minute on 2
//! cores; `BENCH_SKIP_NCSNPP=1` skips it). Target: within 4 GB.
//! `BENCH_SKIP_GPU=1` stops after the CPU figures; `BENCH_SKIP_CPU=1` times
//! the GPU backend only.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use scoredd::backend::cpu::CpuBackend;
use scoredd::backend::gpu::GpuBackend;
use scoredd::backend::NnBackend;
use scoredd::detect::{self, DetectOptions};
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{TimeEmbedding, UNetConfig};
use scoredd::rng::RngStream;
use scoredd::sde::SdeConfig;

fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

#[path = "support/peer.rs"]
mod peer;

#[path = "support/flags.rs"]
mod flags;

/// The reference's `small` figure for `key`, in ms (faster malloc mode).
fn peer_ms(key: &str) -> Option<f64> {
    peer::peer_ms("small", key).map(|(ms, _)| ms)
}

/// Milliseconds to detect `b` images (maps read back to the host).
fn time_detect<B: NnBackend>(be: &B, b: usize, reps: usize) -> f64 {
    let cfg = UNetConfig::small(3, TimeEmbedding::Fourier);
    let m = ScoreModel::new(be, cfg, SdeConfig::ve(50.0), 0).unwrap();
    let n = 3 * 64 * 64;
    let imgs: Vec<Vec<f32>> = (0..b)
        .map(|i| {
            let mut v = vec![0.0; n];
            RngStream::new(1, i as u64).fill_uniform(0, &mut v);
            v
        })
        .collect();
    let refs: Vec<&[f32]> = imgs.iter().map(|v| v.as_slice()).collect();
    let opts = DetectOptions::from_settings(m.meta.detection.clone());
    let ids = vec![0; b];
    median(reps, || {
        detect::anomaly_maps(be, &m, &refs, &ids, &opts).unwrap();
    }) * 1e3
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// [`ncsnpp256_peak`] in a child process (this bench, re-run with
/// `BENCH_NCSNPP_ONLY=1`): its peak resident memory is then its own, and the
/// 2 GB it used do not shape the memory the `small` figures run in.
fn ncsnpp256_peak_in_child() {
    if flags::on("BENCH_SKIP_NCSNPP") {
        return;
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    let out = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("BENCH_NCSNPP_ONLY", "1")
        .output()
        .expect("running the ncsnpp256 child");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        println!(
            "ncsnpp256: the child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The paper's MVTec model at 256 px: one image, T 5, r 1, on the CPU, in a
/// process of its own (the bound: 4 GB).
fn ncsnpp256_peak(cpu: &CpuBackend) {
    let before = peak_rss_mib().unwrap_or(f64::NAN);
    let cfg = UNetConfig::ncsnpp256(3, TimeEmbedding::Fourier);
    let m = ScoreModel::new(cpu, cfg, SdeConfig::ve(348.0), 0).unwrap();
    let mut img = vec![0.0; 3 * 256 * 256];
    RngStream::new(1, 0).fill_uniform(0, &mut img);
    let opts = DetectOptions::from_settings(m.meta.detection.clone());
    let t = Instant::now();
    detect::anomaly_maps(cpu, &m, &[&img], &[0], &opts).unwrap();
    let peak = peak_rss_mib().unwrap_or(f64::NAN);
    println!(
        "ncsnpp256, 256 px, 1 image, T 5, r 1 (cpu): {:.1} s, peak resident {peak:.0} MiB (model built at {before:.0} MiB; bound 4096 MiB)",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    if flags::on("BENCH_NCSNPP_ONLY") {
        return ncsnpp256_peak(&CpuBackend::new());
    }
    println!("Score-DD, small (64 px, RGB), T 5, r 1      1 image ms   8 images ms   images/s (8)");
    let row = |name: &str, b1: f64, b8: f64| {
        println!("{name:<42} {b1:>10.1} {b8:>13.1} {:>12.2}", 8e3 / b8);
    };
    let cpu = CpuBackend::new();
    // BENCH_SKIP_CPU=1: the GPU rows only (minutes less on a software adapter).
    let cpu_ms = (!flags::on("BENCH_SKIP_CPU"))
        .then(|| (time_detect(&cpu, 1, reps), time_detect(&cpu, 8, reps)));
    if let Some((c1, c8)) = cpu_ms {
        row("cpu backend", c1, c8);
    }
    println!("reference figures: {}", peer::source());
    println!(
        "cpu backend SIMD: {} (`--no-default-features` builds the AVX2 paths alone)",
        scoredd::backend::cpu::simd_level()
    );
    let peer = (peer_ms("score_dd_b1"), peer_ms("score_dd_b8"));
    if let (Some(p1), Some(p8)) = peer {
        row("PyTorch reference (faster malloc mode)", p1, p8);
        if let Some((c1, c8)) = cpu_ms {
            println!(
                "cpu backend / PyTorch: {:.2}× (1 image), {:.2}× (8 images)",
                c1 / p1,
                c8 / p8
            );
        }
    }
    // After the small figures: a process that just used 2 GB leaves memory
    // the next allocations fault in slower (they measured 1.3-1.7x slower).
    if cpu_ms.is_some() {
        ncsnpp256_peak_in_child();
    }
    if flags::on("BENCH_SKIP_GPU") {
        println!("gpu: skipped (BENCH_SKIP_GPU)");
        return;
    }
    match GpuBackend::new() {
        Ok(g) => {
            let name = g.ctx.info.name.clone();
            let (g1, g8) = (
                time_detect(&g, 1, reps.min(3)),
                time_detect(&g, 8, reps.min(3)),
            );
            row(&format!("gpu backend ({name})"), g1, g8);
            if let (Some(p1), Some(p8)) = peer {
                println!(
                    "gpu backend / PyTorch: {:.2}× (1 image), {:.2}× (8 images)",
                    g1 / p1,
                    g8 / p8
                );
            }
        }
        Err(e) => println!("gpu backend: not available ({e})"),
    }
}
