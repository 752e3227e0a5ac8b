//! Reading training and test images, and producing augmented training batches.
//!
//! # Images
//!
//! Every image is decoded with the `image` crate (PNG and JPEG; 8- and 16-bit),
//! converted to grayscale or RGB as the [`ImageSpec`] says, resized to
//! `size × size` with a triangle (bilinear) filter in `f32`, clamped to `[0, 1]`
//! and stored CHW (`channels × size × size`, row-major). A 16-bit image keeps
//! its full precision: `v / 65535`.
//!
//! # Sources
//!
//! - [`mvtec_train`] / [`mvtec_test`]: the MVTec AD layout (also BTAD and MTD):
//!   `<category>/train/good/*`, `<category>/test/<defect>/*`,
//!   `<category>/ground_truth/<defect>/<stem>_mask.png`.
//! - [`folder()`]: a plain folder of good images (not recursive).
//! - [`mnist()`]: the MNIST idx files (gzip or plain), keeping one digit.
//!
//! Files that cannot be used (not an image extension, not decodable, smaller
//! than [`MIN_SIDE`] on a side) are *skipped*: they are listed in
//! [`Loaded::skipped`] / [`TestSet::skipped`] with the reason, and logged with
//! `log::warn!`. A source that yields no image at all is an error, never an
//! empty training set.
//!
//! Masks are stricter: a defect test image without its mask, a mask that cannot
//! be decoded, or a mask whose size differs from its image's is an error naming
//! the files — a silently wrong ground truth would corrupt every metric.
//!
//! # Batches
//!
//! [`make_batch`] is a pure function of `(images, spec, batch size, augment,
//! seed, step)`: image indices (drawn with replacement) and augmentations come
//! from `RngStream::new(seed, DATA_STREAM).derive(step)`. [`BatchLoader`]
//! computes `make_batch` for steps `start, start + 1, …` on a background thread,
//! so a run resumed at step `s` sees exactly the batches a straight run would.
//!
//! Reading files (the sources above) is native-only: it decodes with rayon.
//! The rest — [`ImageSpec`], [`make_batch`], [`holdout_split`] — is also built
//! for wasm32, where the browser's trainer (`crate::web`) batches images it
//! was handed as pixels exactly as `scoredd train` does.

use crate::error::{Error, Result};

#[cfg(not(target_arch = "wasm32"))]
mod decode;
#[cfg(not(target_arch = "wasm32"))]
mod folder;
mod loader;
#[cfg(not(target_arch = "wasm32"))]
mod mnist;
#[cfg(not(target_arch = "wasm32"))]
mod mvtec;

#[cfg(not(target_arch = "wasm32"))]
pub use folder::{decode_file, folder, input_files, inputs, no_usable_images};
pub use loader::{make_batch, Augment, Batch, BatchLoader};
#[cfg(not(target_arch = "wasm32"))]
pub use mnist::{mnist, mnist_halves};
#[cfg(not(target_arch = "wasm32"))]
pub use mvtec::{mvtec_test, mvtec_train};

/// Stream id of the data pipeline's randomness (index sampling, augmentation).
pub const DATA_STREAM: u64 = 0x0000_DA7A_0000_0001;

/// Images smaller than this on either side are skipped (1×1 placeholders,
/// thumbnails, broken exports).
pub const MIN_SIDE: u32 = 8;

/// Largest image accepted, in pixels (64 megapixels, e.g. 8192 × 8192). The
/// header is read first, so a file that claims more is refused before anything
/// is allocated; the largest buffer then decoded (16-bit RGBA) is 512 MiB, the
/// `image` crate's default allocation limit.
pub const MAX_PIXELS: u64 = 64 << 20;

/// Largest accepted [`ImageSpec::size`].
pub const MAX_SIZE: usize = 4096;

/// File extensions (lower-cased) tried as images. Anything else in a folder is
/// skipped with the reason "not an image file extension".
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// The size and colour of the tensors images are turned into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageSpec {
    /// Side of the square output, in pixels.
    pub size: usize,
    /// 1 = grayscale, 3 = RGB.
    pub channels: usize,
}

impl ImageSpec {
    pub fn gray(size: usize) -> Self {
        Self { size, channels: 1 }
    }

    pub fn rgb(size: usize) -> Self {
        Self { size, channels: 3 }
    }

    /// Values per image: `channels · size · size`.
    pub fn numel(&self) -> usize {
        self.channels * self.size * self.size
    }

    /// Errors unless `channels` is 1 or 3 and `1 ≤ size ≤ MAX_SIZE`.
    pub fn validate(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::Invalid(format!(
                "image channels must be 1 (grayscale) or 3 (RGB), got {}",
                self.channels
            )));
        }
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(Error::Invalid(format!(
                "image size must be in 1..={MAX_SIZE}, got {}",
                self.size
            )));
        }
        Ok(())
    }
}

/// A file that was not used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Images read from a source, in a stable order (file name order; MNIST: file order).
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// CHW, `spec.numel()` values each, in `[0, 1]`.
    pub images: Vec<Vec<f32>>,
    /// One per image (MNIST: `<images file>#<index>`).
    pub paths: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Each image's size on disk (width, height), before resizing to the spec.
    pub original_sizes: Vec<(u32, u32)>,
}

/// One test image.
#[derive(Clone, Debug)]
pub struct TestItem {
    pub path: String,
    /// Folder name under `test/`; `"good"` for defect-free images.
    pub defect: String,
    /// CHW, `spec.numel()` values in `[0, 1]`.
    pub image: Vec<f32>,
    /// For defect images: `size × size` row-major, 1 = defect, 0 = normal
    /// (resized with nearest neighbour, binarised at 0.5). `None` for good images.
    pub mask: Option<Vec<u8>>,
    /// Mask file the mask came from.
    pub mask_path: Option<String>,
}

impl TestItem {
    pub fn is_anomalous(&self) -> bool {
        self.defect != "good"
    }
}

/// A test split: good and defect images, sorted by defect name then file name.
#[derive(Clone, Debug, Default)]
pub struct TestSet {
    pub items: Vec<TestItem>,
    pub skipped: Vec<Skipped>,
}

impl TestSet {
    /// Distinct defect names (including "good" when present), sorted.
    pub fn defect_types(&self) -> Vec<String> {
        let mut v: Vec<String> = self.items.iter().map(|i| i.defect.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Splits `n` training images (in their stable order) into those trained on
/// and those held out for the detector's calibration: every k-th image with
/// k = round(1/fraction), at least one held out when fraction > 0 and n ≥ 2.
/// A pure function of (n, fraction), so `calibrate` finds exactly the images
/// `train` left out.
pub fn holdout_split(n: usize, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    if fraction.is_nan() || fraction <= 0.0 || n < 2 {
        return ((0..n).collect(), Vec::new());
    }
    let k = ((1.0 / fraction.min(0.5)).round() as usize).clamp(2, n);
    (0..n).partition(|&i| i % k != k - 1)
}

/// Keeps the images at `keep` (in that order).
pub fn select(loaded: &Loaded, keep: &[usize]) -> Loaded {
    Loaded {
        images: keep.iter().map(|&i| loaded.images[i].clone()).collect(),
        paths: keep.iter().map(|&i| loaded.paths[i].clone()).collect(),
        skipped: loaded.skipped.clone(),
        original_sizes: keep
            .iter()
            .filter_map(|&i| loaded.original_sizes.get(i).copied())
            .collect(),
    }
}
