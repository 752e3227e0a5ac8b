//! The score U-net: `cargo bench --bench unet`.
//!
//! Prints, per config, trainable parameters, forward GFLOP per image and
//! activation memory per sample (bytes the backward tape keeps, shared buffers
//! counted once); then for `small` (64 px, RGB) at batch 8 the forward and
//! forward+backward times and GFLOP/s on the CPU backend and the GPU backend
//! (lavapipe here), and the ratio to the PyTorch reference's figures
//! (`PEER_RESULTS`, default ../shared/peer/results_cpu.json, the faster of its malloc modes).
//! Target: CPU backend ≤ 1.0× PyTorch's time. `BENCH_REPS=n` sets the repetitions (median
//! of n, default 5); `BENCH_SKIP_GPU=1` stops after the CPU figures.
//! `BENCH_PROFILE=forward|train|tiny-train` runs only that CPU figure (`small` b8, `tiny` b16), `BENCH_REPS`
//! times, and nothing else: for `perf record` of one phase.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashSet;
use std::time::Instant;

use scoredd::backend::cpu::{CpuBackend, CpuTensor};
use scoredd::backend::gpu::GpuBackend;
use scoredd::backend::train_ops::TrainOps;
use scoredd::backend::{Backend, NnBackend};
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{ForwardOpts, TimeEmbedding, UNetConfig};
use scoredd::rng::RngStream;
use scoredd::sde::SdeConfig;
use scoredd::train::{TrainConfig, Trainer};

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

fn input(n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngStream::new(1, 1).fill_uniform(0, &mut v);
    v
}

