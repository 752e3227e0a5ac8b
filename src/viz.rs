//! Pictures of anomaly maps for `scoredd detect` and `scoredd eval`: a
//! perceptual colour map (matplotlib's *inferno*), heat-map overlays on the
//! input image, ground-truth outlines, a colour bar, a tiny built-in bitmap
//! font, and labelled tiles stacked into a gallery.
//!
//! Everything here is pure pixel computation on [`RgbImage`]s (it builds for
//! wasm32 too); write the result with [`crate::plot::save_png`].
//!
//! ```
//! use scoredd::viz::{gallery, image_to_rgb, tile, Tile};
//!
//! let size = 8;
//! let img = image_to_rgb(&vec![0.5; size * size], 1, size);
//! let map: Vec<f32> = (0..size * size).map(|i| i as f32 / 63.0).collect();
//! let t = tile(
//!     &Tile { image: &img, map: &map, truth: None, predicted: None, caption: "good 000  score 0.12".into() },
//!     (0.0, 1.0),
//!     64,
//! )?;
//! let g = gallery(&[t], 4, "bottle", (0.0, 1.0));
//! assert!(g.width() > 64 && g.height() > 64);
//! # Ok::<(), scoredd::Error>(())
//! ```

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::plot::Color;

/// The colour [`colormap`] gives NaN, and [`overlay`] paints where a map value is NaN or ±∞.
pub const NAN_GREY: Color = [128, 128, 128];

/// Brightness factor of the greyscale image under an [`overlay`].
pub const DIM: f32 = 0.7;

/// Opacity of the colour-mapped value at the top of the range (v = 1) in an [`overlay`].
pub const ALPHA_MAX: f32 = 0.9;

/// Colour of the ground-truth outline drawn by [`tile`] (bright green: absent from inferno).
pub const TRUTH_COLOR: Color = [40, 255, 90];

/// Page background of [`tile`], [`colorbar`] and [`gallery`].
pub const BACKGROUND: Color = [255, 255, 255];

/// Text colour of [`tile`], [`colorbar`] and [`gallery`].
pub const INK: Color = [25, 25, 25];

/// matplotlib's "inferno" sampled at v = k/32, k = 0..=32 (rounded to 8 bits).
/// Linear interpolation between these is within 1.5/255 of the published
/// 256-entry table everywhere.
const INFERNO: [[u8; 3]; 33] = [
    [0, 0, 4],
    [4, 3, 18],
    [11, 7, 36],
    [21, 11, 55],
    [33, 12, 74],
    [46, 10, 90],
    [60, 9, 101],
    [74, 12, 107],
    [87, 16, 109],
    [99, 20, 110],
    [112, 25, 110],
    [125, 30, 109],
    [137, 34, 106],
    [150, 39, 102],
    [163, 43, 97],
    [175, 49, 92],
    [187, 55, 85],
    [198, 62, 77],
    [209, 70, 68],
    [219, 79, 59],
    [227, 89, 50],
    [235, 101, 40],
    [241, 113, 30],
    [246, 127, 20],
    [249, 141, 10],
    [251, 156, 6],
    [252, 171, 15],
    [251, 186, 31],
    [249, 202, 50],
    [245, 217, 73],
    [242, 232, 101],
    [243, 245, 134],
    [252, 255, 164],
];

/// The "inferno" colour map (black → purple → red → orange → pale yellow; luminance
/// rises monotonically, so it prints in greyscale and is readable with colour
/// blindness). `v` is clamped to [0, 1]; NaN gives [`NAN_GREY`].
pub fn colormap(v: f32) -> [u8; 3] {
    if v.is_nan() {
        return NAN_GREY;
    }
    let n = INFERNO.len() - 1;
    let p = v.clamp(0.0, 1.0) * n as f32;
    let i = (p.floor() as usize).min(n - 1);
    let f = p - i as f32;
    let (a, b) = (INFERNO[i], INFERNO[i + 1]);
    std::array::from_fn(|c| (a[c] as f32 + (b[c] as f32 - a[c] as f32) * f).round() as u8)
}

