//! The MNIST idx files (gzip or plain), keeping one digit.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::DynamicImage;
use rayon::prelude::*;

use super::decode::{display, to_tensor};
use super::{ImageSpec, Loaded, MIN_SIDE};
use crate::error::{Error, Result};

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

/// The one-class protocol's split of one digit's images (positions in file
/// order): even positions (0, 2, 4, …) are the train half, odd ones the test
/// half.
pub fn mnist_halves(n: usize) -> (Vec<usize>, Vec<usize>) {
    ((0..n).step_by(2).collect(), (1..n).step_by(2).collect())
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
