//! Augmented training batches: [`make_batch`], a pure function of its
//! arguments, and [`BatchLoader`], which computes the next batches on a
//! background thread.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{ImageSpec, DATA_STREAM};
use crate::error::{Error, Result};
use crate::rng::RngStream;

/// Training-time augmentation, drawn independently per batch element.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Mirror left–right with probability 1/2.
    pub hflip: bool,
    /// Mirror top–bottom with probability 1/2.
    pub vflip: bool,
    /// Largest fraction of the side trimmed, in `[0, 1)`: a random square crop
    /// of side `round((1 − u·crop)·size)`, `u ~ U(0,1)`, at a random position,
    /// resized back to `size` bilinearly. 0 = no cropping.
    pub crop: f32,
}

impl Augment {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.crop.is_finite() && (0.0..1.0).contains(&self.crop)) {
            return Err(Error::Invalid(format!(
                "augment crop must be in [0, 1), got {}",
                self.crop
            )));
        }
        Ok(())
    }
}

/// One training batch, NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub step: u64,
    pub data: Vec<f32>,
    /// `[batch, channels, size, size]`.
    pub shape: [usize; 4],
}

/// Uniforms drawn per batch element: index, hflip, vflip, crop side, crop x, crop y.
const UNIFORMS_PER_ITEM: u64 = 8;

fn check_batch_args(
    images: &[Vec<f32>],
    spec: ImageSpec,
    batch: usize,
    augment: &Augment,
) -> Result<()> {
    spec.validate()?;
    augment.validate()?;
    if batch == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    if images.is_empty() {
        return Err(Error::Invalid("no training images to batch".into()));
    }
    if let Some((i, im)) = images
        .iter()
        .enumerate()
        .find(|(_, im)| im.len() != spec.numel())
    {
        return Err(Error::Invalid(format!(
            "image {i} has {} values, but {}×{}×{} needs {}",
            im.len(),
            spec.channels,
            spec.size,
            spec.size,
            spec.numel()
        )));
    }
    Ok(())
}

/// The batch for `step`: a pure function of its arguments.
///
/// Element `j` uses uniforms `8j .. 8j + 6` of
/// `RngStream::new(seed, DATA_STREAM).derive(step)`: the image index
/// (uniform, with replacement), hflip, vflip, crop side, crop x, crop y.
pub fn make_batch(
    images: &[Vec<f32>],
    spec: ImageSpec,
    batch: usize,
    augment: &Augment,
    seed: u64,
    step: u64,
) -> Result<Batch> {
    check_batch_args(images, spec, batch, augment)?;
    Ok(make_batch_unchecked(
        images, spec, batch, augment, seed, step,
    ))
}

fn make_batch_unchecked(
    images: &[Vec<f32>],
    spec: ImageSpec,
    batch: usize,
    augment: &Augment,
    seed: u64,
    step: u64,
) -> Batch {
    let rng = RngStream::new(seed, DATA_STREAM).derive(step);
    let numel = spec.numel();
    let size = spec.size;
    let mut data = vec![0f32; batch * numel];
    for (j, out) in data.chunks_exact_mut(numel).enumerate() {
        let mut u = [0f32; UNIFORMS_PER_ITEM as usize];
        rng.fill_uniform(j as u64 * UNIFORMS_PER_ITEM, &mut u);
        let idx = ((u[0] * images.len() as f32) as usize).min(images.len() - 1);
        let src = &images[idx];
        let hflip = augment.hflip && u[1] < 0.5;
        let vflip = augment.vflip && u[2] < 0.5;
        let side = if augment.crop > 0.0 {
            (((1.0 - u[3] * augment.crop) * size as f32).round() as usize).clamp(1, size)
        } else {
            size
        };
        let slack = size - side;
        let x0 = ((u[4] * (slack + 1) as f32) as usize).min(slack);
        let y0 = ((u[5] * (slack + 1) as f32) as usize).min(slack);
        crop_resize_flip(src, spec, x0, y0, side, hflip, vflip, out);
    }
    Batch {
        step,
        data,
        shape: [batch, spec.channels, size, size],
    }
}