/// An image given as CHW `f32` values in [0, 1] (`channels` × `size` × `size`) as an
/// [`RgbImage`]. One channel is replicated to grey; with three or more the first three
/// are R, G, B (with two, the first is used as grey). Values are clamped, NaN reads as
/// 0, and values missing from a short slice read as 0.
pub fn image_to_rgb(chw: &[f32], channels: usize, size: usize) -> RgbImage {
    let plane = size * size;
    let get = |c: usize, i: usize| -> u8 {
        let v = chw.get(c * plane + i).copied().unwrap_or(0.0);
        let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        (v * 255.0).round() as u8
    };
    let mut img = RgbImage::new(size as u32, size as u32);
    if channels == 0 {
        return img;
    }
    for (i, p) in img.pixels_mut().enumerate() {
        p.0 = if channels >= 3 {
            [get(0, i), get(1, i), get(2, i)]
        } else {
            let g = get(0, i);
            [g, g, g]
        };
    }
    img
}

/// Rec. 601 luma of a pixel, in integer arithmetic (rounded).
pub fn luma(p: [u8; 3]) -> u8 {
    ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8
}

/// The background an [`overlay`] shows where the map is at the bottom of its range:
/// the pixel's [`luma`] times [`DIM`], rounded.
pub fn dimmed_gray(p: [u8; 3]) -> u8 {
    (luma(p) as f32 * DIM).round() as u8
}

/// `x` mapped to [0, 1] by `range` = (lo, hi), clamped; `None` for NaN or ±∞.
/// A degenerate range (lo == hi, or a bound not finite) maps everything to 0.
pub fn normalize(x: f32, range: (f32, f32)) -> Option<f32> {
    if !x.is_finite() {
        return None;
    }
    let (lo, hi) = range;
    let span = hi - lo;
    if !lo.is_finite() || !hi.is_finite() || span == 0.0 || !span.is_finite() {
        return Some(0.0);
    }
    let v = (x - lo) / span;
    Some(if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
}

/// The finite minimum and maximum over some maps, to give several pictures one scale;
/// (0, 0) when there is no finite value.
pub fn finite_range<'a>(maps: impl IntoIterator<Item = &'a [f32]>) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in maps.into_iter().flatten() {
        if x.is_finite() {
            lo = lo.min(x);
            hi = hi.max(x);
        }
    }
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// Heat map over an image. Each pixel is the image in greyscale, dimmed
/// ([`dimmed_gray`]), blended with [`colormap`]`(v)` at opacity
/// [`ALPHA_MAX`]` · v^0.75`, where v is the map value normalised by `range`
/// ([`normalize`]) — so normal areas show the image and hot ones the colour.
/// NaN or ±∞ map values are painted [`NAN_GREY`].
///
/// `map` is row-major with one value per pixel of `image` (size × size);
/// any other length is [`Error::Invalid`].
pub fn overlay(image: &RgbImage, map: &[f32], range: (f32, f32)) -> Result<RgbImage> {
    let (w, h) = image.dimensions();
    let n = w as usize * h as usize;
    if map.len() != n {
        return Err(Error::Invalid(format!(
            "overlay: the map has {} values but the image is {w}×{h} = {n} pixels",
            map.len()
        )));
    }
    let mut out = RgbImage::new(w, h);
    for ((o, p), &x) in out.pixels_mut().zip(image.pixels()).zip(map) {
        o.0 = match normalize(x, range) {
            None => NAN_GREY,
            Some(v) => {
                let g = dimmed_gray(p.0);
                if v <= 0.0 {
                    [g, g, g]
                } else {
                    let a = ALPHA_MAX * v.powf(0.75);
                    let c = colormap(v);
                    std::array::from_fn(|k| (g as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8)
                }
            }
        };
    }
    Ok(out)
}

fn in_mask(mask: &[u8], w: usize, x: usize, y: usize) -> bool {
    mask[y * w + x] != 0
}

/// Draws the outline of a binary mask (any non-zero byte is "in": 1/0 and 255/0 both
/// work; row-major, one byte per pixel of `img`) in `color`, 1 px wide: a pixel is on
/// the outline if it is in the mask and has a 4-neighbour outside it or lies on the
/// image border. A mask of the wrong length draws nothing.
pub fn draw_outline(img: &mut RgbImage, mask: &[u8], color: [u8; 3]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if mask.len() != w * h {
        return;
    }
    for y in 0..h {
        for x in 0..w {
            if !in_mask(mask, w, x, y) {
                continue;
            }
            let edge = x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || !in_mask(mask, w, x - 1, y)
                || !in_mask(mask, w, x + 1, y)
                || !in_mask(mask, w, x, y - 1)
                || !in_mask(mask, w, x, y + 1);
            if edge {
                img.put_pixel(x as u32, y as u32, Rgb(color));
            }
        }
    }
}

/// Nearest-neighbour upscale by an integer factor (a factor of 0 is taken as 1).
pub fn upscale(img: &RgbImage, factor: u32) -> RgbImage {
    let f = factor.max(1);
    RgbImage::from_fn(img.width() * f, img.height() * f, |x, y| {
        *img.get_pixel(x / f, y / f)
    })
}

/// Nearest-neighbour resize of a `w`×`h` byte plane to `nw`×`nh`.
fn resize_mask(mask: &[u8], w: u32, h: u32, nw: u32, nh: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(nw as usize * nh as usize);
    for y in 0..nh {
        let sy = (y as u64 * h as u64 / nh as u64) as usize;
        for x in 0..nw {
            let sx = (x as u64 * w as u64 / nw as u64) as usize;
            out.push(mask[sy * w as usize + sx]);
        }
    }
    out
}

/// Nearest-neighbour resize of an image.
fn resize(img: &RgbImage, nw: u32, nh: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return RgbImage::from_pixel(nw, nh, Rgb(BACKGROUND));
    }
    RgbImage::from_fn(nw, nh, |x, y| {
        let sx = (x as u64 * w as u64 / nw as u64) as u32;
        let sy = (y as u64 * h as u64 / nh as u64) as u32;
        *img.get_pixel(sx, sy)
    })
}

