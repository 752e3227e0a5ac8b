//! Plain folders of images, and the images named on a command line.

use std::path::{Path, PathBuf};

use super::decode::{decode_files, display, image_files, load_folder, load_one, Sizing};
use super::{ImageSpec, Loaded, Skipped};
use crate::error::{Error, Result};

/// Images named on a command line: files, and folders (their image files, not
/// recursive, in file-name order). Unreadable or undecodable files are skipped
/// and listed in [`Loaded::skipped`]; only a missing path or no usable image at
/// all is an error.
pub fn inputs(paths: &[PathBuf], spec: ImageSpec) -> Result<Loaded> {
    spec.validate()?;
    let (files, mut skipped) = input_files(paths)?;
    let mut loaded = decode_files(&files, Sizing::Square(spec), &mut skipped);
    if loaded.images.is_empty() {
        return Err(no_usable_images(&skipped));
    }
    loaded.skipped = skipped;
    Ok(loaded)
}

/// The error when every input was skipped (or there were none).
pub fn no_usable_images(skipped: &[Skipped]) -> Error {
    let what = match skipped.first() {
        Some(s) => format!(
            "{} input(s) skipped (first: {}: {})",
            skipped.len(),
            s.path,
            s.reason
        ),
        None => "no image files found".into(),
    };
    Error::Invalid(format!("no usable images: {what}"))
}

/// The image files named on a command line, as [`inputs`] finds them, and
/// the folder entries skipped as not images; a missing path is an error.
pub fn input_files(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<Skipped>)> {
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
    Ok((files, skipped))
}

/// One image file at its own size (`square` None) or resized to a `square`
/// px square: CHW values (`channels` × height × width) and the size on disk
/// (width, height). Err says why the file cannot be used. For tiled
/// detection, which takes large images one at a time.
pub fn decode_file(
    path: &Path,
    channels: usize,
    square: Option<usize>,
) -> std::result::Result<(Vec<f32>, (u32, u32)), String> {
    let spec = ImageSpec {
        size: square.unwrap_or(1),
        channels,
    };
    spec.validate().map_err(|e| e.to_string())?;
    match square {
        Some(_) => load_one(path, Sizing::Square(spec)),
        None => load_one(path, Sizing::Own(channels)),
    }
}

/// A plain folder of good images: every file with an image extension, not
/// recursive, in file-name order.
pub fn folder(dir: impl AsRef<Path>, spec: ImageSpec) -> Result<Loaded> {
    load_folder(dir.as_ref(), spec, "image folder")
}
