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
//! - [`folder`]: a plain folder of good images (not recursive).
//! - [`mnist`]: the MNIST idx files (gzip or plain), keeping one digit.
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
//! This module is native-only (it decodes with rayon and uses threads).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use image::imageops::{self, FilterType};
use image::DynamicImage;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::RngStream;

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

// ---------------------------------------------------------------------------
// Decoding

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Whether a JPEG stream is complete: its last start-of-scan marker (`FF DA`)
/// is followed by an end-of-image marker (`FF D9`). Entropy-coded data stuffs
/// every `FF` byte, so neither marker occurs by chance inside a scan; an EXIF
/// thumbnail's markers all come before the main image's scans.
///
/// The JPEG decoder fills a scan cut short with grey instead of failing, so
/// without this check a truncated file would load as a half-grey image.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let last = |m: u8| b.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// Decodes an image whose format is known, refusing one over [`MAX_PIXELS`]
/// from its header alone. Err is a reason.
fn decode_limited<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
) -> std::result::Result<DynamicImage, String> {
    let cannot = |e: image::ImageError| format!("cannot decode: {}", e.to_string().trim_end());
    let decoder = reader.into_decoder().map_err(cannot)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "{w}×{h} is over the limit of {MAX_PIXELS} pixels (64 megapixels); not decoded"
        ));
    }
    DynamicImage::from_decoder(decoder).map_err(cannot)
}

/// Decodes a file, sniffing its format from the content (falling back on the
/// extension). Err is a reason.
fn decode(path: &Path) -> std::result::Result<DynamicImage, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes[..]));
    if let Ok(f) = image::ImageFormat::from_path(path) {
        reader.set_format(f);
    }
    let reader = reader
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    match reader.format() {
        None => return Err("not a recognised image format (PNG or JPEG)".into()),
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(&bytes) => {
            return Err("truncated JPEG: no end-of-image marker after the last scan".into())
        }
        _ => {}
    }
    let img = decode_limited(reader)?;
    if img.width() < MIN_SIDE || img.height() < MIN_SIDE {
        return Err(format!(
            "{}×{} is smaller than the minimum {MIN_SIDE}×{MIN_SIDE}",
            img.width(),
            img.height()
        ));
    }
    Ok(img)
}

/// Gray/RGB conversion in f32, triangle resize, clamp, CHW.
fn to_tensor(img: &DynamicImage, spec: ImageSpec) -> Vec<f32> {
    let s = spec.size as u32;
    let clamp = |v: f32| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    if spec.channels == 1 {
        let g = img.to_luma32f();
        let r = imageops::resize(&g, s, s, FilterType::Triangle);
        r.into_raw().into_iter().map(clamp).collect()
    } else {
        let c = img.to_rgb32f();
        let r = imageops::resize(&c, s, s, FilterType::Triangle).into_raw();
        let hw = spec.size * spec.size;
        let mut out = vec![0f32; 3 * hw];
        for (p, px) in r.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                out[ch * hw + p] = clamp(px[ch]);
            }
        }
        out
    }
}

fn load_one(path: &Path, spec: ImageSpec) -> std::result::Result<(Vec<f32>, (u32, u32)), String> {
    decode(path).map(|img| (to_tensor(&img, spec), (img.width(), img.height())))
}

/// Sorted directory entries (files and folders), or a clear error.
fn list_dir(dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{what} {} does not exist or is not a folder",
            display(dir)
        )));
    }
    let rd = fs::read_dir(dir).map_err(|e| Error::Io {
        path: display(dir),
        source: e,
    })?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::Io {
            path: display(dir),
            source: e,
        })?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Splits a folder's files into image candidates and skipped non-images.