// ---------------------------------------------------------------------------
// Text

/// Glyph cell: 5 × 8 pixels (capitals and digits 7 tall, one more row for the
/// descenders of g j p q y), advanced by 6 (one column of spacing).
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 8;
/// Height of capitals and digits: what labels are centred on.
const CAP_H: u32 = 7;
const ADVANCE: u32 = GLYPH_W + 1;
/// Line pitch in font pixels (8 rows + 2 rows of leading).
const LINE_PITCH: u32 = GLYPH_H + 2;

/// The classic 5×7 LCD font for ASCII 32..=126, with descenders (row 7) added to
/// g j p q y: five columns per glyph, bit r of a column byte is row r (top = bit 0).
const FONT: [[u8; 5]; 95] = [
    [0x00, 0x00, 0x00, 0x00, 0x00], // ' '
    [0x00, 0x00, 0x5F, 0x00, 0x00], // !
    [0x00, 0x07, 0x00, 0x07, 0x00], // "
    [0x14, 0x7F, 0x14, 0x7F, 0x14], // #
    [0x24, 0x2A, 0x7F, 0x2A, 0x12], // $
    [0x23, 0x13, 0x08, 0x64, 0x62], // %
    [0x36, 0x49, 0x55, 0x22, 0x50], // &
    [0x00, 0x05, 0x03, 0x00, 0x00], // '
    [0x00, 0x1C, 0x22, 0x41, 0x00], // (
    [0x00, 0x41, 0x22, 0x1C, 0x00], // )
    [0x14, 0x08, 0x3E, 0x08, 0x14], // *
    [0x08, 0x08, 0x3E, 0x08, 0x08], // +
    [0x00, 0x50, 0x30, 0x00, 0x00], // ,
    [0x08, 0x08, 0x08, 0x08, 0x08], // -
    [0x00, 0x60, 0x60, 0x00, 0x00], // .
    [0x20, 0x10, 0x08, 0x04, 0x02], // /
    [0x3E, 0x51, 0x49, 0x45, 0x3E], // 0
    [0x00, 0x42, 0x7F, 0x40, 0x00], // 1
    [0x42, 0x61, 0x51, 0x49, 0x46], // 2
    [0x21, 0x41, 0x45, 0x4B, 0x31], // 3
    [0x18, 0x14, 0x12, 0x7F, 0x10], // 4
    [0x27, 0x45, 0x45, 0x45, 0x39], // 5
    [0x3C, 0x4A, 0x49, 0x49, 0x30], // 6
    [0x01, 0x71, 0x09, 0x05, 0x03], // 7
    [0x36, 0x49, 0x49, 0x49, 0x36], // 8
    [0x06, 0x49, 0x49, 0x29, 0x1E], // 9
    [0x00, 0x36, 0x36, 0x00, 0x00], // :
    [0x00, 0x56, 0x36, 0x00, 0x00], // ;
    [0x08, 0x14, 0x22, 0x41, 0x00], // <
    [0x14, 0x14, 0x14, 0x14, 0x14], // =
    [0x00, 0x41, 0x22, 0x14, 0x08], // >
    [0x02, 0x01, 0x51, 0x09, 0x06], // ?
    [0x32, 0x49, 0x79, 0x41, 0x3E], // @
    [0x7E, 0x11, 0x11, 0x11, 0x7E], // A
    [0x7F, 0x49, 0x49, 0x49, 0x36], // B
    [0x3E, 0x41, 0x41, 0x41, 0x22], // C
    [0x7F, 0x41, 0x41, 0x22, 0x1C], // D
    [0x7F, 0x49, 0x49, 0x49, 0x41], // E
    [0x7F, 0x09, 0x09, 0x09, 0x01], // F
    [0x3E, 0x41, 0x49, 0x49, 0x7A], // G
    [0x7F, 0x08, 0x08, 0x08, 0x7F], // H
    [0x00, 0x41, 0x7F, 0x41, 0x00], // I
    [0x20, 0x40, 0x41, 0x3F, 0x01], // J
    [0x7F, 0x08, 0x14, 0x22, 0x41], // K
    [0x7F, 0x40, 0x40, 0x40, 0x40], // L
    [0x7F, 0x02, 0x0C, 0x02, 0x7F], // M
    [0x7F, 0x04, 0x08, 0x10, 0x7F], // N
    [0x3E, 0x41, 0x41, 0x41, 0x3E], // O
    [0x7F, 0x09, 0x09, 0x09, 0x06], // P
    [0x3E, 0x41, 0x51, 0x21, 0x5E], // Q
    [0x7F, 0x09, 0x19, 0x29, 0x46], // R
    [0x46, 0x49, 0x49, 0x49, 0x31], // S
    [0x01, 0x01, 0x7F, 0x01, 0x01], // T
    [0x3F, 0x40, 0x40, 0x40, 0x3F], // U
    [0x1F, 0x20, 0x40, 0x20, 0x1F], // V
    [0x3F, 0x40, 0x38, 0x40, 0x3F], // W
    [0x63, 0x14, 0x08, 0x14, 0x63], // X
    [0x07, 0x08, 0x70, 0x08, 0x07], // Y
    [0x61, 0x51, 0x49, 0x45, 0x43], // Z
    [0x00, 0x7F, 0x41, 0x41, 0x00], // [
    [0x02, 0x04, 0x08, 0x10, 0x20], // backslash
    [0x00, 0x41, 0x41, 0x7F, 0x00], // ]
    [0x04, 0x02, 0x01, 0x02, 0x04], // ^
    [0x40, 0x40, 0x40, 0x40, 0x40], // _
    [0x00, 0x01, 0x02, 0x04, 0x00], // `
    [0x20, 0x54, 0x54, 0x54, 0x78], // a
    [0x7F, 0x48, 0x44, 0x44, 0x38], // b
    [0x38, 0x44, 0x44, 0x44, 0x20], // c
    [0x38, 0x44, 0x44, 0x48, 0x7F], // d
    [0x38, 0x54, 0x54, 0x54, 0x18], // e
    [0x08, 0x7E, 0x09, 0x01, 0x02], // f
    [0x18, 0xA4, 0xA4, 0xA4, 0x7C], // g
    [0x7F, 0x08, 0x04, 0x04, 0x78], // h
    [0x00, 0x44, 0x7D, 0x40, 0x00], // i
    [0x40, 0x80, 0x84, 0x7D, 0x00], // j
    [0x7F, 0x10, 0x28, 0x44, 0x00], // k
    [0x00, 0x41, 0x7F, 0x40, 0x00], // l
    [0x7C, 0x04, 0x18, 0x04, 0x78], // m
    [0x7C, 0x08, 0x04, 0x04, 0x78], // n
    [0x38, 0x44, 0x44, 0x44, 0x38], // o
    [0xFC, 0x24, 0x24, 0x24, 0x18], // p
    [0x18, 0x24, 0x24, 0x24, 0xFC], // q
    [0x7C, 0x08, 0x04, 0x04, 0x08], // r
    [0x48, 0x54, 0x54, 0x54, 0x20], // s
    [0x04, 0x3F, 0x44, 0x40, 0x20], // t
    [0x3C, 0x40, 0x40, 0x20, 0x7C], // u
    [0x1C, 0x20, 0x40, 0x20, 0x1C], // v
    [0x3C, 0x40, 0x30, 0x40, 0x3C], // w
    [0x44, 0x28, 0x10, 0x28, 0x44], // x
    [0x1C, 0xA0, 0xA0, 0xA0, 0x7C], // y
    [0x44, 0x64, 0x54, 0x4C, 0x44], // z
    [0x00, 0x08, 0x36, 0x41, 0x00], // {
    [0x00, 0x00, 0x7F, 0x00, 0x00], // |
    [0x00, 0x41, 0x36, 0x08, 0x00], // }
    [0x10, 0x08, 0x08, 0x10, 0x08], // ~
];

