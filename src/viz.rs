//! Pictures of anomaly maps for `scoredd detect` and `scoredd eval`: a
//! perceptual colour map (matplotlib's *inferno*), heat-map overlays on the
//! input image, ground-truth outlines, a colour bar, and labelled tiles stacked
//! into a gallery. Text (titles, captions, colour-bar values) is drawn with the
//! embedded font of [`crate::text`].
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
use crate::text;

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
/// blindness). Ours because plotters' colour maps have no inferno: its
/// `ViridisRGB` is an 8-stop approximation, and viridis' greens would hide the
/// green ground-truth outline ([`TRUTH_COLOR`]). `v` is clamped to [0, 1]; NaN gives [`NAN_GREY`].
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
    image_to_rgb_rect(chw, channels, size, size)
}

/// [`image_to_rgb`] of a `width × height` image.
pub fn image_to_rgb_rect(chw: &[f32], channels: usize, width: usize, height: usize) -> RgbImage {
    let plane = width * height;
    let get = |c: usize, i: usize| -> u8 {
        let v = chw.get(c * plane + i).copied().unwrap_or(0.0);
        let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        (v * 255.0).round() as u8
    };
    let mut img = RgbImage::new(width as u32, height as u32);
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
/// labels need it. Labels are [`BAR_TEXT`] px from 160 px of height up, else [`SMALL_TEXT`].
pub fn colorbar(height: u32, range: (f32, f32)) -> RgbImage {
    let height = height.max(16);
    let size = if height >= 160 { BAR_TEXT } else { SMALL_TEXT };
    let labels = tick_labels(range);
    let half_text = text::line_height(size).div_ceil(2);
    let (bar_x, bar_w, tick) = (4u32, 14u32, 3u32);
    let label_x = bar_x + bar_w + tick + 3;
    let label_w = labels
        .iter()
        .map(|l| text::measure(l, size).0)
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
        let top = y as i32 - text::line_height(size) as i32 / 2;
        text::draw(&mut img, label_x as i32, top, label, size, INK);
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

/// Text sizes in px (line height; capitals are about 0.63 of it): gallery
/// titles, tile captions, colour-bar values, and the fallback where space is short.
pub const TITLE_TEXT: f32 = 24.0;
pub const CAPTION_TEXT: f32 = 17.0;
pub const BAR_TEXT: f32 = 16.0;
pub const SMALL_TEXT: f32 = 13.0;

/// Gap between panels, tiles and around the gallery, in pixels.
const GAP: u32 = 6;

/// A labelled tile: `[input | overlay (with the ground-truth outline in
/// TRUTH_COLOR if there is a mask) | predicted mask, white on black, with the same
/// outline (if given)]`, each panel resized (nearest neighbour) to `tile` px wide,
/// with the caption under them ([`CAPTION_TEXT`] px if it fits, else [`SMALL_TEXT`],
/// clipped if still too long).
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
    let size = if text::measure(&t.caption, CAPTION_TEXT).0 <= width {
        CAPTION_TEXT
    } else {
        SMALL_TEXT
    };
    let caption_h = if t.caption.is_empty() {
        0
    } else {
        GAP / 2 + text::measure(&t.caption, size).1
    };
    let mut out = RgbImage::from_pixel(width, ph + caption_h, Rgb(BACKGROUND));
    for (i, p) in panels.iter().enumerate() {
        image::imageops::replace(&mut out, p, (i as u32 * (pw + GAP)) as i64, 0);
    }
    text::draw(&mut out, 0, (ph + GAP / 2) as i32, &t.caption, size, INK);
    Ok(out)
}

/// Stacks tiles (as made by [`tile`]; sizes may differ, each sits top-left in a cell
/// of the largest size) into a grid of `columns` columns (0 is taken as 1), under a
/// `title` ([`TITLE_TEXT`] px; `'\n'` for more lines) and beside a [`colorbar`] for `range`.
/// No tiles gives a small image with just the title.
pub fn gallery(tiles: &[RgbImage], columns: usize, title: &str, range: (f32, f32)) -> RgbImage {
    let heading = |title: &str| {
        let (w, h) = text::measure(title, TITLE_TEXT);
        (w, if title.is_empty() { 0 } else { h + GAP })
    };
    let (title_w, title_h) = heading(title);
    if tiles.is_empty() {
        let mut img = RgbImage::from_pixel(
            (title_w + 2 * GAP).max(64),
            (title_h + 2 * GAP).max(32),
            Rgb(BACKGROUND),
        );
        text::draw(&mut img, GAP as i32, GAP as i32, title, TITLE_TEXT, INK);
        return img;
    }
    let cols = columns.clamp(1, tiles.len()) as u32;
    let rows = tiles.len().div_ceil(cols as usize) as u32;
    let cell_w = tiles.iter().map(|t| t.width()).max().unwrap_or(0);
    let cell_h = tiles.iter().map(|t| t.height()).max().unwrap_or(0);
    let grid_w = cols * cell_w + (cols - 1) * 3 * GAP;
    let grid_h = rows * cell_h + (rows - 1) * 2 * GAP;
    let bar = colorbar(grid_h.clamp(64, 480), range);
    // A long title (detection settings) wraps to the grid's width rather
    // than widening the picture.
    let content_w = grid_w + bar.width() + GAP;
    let title = text::wrap(title, TITLE_TEXT, content_w);
    let (title_w, title_h) = heading(&title);
    let width = (content_w + 2 * GAP).max(title_w + 2 * GAP);
    let height = GAP + title_h + grid_h.max(bar.height()) + GAP;
    let mut img = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));
    text::draw(&mut img, GAP as i32, GAP as i32, &title, TITLE_TEXT, INK);
    let y0 = GAP + title_h;
    for (i, t) in tiles.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        let (x, y) = (GAP + c * (cell_w + 3 * GAP), y0 + r * (cell_h + 2 * GAP));
        image::imageops::replace(&mut img, t, x as i64, y as i64);
    }
    image::imageops::replace(&mut img, &bar, (GAP + grid_w + GAP) as i64, y0 as i64);
    img
}