/// Sub-folders are ignored (not recursive).
fn image_files(dir: &Path, what: &str) -> Result<(Vec<PathBuf>, Vec<Skipped>)> {
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for p in list_dir(dir, what)? {
        if p.is_dir() {
            continue;
        }
        if has_image_extension(&p) {
            files.push(p);
        } else {
            skipped.push(Skipped {
                path: display(&p),
                reason: format!(
                    "not an image file extension (expected one of {})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
    }
    Ok((files, skipped))
}

fn log_skipped(s: &[Skipped]) {
    for s in s {
        log::warn!("skipped {}: {}", s.path, s.reason);
    }
}

fn no_images_error(dir: &Path, what: &str, skipped: &[Skipped]) -> Error {
    let mut msg = format!("no usable images in {what} {}", display(dir));
    match skipped.first() {
        None => msg.push_str(": the folder is empty"),
        Some(first) => msg.push_str(&format!(
            ": {} file(s) skipped (first: {}: {})",
            skipped.len(),
            first.path,
            first.reason
        )),
    }
    Error::Invalid(msg)
}

/// Decodes `files` in parallel: the usable ones in order, the others added
/// to `skipped` with their reason.
fn decode_files(files: &[PathBuf], spec: ImageSpec, skipped: &mut Vec<Skipped>) -> Loaded {
    let decoded: Vec<_> = files.par_iter().map(|p| load_one(p, spec)).collect();
    let mut loaded = Loaded::default();
    for (p, r) in files.iter().zip(decoded) {
        match r {
            Ok((img, dims)) => {
                loaded.images.push(img);
                loaded.paths.push(display(p));
                loaded.original_sizes.push(dims);
            }
            Err(reason) => skipped.push(Skipped {
                path: display(p),
                reason,
            }),
        }
    }
    loaded
}

/// Loads every image of one folder (non-recursive) in parallel.
fn load_folder(dir: &Path, spec: ImageSpec, what: &str) -> Result<Loaded> {
    spec.validate()?;
    let (files, mut skipped) = image_files(dir, what)?;
    let mut loaded = decode_files(&files, spec, &mut skipped);
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    log_skipped(&skipped);
    if loaded.images.is_empty() {
        return Err(no_images_error(dir, what, &skipped));
    }
    loaded.skipped = skipped;
    Ok(loaded)
}

/// Images named on a command line: files, and folders (their image files, not
/// recursive, in file-name order). Unreadable or undecodable files are skipped
/// and listed in [`Loaded::skipped`]; only a missing path or no usable image at
/// all is an error.
pub fn inputs(paths: &[PathBuf], spec: ImageSpec) -> Result<Loaded> {
    spec.validate()?;
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for p in paths {
        if p.is_dir() {
            let (f, s) = image_files(p, "input folder")?;
            files.extend(f);
            skipped.extend(s);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(Error::Invalid(format!(
                "{} does not exist (give image files or folders)",
                display(p)
            )));
        }
    }
    let mut loaded = decode_files(&files, spec, &mut skipped);
    if loaded.images.is_empty() {
        let what = match skipped.first() {
            Some(s) => format!(
                "{} input(s) skipped (first: {}: {})",
                skipped.len(),
                s.path,
                s.reason
            ),
            None => "no image files found".into(),
        };
        return Err(Error::Invalid(format!("no usable images: {what}")));
    }
    loaded.skipped = skipped;
    Ok(loaded)
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

/// A plain folder of good images: every file with an image extension, not
/// recursive, in file-name order.
pub fn folder(dir: impl AsRef<Path>, spec: ImageSpec) -> Result<Loaded> {
    load_folder(dir.as_ref(), spec, "image folder")
}

/// `<category_dir>/train/good/*`.
pub fn mvtec_train(category_dir: impl AsRef<Path>, spec: ImageSpec) -> Result<Loaded> {
    let dir = category_dir.as_ref().join("train").join("good");
    load_folder(&dir, spec, "MVTec-layout training folder")
}

/// Loads and checks one defect mask against its image's size.
fn load_mask(
    image_path: &Path,
    image_dims: (u32, u32),
    mask_path: &Path,
    size: usize,
) -> Result<Vec<u8>> {
    if !mask_path.is_file() {
        return Err(Error::Invalid(format!(
            "defect image {} has no mask: expected {}",
            display(image_path),
            display(mask_path)
        )));
    }
    let reader = image::ImageReader::open(mask_path)
        .map_err(|e| Error::Io {
            path: display(mask_path),
            source: e,
        })?
        .with_guessed_format()
        .map_err(|e| Error::Io {
            path: display(mask_path),
            source: e,
        })?;
    let m = decode_limited(reader).map_err(|reason| Error::Image {
        path: display(mask_path),
        detail: format!("mask of {}: {reason}", display(image_path)),
    })?;
    if (m.width(), m.height()) != image_dims {
        return Err(Error::Invalid(format!(
            "mask {} is {}×{} but its image {} is {}×{}",
            display(mask_path),
            m.width(),
            m.height(),
            display(image_path),
            image_dims.0,
            image_dims.1
        )));
    }
    let s = size as u32;
    let g = imageops::resize(&m.to_luma32f(), s, s, FilterType::Nearest);
    Ok(g.into_raw()
        .into_iter()
        .map(|v| u8::from(v >= 0.5))
        .collect())
}

/// `<category_dir>/test/<defect>/*` with masks from
/// `<category_dir>/ground_truth/<defect>/<stem>_mask.png`.
///
/// Undecodable or too-small test images are skipped (listed in
/// [`TestSet::skipped`]); a defect image without a mask, an undecodable mask
/// or a mask whose size differs from its image is an error naming the files.
pub fn mvtec_test(category_dir: impl AsRef<Path>, spec: ImageSpec) -> Result<TestSet> {
    spec.validate()?;
    let root = category_dir.as_ref();
    let test_dir = root.join("test");
    let gt_dir = root.join("ground_truth");
    let mut jobs: Vec<(PathBuf, String)> = Vec::new();
    let mut skipped = Vec::new();
    for d in list_dir(&test_dir, "MVTec-layout test folder")? {
        if !d.is_dir() {
            continue;
        }
        let defect = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (files, sk) = image_files(&d, "test folder")?;
        skipped.extend(sk);
        jobs.extend(files.into_iter().map(|f| (f, defect.clone())));
    }

    // Ok(Ok(item)) = used, Ok(Err(reason)) = skipped image, Err = bad mask.
    type Job = Result<std::result::Result<TestItem, String>>;
    let results: Vec<Job> = jobs
        .par_iter()
        .map(|(path, defect)| -> Job {
            let img = match decode(path) {
                Ok(img) => img,
                Err(reason) => return Ok(Err(reason)),
            };
            let (mask, mask_path) = if defect == "good" {
                (None, None)
            } else {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mp = gt_dir.join(defect).join(format!("{stem}_mask.png"));
                let m = load_mask(path, (img.width(), img.height()), &mp, spec.size)?;
                (Some(m), Some(display(&mp)))
            };
            Ok(Ok(TestItem {
                path: display(path),
                defect: defect.clone(),
                image: to_tensor(&img, spec),
                mask,
                mask_path,
            }))
        })
        .collect();

    let mut set = TestSet::default();
    for ((path, _), r) in jobs.iter().zip(results) {
        match r? {
            Ok(item) => set.items.push(item),
            Err(reason) => skipped.push(Skipped {
                path: display(path),
                reason,
            }),
        }
    }
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    log_skipped(&skipped);
    if set.items.is_empty() {
        return Err(no_images_error(
            &test_dir,
            "MVTec-layout test folder",
            &skipped,
        ));
    }
    set.skipped = skipped;
    Ok(set)
}

// ---------------------------------------------------------------------------
// MNIST

/// Largest decompressed idx file accepted (the MNIST training images are 47 MB).
const MAX_IDX_BYTES: u64 = 1 << 30;

/// Reads `<dir>/<name>.gz` or else `<dir>/<name>`, decompressing gzip.
fn read_idx(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    let gz = dir.join(format!("{name}.gz"));
    let plain = dir.join(name);
    let path = if gz.is_file() {
        gz
    } else if plain.is_file() {
        plain
    } else {
        return Err(Error::Invalid(format!(
            "MNIST file not found: neither {} nor {}",
            display(&gz),
            display(&plain)
        )));
    };
    let io = |e| Error::Io {
        path: display(&path),
        source: e,
    };
    let raw = fs::read(&path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_IDX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::Invalid(format!("{}: bad gzip data: {e}", display(&path))))?;
        if out.len() as u64 > MAX_IDX_BYTES {
            return Err(Error::Invalid(format!(
                "{}: decompresses to more than {MAX_IDX_BYTES} bytes",
                display(&path)
            )));
        }
        out
    } else {
        raw
    };
    Ok((path, bytes))
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an idx header: checks the magic (`0x0000_08nn`, `nn` = ndim),
/// returns dims and the data offset; checks the data length is exact.
fn parse_idx(path: &Path, b: &[u8], ndim: usize) -> Result<Vec<usize>> {
    let bad = |m: String| Error::Invalid(format!("{}: {m}", display(path)));
    let head = 4 + 4 * ndim;
    if b.len() < head {
        return Err(bad(format!(
            "truncated idx file: {} bytes, the header alone needs {head}",
            b.len()
        )));
    }
    let magic = be_u32(b, 0);
    let want = 0x0000_0800 | ndim as u32;
    if magic != want {
        return Err(bad(format!(
            "bad idx magic number {magic:#010x}, expected {want:#010x} (unsigned bytes, {ndim} dims)"
        )));
    }
    let dims: Vec<usize> = (0..ndim).map(|i| be_u32(b, 4 + 4 * i) as usize).collect();
    let n: u128 = dims.iter().map(|&d| d as u128).product();
    let have = (b.len() - head) as u128;
    if have < n {
        return Err(bad(format!(
            "truncated idx file: dims {dims:?} need {n} data bytes, found {have}"
        )));
    }
    if have > n {
        return Err(bad(format!(
            "idx file has {} trailing bytes after dims {dims:?}",
            have - n
        )));
    }
    Ok(dims)
}

/// The MNIST test set (`t10k-images-idx3-ubyte[.gz]`,
/// `t10k-labels-idx1-ubyte[.gz]` in `dir`), keeping only `digit`.
///
/// Paths are `<images file>#<index in the file>`.
pub fn mnist(dir: impl AsRef<Path>, digit: u8, spec: ImageSpec) -> Result<Loaded> {
    spec.validate()?;
    if digit > 9 {
        return Err(Error::Invalid(format!(
            "MNIST digit must be 0..=9, got {digit}"
        )));
    }
    let dir = dir.as_ref();
    let (ipath, ibytes) = read_idx(dir, "t10k-images-idx3-ubyte")?;
    let (lpath, lbytes) = read_idx(dir, "t10k-labels-idx1-ubyte")?;
    let idims = parse_idx(&ipath, &ibytes, 3)?;
    let ldims = parse_idx(&lpath, &lbytes, 1)?;
    let (n, rows, cols) = (idims[0], idims[1], idims[2]);
    if ldims[0] != n {
        return Err(Error::Invalid(format!(
            "{} holds {n} images but {} holds {} labels",
            display(&ipath),
            display(&lpath),
            ldims[0]
        )));
    }
    if rows < MIN_SIDE as usize || cols < MIN_SIDE as usize {
        return Err(Error::Invalid(format!(
            "{}: images are {cols}×{rows}, smaller than the minimum {MIN_SIDE}×{MIN_SIDE}",
            display(&ipath)
        )));
    }
    let labels = &lbytes[8..];
    if let Some(l) = labels.iter().find(|&&l| l > 9) {
        return Err(Error::Invalid(format!(
            "{}: label {l} is not a digit",
            display(&lpath)
        )));
    }
    let pixels = &ibytes[16..];
    let keep: Vec<usize> = (0..n).filter(|&i| labels[i] == digit).collect();
    let images: Vec<Vec<f32>> = keep
        .par_iter()
        .map(|&i| {
            let px = &pixels[i * rows * cols..(i + 1) * rows * cols];
            let buf = image::GrayImage::from_raw(cols as u32, rows as u32, px.to_vec())
                .expect("length checked");
            to_tensor(&DynamicImage::ImageLuma8(buf), spec)
        })
        .collect();
    if images.is_empty() {
        return Err(Error::Invalid(format!(
            "no images of digit {digit} in {} ({n} images)",
            display(&ipath)
        )));
    }
    let paths = keep
        .iter()
        .map(|i| format!("{}#{i}", display(&ipath)))
        .collect();
    let original_sizes = vec![(cols as u32, rows as u32); images.len()];
    Ok(Loaded {
        images,
        paths,
        skipped: Vec::new(),
        original_sizes,
    })
}

// ---------------------------------------------------------------------------
// Batches

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