fn glyph(c: char) -> &'static [u8; 5] {
    let i = c as u32;
    if (32..=126).contains(&i) {
        &FONT[(i - 32) as usize]
    } else {
        &FONT[(b'?' - 32) as usize]
    }
}

/// Width in pixels of `text` drawn by [`draw_text`] at `scale` (a scale of 0 is taken
/// as 1): 6·scale per character less the trailing gap; the widest line if `text` has
/// several (`'\n'`). Characters outside ASCII 32..=126 draw as `?` and count as one.
pub fn text_width(text: &str, scale: u32) -> u32 {
    let s = scale.max(1);
    text.split('\n')
        .map(|l| {
            let n = l.chars().count() as u32;
            if n == 0 {
                0
            } else {
                n * ADVANCE * s - s
            }
        })
        .max()
        .unwrap_or(0)
}

/// Height in pixels of `text` drawn by [`draw_text`]: 8·scale per line (7 above the
/// baseline, 1 for descenders) plus 2·scale between lines.
pub fn text_height(text: &str, scale: u32) -> u32 {
    let s = scale.max(1);
    let lines = text.split('\n').count() as u32;
    lines * LINE_PITCH * s - (LINE_PITCH - GLYPH_H) * s
}

/// Draws `text` with the built-in 5×7 bitmap font (5×8 with descenders) (ASCII 32..=126; anything else
/// draws as `?`; `'\n'` starts a new line) with its top-left corner at (`x`, `y`),
/// each font pixel a `scale`×`scale` block (0 is taken as 1). Only pixels inside the
/// box [`text_width`] × [`text_height`] from (`x`, `y`) change, and only the glyphs'
/// own pixels (no background); whatever falls outside the image is clipped.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: u32, color: [u8; 3]) {
    let s = scale.max(1) as i64;
    let (w, h) = (img.width() as i64, img.height() as i64);
    for (row, line) in text.split('\n').enumerate() {
        let y0 = y as i64 + row as i64 * LINE_PITCH as i64 * s;
        for (k, c) in line.chars().enumerate() {
            let x0 = x as i64 + k as i64 * ADVANCE as i64 * s;
            if x0 >= w || y0 >= h {
                break;
            }
            for (col, &bits) in glyph(c).iter().enumerate() {
                for r in 0..GLYPH_H as i64 {
                    if bits & (1 << r) == 0 {
                        continue;
                    }
                    let (px, py) = (x0 + col as i64 * s, y0 + r * s);
                    for yy in py.max(0)..(py + s).min(h) {
                        for xx in px.max(0)..(px + s).min(w) {
                            img.put_pixel(xx as u32, yy as u32, Rgb(color));
                        }
                    }
                }
            }
        }
    }
}

