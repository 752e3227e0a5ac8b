//! The MVTec AD layout (also BTAD and MTD): `<category>/train/good/*`,
//! `<category>/test/<defect>/*`, `<category>/ground_truth/<defect>/<stem>_mask.png`.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use rayon::prelude::*;

use super::decode::{
    decode, decode_limited, display, image_files, list_dir, load_folder, log_skipped,
    no_images_error, to_tensor,
};
use super::{ImageSpec, Loaded, Skipped, TestItem, TestSet};
use crate::error::{Error, Result};

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
