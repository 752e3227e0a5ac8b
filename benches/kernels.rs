//! Kernel throughput: `cargo bench --bench kernels`.
//!
//! Prints GFLOP/s for a 1024³ matmul and a conv2d (batch 8, 64→64 channels,
//! 64×64, 3×3, padding 1) on the CPU backend, on the GPU backend (lavapipe here)
//! and for the `gemm` crate alone, plus the ratios the targets are stated in —
//! all from this one run, since the machines are noisy.
//! Targets: WGSL matmul ≥ 20 GFLOP/s on lavapipe; CPU conv ≥ 50 % of the gemm
//! crate's matmul rate.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use scoredd::backend::cpu::gemm::{sgemm, MatRef};
use scoredd::backend::cpu::CpuBackend;
use scoredd::backend::gpu::GpuBackend;
use scoredd::backend::{Backend, Conv2dSpec, ConvGeometry, Distribution, ModuleOps};
use scoredd::rng::RngStream;

/// Median wall time of `reps` runs after one warm-up.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
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

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngStream::new(seed, 0).fill_uniform(0, &mut v);
    v
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let n = 1024;
    let mm_flops = 2.0 * (n * n * n) as f64;
    let conv_x = [8, 64, 64, 64];
    let conv_w = [64, 64, 3, 3];
    let spec = Conv2dSpec::new(1, 1);
    let conv_flops = ConvGeometry::new(&conv_x, &conv_w, None, spec)
        .unwrap()
        .flops();
    let mut rows: Vec<(String, f64)> = Vec::new();

    let cpu = CpuBackend::new();
    let (a, b) = (rand(n * n, 1), rand(n * n, 2));
    let mut c = vec![0.0f32; n * n];
    let t = median_secs(reps, || {
        sgemm(
            MatRef::new(&a, n, n),
            MatRef::new(&b, n, n),
            &mut c,
            false,
            cpu.threads(),
        )
    });
    let gemm_rate = mm_flops / t / 1e9;
    rows.push((
        format!("gemm crate sgemm 1024³ ({} threads)", cpu.threads()),
        gemm_rate,
    ));

    let (ca, cb) = (
        cpu.upload(&a, &[n, n]).unwrap(),
        cpu.upload(&b, &[n, n]).unwrap(),
    );
    let t = median_secs(reps, || {
        cpu.matmul(&ca, &cb).unwrap();
    });
    rows.push(("cpu backend matmul 1024³".into(), mm_flops / t / 1e9));
    let cx = cpu
        .random(&conv_x, Distribution::Normal, RngStream::new(3, 0))
        .unwrap();
    let cw = cpu
        .random(&conv_w, Distribution::Normal, RngStream::new(4, 0))
        .unwrap();
    let t = median_secs(reps, || {
        cpu.conv2d(&cx, &cw, None, spec).unwrap();
    });
    let cpu_conv = conv_flops / t / 1e9;
    rows.push(("cpu backend conv2d b8 64→64 64² 3×3".into(), cpu_conv));

    let gpu = GpuBackend::new();
    let mut gpu_mm = None;
    match &gpu {
        Ok(g) => {
            eprintln!("{}", g.describe());
            let (ga, gb) = (
                g.upload(&a, &[n, n]).unwrap(),
                g.upload(&b, &[n, n]).unwrap(),
            );
            let t = median_secs(reps.min(5), || {
                g.matmul(&ga, &gb).unwrap();
                g.ctx.finish("bench").unwrap();
            });
            gpu_mm = Some(mm_flops / t / 1e9);
            rows.push(("wgsl matmul 1024³".into(), mm_flops / t / 1e9));
            let gx = g
                .random(&conv_x, Distribution::Normal, RngStream::new(3, 0))
                .unwrap();
            let gw = g
                .random(&conv_w, Distribution::Normal, RngStream::new(4, 0))
                .unwrap();
            let t = median_secs(reps.min(5), || {
                g.conv2d(&gx, &gw, None, spec).unwrap();
                g.ctx.finish("bench").unwrap();
            });
            rows.push(("wgsl conv2d b8 64→64 64² 3×3".into(), conv_flops / t / 1e9));
        }
        Err(e) => eprintln!("no GPU adapter, GPU rows skipped: {e}"),
    }

    println!("{:<44} {:>10}", "kernel", "GFLOP/s");
    for (name, rate) in &rows {
        println!("{name:<44} {rate:>10.1}");
    }
    println!();
    println!(
        "cpu conv / gemm crate matmul: {:.2} (target ≥ 0.50)",
        cpu_conv / gemm_rate
    );
    if let Some(r) = gpu_mm {
        println!("wgsl matmul: {r:.1} GFLOP/s (target ≥ 20 on lavapipe)");
    }
}