/// A number for a tick label, with `decimals` digits after the point, or in
/// scientific notation when that would be unreadable.
fn format_tick(v: f32, decimals: usize, scientific: bool) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if scientific {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.decimals$}");
    // "-0.00" reads oddly on an axis.
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// The labels of lo, mid and hi for a colour bar, with enough digits to tell them apart.
fn tick_labels(range: (f32, f32)) -> [String; 3] {
    let (lo, hi) = range;
    let mid = lo + (hi - lo) / 2.0;
    let span = (hi - lo).abs();
    let big = lo.abs().max(hi.abs());
    let scientific = big.is_finite() && (big >= 1e5 || (big > 0.0 && big < 1e-3));
    let decimals = if span > 0.0 && span.is_finite() {
        (2.0 - span.log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        2
    };
    [lo, mid, hi].map(|v| format_tick(v, decimals, scientific))
}

/// A vertical colour bar `height` px tall: the colour map from `range.0` (bottom) to
/// `range.1` (top) with ticks labelled lo, mid and hi. About 60 px wide; wider when the
/// labels need it. Labels use scale 2 from 160 px of height up, else scale 1.
pub fn colorbar(height: u32, range: (f32, f32)) -> RgbImage {
    let height = height.max(16);
    let scale = if height >= 160 { 2 } else { 1 };
    let labels = tick_labels(range);
    let half_text = (CAP_H * scale).div_ceil(2);
    let (bar_x, bar_w, tick) = (4u32, 14u32, 3u32);
    let label_x = bar_x + bar_w + tick + 3;
    let label_w = labels
        .iter()
        .map(|l| text_width(l, scale))
        .max()
        .unwrap_or(0);
    let width = (label_x + label_w + 4).max(60);
    let mut img = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));
    // The bar spans [top, bottom] so that labels centred on its ends fit inside.
    let (top, bottom) = (half_text, height - 1 - half_text);
    let span = (bottom - top).max(1) as f32;
    for y in top..=bottom {
        let c = colormap(1.0 - (y - top) as f32 / span);
        for x in bar_x..bar_x + bar_w {
            img.put_pixel(x, y, Rgb(c));
        }
    }
    for x in bar_x - 1..=bar_x + bar_w {
        img.put_pixel(x, top.saturating_sub(1), Rgb(INK));
        img.put_pixel(x, (bottom + 1).min(height - 1), Rgb(INK));
    }
    for y in top.saturating_sub(1)..=(bottom + 1).min(height - 1) {
        img.put_pixel(bar_x - 1, y, Rgb(INK));
        img.put_pixel(bar_x + bar_w, y, Rgb(INK));
    }
    let mid = (top + bottom) / 2;
    for (label, y) in labels.iter().zip([bottom, mid, top]) {
        for x in bar_x + bar_w..bar_x + bar_w + tick {
            img.put_pixel(x, y, Rgb(INK));
        }
        draw_text(
            &mut img,
            label_x as i32,
            y as i32 - (CAP_H * scale / 2) as i32,
            label,
            scale,
            INK,
        );
    }
    img
}

