//! Decoding image files into tensors, and listing the image files of a folder:
//! what every image source shares.

use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::DynamicImage;
use rayon::prelude::*;

use super::{ImageSpec, Loaded, Skipped, IMAGE_EXTENSIONS, MAX_PIXELS, MIN_SIDE};
use crate::error::{Error, Result};

pub(super) fn display(p: &Path) -> String {
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
pub(super) fn decode_limited<R: std::io::BufRead + std::io::Seek>(
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
pub(super) fn decode(path: &Path) -> std::result::Result<DynamicImage, String> {
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
pub(super) fn to_tensor(img: &DynamicImage, spec: ImageSpec) -> Vec<f32> {
    let s = spec.size as u32;
    to_tensor_at(img, spec.channels, Some((s, s)))
}

/// Gray/RGB conversion in f32, triangle resize to `size` (width, height;
/// None keeps the image's own size), clamp, CHW.
fn to_tensor_at(img: &DynamicImage, channels: usize, size: Option<(u32, u32)>) -> Vec<f32> {
    let clamp = |v: f32| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    if channels == 1 {
        let g = img.to_luma32f();
        let r = match size {
            Some((w, h)) => imageops::resize(&g, w, h, FilterType::Triangle),
            None => g,
        };
        r.into_raw().into_iter().map(clamp).collect()
    } else {
        let c = img.to_rgb32f();
        let r = match size {
            Some((w, h)) => imageops::resize(&c, w, h, FilterType::Triangle),
            None => c,
        };
        let hw = r.width() as usize * r.height() as usize;
        let r = r.into_raw();
        let mut out = vec![0f32; 3 * hw];
        for (p, px) in r.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                out[ch * hw + p] = clamp(px[ch]);
            }
        }
        out
    }
}

/// How decoded images become tensors.
#[derive(Clone, Copy, Debug)]
pub(super) enum Sizing {
    /// Resized to the spec's square.
    Square(ImageSpec),
    /// At the image's own size, with this many channels.
    Own(usize),
}

pub(super) fn load_one(
    path: &Path,
    sizing: Sizing,
) -> std::result::Result<(Vec<f32>, (u32, u32)), String> {
    decode(path).map(|img| {
        let t = match sizing {
            Sizing::Square(spec) => to_tensor(&img, spec),
            Sizing::Own(channels) => to_tensor_at(&img, channels, None),
        };
        (t, (img.width(), img.height()))
    })
}

/// Sorted directory entries (files and folders), or a clear error.
pub(super) fn list_dir(dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
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
pub(super) fn image_files(dir: &Path, what: &str) -> Result<(Vec<PathBuf>, Vec<Skipped>)> {
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

pub(super) fn log_skipped(s: &[Skipped]) {
    for s in s {
        log::warn!("skipped {}: {}", s.path, s.reason);
    }
}

pub(super) fn no_images_error(dir: &Path, what: &str, skipped: &[Skipped]) -> Error {
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
pub(super) fn decode_files(
    files: &[PathBuf],
    sizing: Sizing,
    skipped: &mut Vec<Skipped>,
) -> Loaded {
    let decoded: Vec<_> = files.par_iter().map(|p| load_one(p, sizing)).collect();
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
pub(super) fn load_folder(dir: &Path, spec: ImageSpec, what: &str) -> Result<Loaded> {
    spec.validate()?;
    let (files, mut skipped) = image_files(dir, what)?;
    let mut loaded = decode_files(&files, Sizing::Square(spec), &mut skipped);
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    log_skipped(&skipped);
    if loaded.images.is_empty() {
        return Err(no_images_error(dir, what, &skipped));
    }
    loaded.skipped = skipped;
    Ok(loaded)
}
