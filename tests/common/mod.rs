//! Shared test helpers: the GPU backend (or a skip outside CI), random data,
//! and tolerance checks that say what differed.
#![allow(dead_code)]

use scoredd::backend::cpu::CpuBackend;
use scoredd::backend::gpu::GpuBackend;
use scoredd::backend::NnBackend;
use scoredd::nn::score_model::ScoreModel;
use scoredd::nn::unet::{TimeEmbedding, UNetConfig};
use scoredd::rng::RngStream;
use scoredd::sde::SdeConfig;

#[path = "../support/skip.rs"]
mod skip;
#[allow(unused_imports)]
pub use skip::{skip, under_ci};

/// The GPU backend. Without an adapter a test skips (counted and reported
/// when the test binary exits) — except under `CI=true`, where lavapipe is
/// installed and a missing adapter is a failure.
pub fn gpu() -> Option<GpuBackend> {
    match GpuBackend::new() {
        Ok(g) => Some(g),
        Err(e) => {
            skip(&format!("no GPU adapter: {e}"));
            None
        }
    }
}

pub fn cpu() -> CpuBackend {
    CpuBackend::new()
}

/// n values uniform in [-1, 1), reproducible from `seed`.
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; n];
    RngStream::new(seed, 7).fill_uniform(0, &mut v);
    v.iter_mut().for_each(|x| *x = 2.0 * *x - 1.0);
    v
}

/// Asserts max |a − b| ≤ rel · max(1e-6, max |b|): error relative to the
/// reference's scale, the right measure for sums of many products.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    let (mut worst, mut at) = (0.0f32, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        // Written so a NaN difference counts as the worst.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(d <= worst) {
            worst = d;
            at = i;
        }
    }
    // `SCOREDD_TOLERANCE_REPORT=1 cargo test -- --nocapture` prints how much
    // of each bound is used: the way to find bounds that sit on their figure.
    if std::env::var_os("SCOREDD_TOLERANCE_REPORT").is_some() {
        eprintln!(
            "tolerance: {:.3} of the bound used by {what} ({worst:.2e} vs {rel:.0e} × {scale:.2e})",
            worst / (rel * scale)
        );
    }
    assert!(
        worst <= rel * scale,
        "{what}: max |diff| {worst:e} at {at} ({} vs {}) exceeds {rel:e} × scale {scale:e}",
        a[at],
        b[at]
    );
}

/// A tiny VE model with every trainable weight nudged away from its
/// (partly zero) initialisation, so features, scores and maps depend on the
/// input.
pub fn nudged_tiny_model<B: NnBackend>(be: &B) -> ScoreModel<B> {
    let cfg = UNetConfig::tiny(1, TimeEmbedding::Fourier);
    let mut m = ScoreModel::new(be, cfg, SdeConfig::ve(50.0), 3).unwrap();
    let values: Vec<Vec<f32>> = (0..m.params.len())
        .map(|i| {
            let v = be.read(&m.params.values[i]).unwrap();
            if m.net.is_trainable(i) {
                let r = rand_vec(v.len(), 500 + i as u64);
                v.iter().zip(r).map(|(a, b)| a + 0.05 * b).collect()
            } else {
                v
            }
        })
        .collect();
    m.params = m.net.spec.store(be, &values).unwrap();
    m
}

/// `n` smooth 32×32 gray images in [0, 1], each a shifted sinusoid pattern.
pub fn smooth_images(n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|k| {
            (0..32 * 32)
                .map(|p| {
                    let (x, y) = ((p % 32) as f32, (p / 32) as f32);
                    0.5 + 0.3 * ((x + 3.0 * k as f32) * 0.4).sin() * (y * 0.2).cos()
                })
                .collect()
        })
        .collect()
}