// ---------------------------------------------------------------------------
// Tiles and galleries

/// One test image for a [`gallery`].
pub struct Tile<'a> {
    /// The input image.
    pub image: &'a RgbImage,
    /// Its anomaly map: one value per pixel, row-major.
    pub map: &'a [f32],
    /// The ground-truth defect mask (non-zero = defect), if the data set has one.
    pub truth: Option<&'a [u8]>,
    /// The predicted binary mask (non-zero = defect), if thresholded.
    pub predicted: Option<&'a [u8]>,
    /// A line (or several, split by `'\n'`) under the panels, e.g. "crack 012  score 0.83  DEFECT".
    pub caption: String,
}

/// Gap between panels, tiles and around the gallery, in pixels.
const GAP: u32 = 6;

/// A labelled tile: `[input | overlay (with the ground-truth outline in
/// TRUTH_COLOR if there is a mask) | predicted mask, white on black, with the same
/// outline (if given)]`, each panel resized (nearest neighbour) to `tile` px wide,
/// with the caption under them (scale 2 if it fits, else 1, clipped if still too long).
///
/// Errors with [`Error::Invalid`] if the map or a mask does not hold one value per
/// image pixel, or if `tile` or the image is empty.
pub fn tile(t: &Tile, range: (f32, f32), tile: u32) -> Result<RgbImage> {
    let (w, h) = t.image.dimensions();
    let n = w as usize * h as usize;
    if n == 0 || tile == 0 {
        return Err(Error::Invalid(format!(
            "tile: empty image ({w}×{h}) or tile size {tile}"
        )));
    }
    for (what, len) in [
        ("ground-truth mask", t.truth.map(|m| m.len())),
        ("predicted mask", t.predicted.map(|m| m.len())),
    ] {
        if let Some(len) = len {
            if len != n {
                return Err(Error::Invalid(format!(
                    "tile: the {what} has {len} values but the image is {w}×{h} = {n} pixels"
                )));
            }
        }
    }
    let heat = overlay(t.image, t.map, range)?;
    let (pw, ph) = (tile, ((tile as u64 * h as u64 / w as u64) as u32).max(1));
    let truth = t.truth.map(|m| resize_mask(m, w, h, pw, ph));

    let mut panels = vec![resize(t.image, pw, ph)];
    let mut heat = resize(&heat, pw, ph);
    if let Some(m) = &truth {
        draw_outline(&mut heat, m, TRUTH_COLOR);
    }
    panels.push(heat);
    if let Some(p) = t.predicted {
        let p = resize_mask(p, w, h, pw, ph);
        let mut img = RgbImage::from_fn(pw, ph, |x, y| {
            let on = p[(y * pw + x) as usize] != 0;
            Rgb(if on { [235, 235, 235] } else { [20, 20, 20] })
        });
        if let Some(m) = &truth {
            draw_outline(&mut img, m, TRUTH_COLOR);
        }
        panels.push(img);
    }

    let k = panels.len() as u32;
    let width = k * pw + (k - 1) * GAP;
    let scale = if text_width(&t.caption, 2) <= width {
        2
    } else {
        1
    };
    let caption_h = if t.caption.is_empty() {
        0
    } else {
        GAP / 2 + text_height(&t.caption, scale)
    };
    let mut out = RgbImage::from_pixel(width, ph + caption_h, Rgb(BACKGROUND));
    for (i, p) in panels.iter().enumerate() {
        image::imageops::replace(&mut out, p, (i as u32 * (pw + GAP)) as i64, 0);
    }
    draw_text(&mut out, 0, (ph + GAP / 2) as i32, &t.caption, scale, INK);
    Ok(out)
}