/// (forward seconds, forward+backward seconds) at batch `b`.
fn time_model<B: NnBackend>(
    be: &B,
    m: &ScoreModel<B>,
    b: usize,
    reps: usize,
    sync: &dyn Fn(&B::Tensor),
) -> (f64, f64) {
    let c = &m.net.config;
    let shape = [b, c.channels, c.image_size, c.image_size];
    let x = be.upload(&input(shape.iter().product()), &shape).unwrap();
    let t: Vec<f64> = (0..b).map(|i| 0.1 + 0.8 * i as f64 / b as f64).collect();
    let sde = m.sde.as_ref();
    let fwd = median(reps, || {
        let f = m
            .net
            .forward(be, &m.params, sde, &x, &t, &ForwardOpts::default())
            .unwrap();
        sync(&f.out);
    });
    let dout = be.upload(&input(shape.iter().product()), &shape).unwrap();
    let fb = median(reps, || {
        let f = m
            .net
            .forward(
                be,
                &m.params,
                sde,
                &x,
                &t,
                &ForwardOpts {
                    record: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let g = m
            .net
            .backward(be, &m.params, f.tape.as_ref().unwrap(), &dout)
            .unwrap();
        sync(g.values.iter().flatten().next().unwrap());
    });
    (fwd, fb)
}

/// Seconds per training step (loss, backward, clip, Adam, EMA) at batch `b`.
fn time_train_step<B: NnBackend + TrainOps>(
    be: &B,
    cfg: &UNetConfig,
    b: usize,
    reps: usize,
) -> f64 {
    let model = ScoreModel::new(be, cfg.clone(), SdeConfig::ve(50.0), 0).unwrap();
    let mut t = Trainer::new(be, model, TrainConfig::recipe("ve", b, 0)).unwrap();
    let shape = [b, cfg.channels, cfg.image_size, cfg.image_size];
    let x = be.upload(&input(shape.iter().product()), &shape).unwrap();
    // Reading the loss back makes each timed step include all its device work.
    median(reps, || {
        t.train_step(be, &x, true).unwrap();
    })
}

/// One phase of the `small` b8 CPU figures, alone (see the module comment).
fn profile_phase(cpu: &CpuBackend, phase: &str, reps: usize) {
    let cfg = UNetConfig::small(3, TimeEmbedding::Fourier);
    let ms = match phase {
        "forward" => {
            let m = ScoreModel::new(cpu, cfg, SdeConfig::ve(50.0), 0).unwrap();
            let shape = [8, 3, 64, 64];
            let x = cpu.upload(&input(8 * 3 * 64 * 64), &shape).unwrap();
            let t: Vec<f64> = (0..8).map(|i| 0.1 + 0.1 * i as f64).collect();
            median(reps, || {
                let opts = ForwardOpts::default();
                m.net
                    .forward(cpu, &m.params, m.sde.as_ref(), &x, &t, &opts)
                    .unwrap();
            })
        }
        "train" => time_train_step(cpu, &cfg, 8, reps),
        "tiny-train" => {
            let tiny = UNetConfig::tiny(1, TimeEmbedding::Fourier);
            let ms = time_train_step(cpu, &tiny, 16, reps);
            println!("tiny b16 train: {:.1} ms (median of {reps})", ms * 1e3);
            return;
        }
        other => panic!("BENCH_PROFILE={other}: expected forward, train or tiny-train"),
    };
    println!("small b8 {phase}: {:.1} ms (median of {reps})", ms * 1e3);
}

#[path = "support/peer.rs"]
mod peer;

#[path = "support/flags.rs"]
mod flags;

/// The reference's `small` figure for `key`, in ms (faster malloc mode).
fn peer_ms(key: &str) -> Option<f64> {
    peer::peer_ms("small", key).map(|(ms, _)| ms)
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cpu = CpuBackend::new();
    if let Ok(phase) = std::env::var("BENCH_PROFILE") {
        profile_phase(&cpu, &phase, reps);
        return;
    }
    println!(
        "{:<10} {:>12} {:>14} {:>22}",
        "config", "params", "fwd GFLOP/img", "activations B/sample"
    );
    for (name, cfg) in [
        ("tiny", UNetConfig::tiny(1, TimeEmbedding::Fourier)),
        ("small", UNetConfig::small(3, TimeEmbedding::Fourier)),
        (
            "ncsnpp256",
            UNetConfig::ncsnpp256(3, TimeEmbedding::Fourier),
        ),
    ] {
        let m = ScoreModel::new(&cpu, cfg.clone(), SdeConfig::ve(50.0), 0).unwrap();
        let params: usize = (0..m.params.len())
            .filter(|&i| m.net.is_trainable(i))
            .map(|i| m.params.shapes[i].iter().product::<usize>())
            .sum();
        let x = cpu
            .upload(
                &input(cfg.channels * cfg.image_size * cfg.image_size),
                &[1, cfg.channels, cfg.image_size, cfg.image_size],
            )
            .unwrap();
        let f = m
            .net
            .forward(
                &cpu,
                &m.params,
                m.sde.as_ref(),
                &x,
                &[0.5],
                &ForwardOpts {
                    record: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut seen = HashSet::new();
        let bytes: usize = f
            .tape
            .as_ref()
            .unwrap()
            .tensors()
            .into_iter()
            .filter(|t: &&CpuTensor| seen.insert(std::sync::Arc::as_ptr(&t.data)))
            .map(|t| t.data.len() * 4)
            .sum();
        println!(
            "{name:<10} {params:>12} {:>14.3} {:>22}",
            m.net.flops_per_image() / 1e9,
            bytes
        );
    }
    println!();

    let cfg = UNetConfig::small(3, TimeEmbedding::Fourier);
    let b = 8;
    let m = ScoreModel::new(&cpu, cfg.clone(), SdeConfig::ve(50.0), 0).unwrap();
    let gflop = m.net.flops_per_image() * b as f64 / 1e9;
    let (f, fb) = time_model(&cpu, &m, b, reps, &|_| {});
    println!(
        "small, batch {b}            forward ms  GFLOP/s   fwd+bwd ms  GFLOP/s (3× fwd FLOPs)"
    );
    println!(
        "cpu backend           {:>12.1} {:>8.1} {:>12.1} {:>8.1}",
        f * 1e3,
        gflop / f,
        fb * 1e3,
        3.0 * gflop / fb
    );
    let ts = time_train_step(&cpu, &cfg, b, reps);
    println!(
        "cpu train step        {:>12.1} ms = {:.1} images/s",
        ts * 1e3,
        b as f64 / ts
    );
    if let (Some(pf), Some(pt)) = (peer_ms("forward_b8"), peer_ms("train_step")) {
        println!("pytorch train step    {pt:>12.1} ms = {:.1} images/s; cpu backend images/s ÷ pytorch's: {:.2} (target ≥ 1.0)", b as f64 / pt * 1e3, pt / 1e3 / ts);
        println!("pytorch reference     {pf:>12.1} {:>8.1} {pt:>12.1}          (train step: fwd+bwd+clip+Adam)", gflop / pf * 1e3);
        println!(
            "cpu / pytorch: forward {:.2}×, fwd+bwd vs train step {:.2}× (target ≤ 1.0)",
            f * 1e3 / pf,
            fb * 1e3 / pt
        );
    }
    // The reference's tiny (32 px, gray) training step runs at batch 16.
    let tiny = UNetConfig::tiny(1, TimeEmbedding::Fourier);
    let tts = time_train_step(&cpu, &tiny, 16, reps);
    print!("tiny train step b16   {:>12.1} ms", tts * 1e3);
    match peer::peer_ms("tiny", "train_step") {
        Some((pt, mode)) => println!(
            "; pytorch ({mode}) {pt:.1} ms; cpu / pytorch {:.2}× (target ≤ 1.0)",
            tts * 1e3 / pt
        ),
        None => println!(),
    }
    println!("reference figures: {}", peer::source());
    println!(
        "cpu backend SIMD: {} (`--no-default-features` builds the AVX2 paths alone)",
        scoredd::backend::cpu::simd_level()
    );
    if flags::on("BENCH_SKIP_GPU") {
        println!("gpu: skipped (BENCH_SKIP_GPU)");
        return;
    }
    match GpuBackend::new() {
        Ok(g) => {
            let mg = ScoreModel::new(&g, cfg.clone(), SdeConfig::ve(50.0), 0).unwrap();
            let sync = |t: &<GpuBackend as Backend>::Tensor| {
                g.read(t).unwrap();
            };
            let (gf, gfb) = time_model(&g, &mg, b, reps.min(2), &sync);
            let gts = time_train_step(&g, &cfg, b, reps.min(3));
            println!(
                "gpu train step        {:>12.1} ms = {:.2} images/s",
                gts * 1e3,
                b as f64 / gts
            );
            if let Some(pt) = peer_ms("train_step") {
                println!(
                    "gpu train step / pytorch: {:.2}× (target ≤ 5.0 on a software adapter)",
                    gts * 1e3 / pt
                );
            }
            println!(
                "gpu ({})  {:>12.1} {:>8.1} {:>12.1} {:>8.1}",
                g.ctx.info.name,
                gf * 1e3,
                gflop / gf,
                gfb * 1e3,
                3.0 * gflop / gfb
            );
        }
        Err(e) => println!("gpu: skipped ({e})"),
    }
}