/// Samples the `side × side` window at `(x0, y0)` of a CHW image bilinearly
/// (pixel centres, edge-clamped) back to `size × size`, then flips.
#[allow(clippy::too_many_arguments)]
fn crop_resize_flip(
    src: &[f32],
    spec: ImageSpec,
    x0: usize,
    y0: usize,
    side: usize,
    hflip: bool,
    vflip: bool,
    out: &mut [f32],
) {
    let n = spec.size;
    let hw = n * n;
    // Per output coordinate: (lo, hi, weight of hi), in source coordinates.
    let taps = |o0: usize| -> Vec<(usize, usize, f32)> {
        (0..n)
            .map(|o| {
                if side == n {
                    return (o0 + o, o0 + o, 0.0);
                }
                let s =
                    ((o as f32 + 0.5) * side as f32 / n as f32 - 0.5).clamp(0.0, (side - 1) as f32);
                let lo = (s.floor() as usize).min(side - 1);
                let hi = (lo + 1).min(side - 1);
                (o0 + lo, o0 + hi, s - lo as f32)
            })
            .collect()
    };
    let tx = taps(x0);
    let ty = taps(y0);
    for c in 0..spec.channels {
        let plane = &src[c * hw..(c + 1) * hw];
        let dst = &mut out[c * hw..(c + 1) * hw];
        for (oy, &(ylo, yhi, wy)) in ty.iter().enumerate() {
            let dy = if vflip { n - 1 - oy } else { oy };
            let rlo = &plane[ylo * n..(ylo + 1) * n];
            let rhi = &plane[yhi * n..(yhi + 1) * n];
            for (ox, &(xlo, xhi, wx)) in tx.iter().enumerate() {
                let dx = if hflip { n - 1 - ox } else { ox };
                let top = rlo[xlo] + (rlo[xhi] - rlo[xlo]) * wx;
                let bot = rhi[xlo] + (rhi[xhi] - rhi[xlo]) * wx;
                dst[dy * n + dx] = (top + (bot - top) * wy).clamp(0.0, 1.0);
            }
        }
    }
}

/// Produces [`make_batch`] for steps `start, start + 1, …` on a background
/// thread, `prefetch` batches ahead. Dropping the loader stops the thread.
pub struct BatchLoader {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    next_step: u64,
}

impl BatchLoader {
    /// Default number of batches computed ahead.
    pub const DEFAULT_PREFETCH: usize = 3;

    /// Checks the arguments and starts the thread. `prefetch` is clamped to ≥ 1.
    pub fn new(
        images: Arc<Vec<Vec<f32>>>,
        spec: ImageSpec,
        batch: usize,
        augment: Augment,
        seed: u64,
        start_step: u64,
        prefetch: usize,
    ) -> Result<Self> {
        check_batch_args(&images, spec, batch, &augment)?;
        let (tx, rx) = sync_channel(prefetch.max(1));
        let handle = std::thread::Builder::new()
            .name("scoredd-batches".into())
            .spawn(move || {
                let mut step = start_step;
                loop {
                    let b = make_batch_unchecked(&images, spec, batch, &augment, seed, step);
                    if tx.send(b).is_err() {
                        return; // the loader was dropped
                    }
                    step = step.wrapping_add(1);
                }
            })
            .map_err(|e| Error::Io {
                path: "<batch loader thread>".into(),
                source: e,
            })?;
        Ok(Self {
            rx: Some(rx),
            handle: Some(handle),
            next_step: start_step,
        })
    }

    /// The step of the batch [`next_batch`](Self::next_batch) returns next.
    pub fn next_step(&self) -> u64 {
        self.next_step
    }

    /// Blocks until the next batch is ready.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        match rx.recv() {
            Ok(b) => {
                debug_assert_eq!(b.step, self.next_step);
                self.next_step = b.step.wrapping_add(1);
                Ok(b)
            }
            Err(_) => Err(Error::Invalid(
                "the batch loader thread stopped unexpectedly".into(),
            )),
        }
    }
}

impl Iterator for BatchLoader {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.next_batch().ok()
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Dropping the receiver makes the thread's pending/next send fail.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