/// Stacks tiles (as made by [`tile`]; sizes may differ, each sits top-left in a cell
/// of the largest size) into a grid of `columns` columns (0 is taken as 1), under a
/// `title` (scale 2; `'\n'` for more lines) and beside a [`colorbar`] for `range`.
/// No tiles gives a small image with just the title.
pub fn gallery(tiles: &[RgbImage], columns: usize, title: &str, range: (f32, f32)) -> RgbImage {
    let title_w = text_width(title, 2);
    let title_h = if title.is_empty() {
        0
    } else {
        text_height(title, 2) + GAP
    };
    if tiles.is_empty() {
        let mut img = RgbImage::from_pixel(
            (title_w + 2 * GAP).max(64),
            (title_h + 2 * GAP).max(32),
            Rgb(BACKGROUND),
        );
        draw_text(&mut img, GAP as i32, GAP as i32, title, 2, INK);
        return img;
    }
    let cols = columns.clamp(1, tiles.len()) as u32;
    let rows = tiles.len().div_ceil(cols as usize) as u32;
    let cell_w = tiles.iter().map(|t| t.width()).max().unwrap_or(0);
    let cell_h = tiles.iter().map(|t| t.height()).max().unwrap_or(0);
    let grid_w = cols * cell_w + (cols - 1) * 3 * GAP;
    let grid_h = rows * cell_h + (rows - 1) * 2 * GAP;
    let bar = colorbar(grid_h.clamp(64, 480), range);
    let width = (grid_w + 2 * GAP + bar.width() + GAP).max(title_w + 2 * GAP);
    let height = GAP + title_h + grid_h.max(bar.height()) + GAP;
    let mut img = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));
    draw_text(&mut img, GAP as i32, GAP as i32, title, 2, INK);
    let y0 = GAP + title_h;
    for (i, t) in tiles.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        let (x, y) = (GAP + c * (cell_w + 3 * GAP), y0 + r * (cell_h + 2 * GAP));
        image::imageops::replace(&mut img, t, x as i64, y as i64);
    }
    image::imageops::replace(&mut img, &bar, (GAP + grid_w + GAP) as i64, y0 as i64);
    img
}
