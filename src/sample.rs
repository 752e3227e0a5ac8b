//! Drawing images from a trained model: integrate the reverse-time process from
//! the prior (reverse-SDE Euler–Maruyama predictor, or the probability-flow ODE)
//! — the quickest way to see whether a model learned its images.

use crate::backend::{Distribution, NnBackend, Sampler};
use crate::error::{Error, Result};
use crate::method::ScoreFn;
use crate::nn::score_model::ScoreModel;
use crate::rng::RngStream;
use crate::sde::prior_sample;

/// `n` samples `[n, C, H, W]` after `steps` steps from t = 1 to the SDE's ε;
/// `progress(i)` is called after each step; a final denoising step follows.
pub fn sample<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    n: usize,
    steps: usize,
    sampler: Sampler,
    seed: u64,
    progress: &mut dyn FnMut(usize),
) -> Result<B::Tensor> {
    if n == 0 || steps == 0 {
        return Err(Error::Invalid(
            "sampling needs at least one image and one step".into(),
        ));
    }
    let c = &model.net.config;
    let shape = [n, c.channels, c.image_size, c.image_size];
    let sde = model.sde.as_ref();
    let root = RngStream::new(seed, 0x5A3F);
    let mut x = prior_sample(be, sde, &shape, root.derive(0))?;
    let eps = sde.eps();
    let dt = (1.0 - eps) / steps as f64;
    for i in 0..steps {
        let t = 1.0 - i as f64 * dt;
        let s = model.score(be, &x, &vec![t; n])?;
        let (f, g) = (sde.drift_coef(t), sde.diffusion(t));
        // x ← x − f·x·Δt + w·g²·s·Δt (+ g·√Δt·n), w = ½ for the ODE, 1 for the SDE.
        let w = if sampler == Sampler::Ode { 0.5 } else { 1.0 };
        x = be.axpby((1.0 - f * dt) as f32, &x, (w * g * g * dt) as f32, &s)?;
        if sampler == Sampler::Sde && i + 1 < steps {
            let noise = be.random(&shape, Distribution::Normal, root.derive(1 + i as u64))?;
            x = be.axpby(1.0, &x, (g * dt.sqrt()) as f32, &noise)?;
        }
        progress(i + 1);
    }
    // Remove the noise left at ε with one Tweedie step, E[x0 | x] = (x + σ²·s)/μ
    // (score_sde's `denoise = True`).
    let s = model.score(be, &x, &vec![eps; n])?;
    let (mu, sigma) = (sde.mean_coef(eps), sde.std(eps));
    be.axpby((1.0 / mu) as f32, &x, (sigma * sigma / mu) as f32, &s)
}

/// Tiles `[n, C, H, W]` images (values clamped to [0, 1]) into a grid picture.
pub fn grid(data: &[f32], n: usize, channels: usize, size: usize) -> image::RgbImage {
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = (n as u32).div_ceil(cols);
    let gap = 2u32;
    let s = size as u32;
    let mut img = image::RgbImage::from_pixel(
        cols * (s + gap) + gap,
        rows * (s + gap) + gap,
        image::Rgb([255, 255, 255]),
    );
    for k in 0..n {
        let (gx, gy) = (
            (k as u32 % cols) * (s + gap) + gap,
            (k as u32 / cols) * (s + gap) + gap,
        );
        let im = &data[k * channels * size * size..(k + 1) * channels * size * size];
        for y in 0..size {
            for x in 0..size {
                let px = |c: usize| {
                    (im[(c * size + y) * size + x].clamp(0.0, 1.0) * 255.0).round() as u8
                };
                let rgb = if channels == 3 {
                    [px(0), px(1), px(2)]
                } else {
                    [px(0); 3]
                };
                img.put_pixel(gx + x as u32, gy + y as u32, image::Rgb(rgb));
            }
        }
    }
    img
}
