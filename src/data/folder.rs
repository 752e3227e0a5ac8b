//! Plain folders of images, and the images named on a command line.

use std::path::{Path, PathBuf};

use super::decode::{decode_files, display, image_files, load_folder, Sizing};
use super::{ImageSpec, Loaded};
use crate::error::{Error, Result};

/// Images named on a command line: files, and folders (their image files, not
/// recursive, in file-name order). Unreadable or undecodable files are skipped
/// and listed in [`Loaded::skipped`]; only a missing path or no usable image at
/// all is an error.
pub fn inputs(paths: &[PathBuf], spec: ImageSpec) -> Result<Loaded> {
    spec.validate()?;
    inputs_sized(paths, Sizing::Square(spec))
}

/// [`inputs`] at each image's own size (`channels` × height × width, the
/// sizes in [`Loaded::original_sizes`]): for tiled detection.
pub fn inputs_own_size(paths: &[PathBuf], channels: usize) -> Result<Loaded> {
    ImageSpec { size: 1, channels }.validate()?;
    inputs_sized(paths, Sizing::Own(channels))
}

fn inputs_sized(paths: &[PathBuf], sizing: Sizing) -> Result<Loaded> {
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
    let mut loaded = decode_files(&files, sizing, &mut skipped);
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

/// A plain folder of good images: every file with an image extension, not
/// recursive, in file-name order.
pub fn folder(dir: impl AsRef<Path>, spec: ImageSpec) -> Result<Loaded> {
    load_folder(dir.as_ref(), spec, "image folder")
}
