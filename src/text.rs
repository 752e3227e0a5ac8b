//! Text in pictures: titles, tick labels, legends and captions, rasterised with
//! `ab_glyph` from DejaVu Sans embedded in the library (`assets/fonts/`, Bitstream
//! Vera / Arev licence). Embedding the font makes the pixels the same on every
//! machine and in wasm32, where there are no system fonts to find.
//!
//! Sizes are in pixels: `size` is the height of one line box (the font's ascent
//! minus its descent, `ab_glyph`'s `PxScale`); capitals are about 0.63 × `size`.
//!
//! ```
//! use image::RgbImage;
//! use scoredd::text;
//!
//! let (w, h) = text::measure("loss 0.25", 16.0);
//! let mut img = RgbImage::new(w, h);
//! text::draw(&mut img, 0, 0, "loss 0.25", 16.0, [255, 255, 255]);
//! assert!(img.pixels().any(|p| p.0 == [255, 255, 255]));
//! ```

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::RgbImage;

/// DejaVu Sans 2.37, unmodified (licence: assets/fonts/DejaVuSans-LICENSE.txt).
static FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Extra space between lines of multi-line text, as a fraction of `size`.
const LEADING: f32 = 0.2;

/// The embedded font, parsed once. It is a constant of the build, not input: a
/// parse failure would be a broken checkout, which the tests catch
/// (`tests/viz.rs`), so there is no error path for callers to handle.
fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(FONT_BYTES).expect("the embedded DejaVu Sans is a valid font")
    })
}

/// A usable pixel size: NaN, ±∞ and sizes under 1 px are taken as 1 px, and
/// anything over 1000 px as 1000 (no picture here needs more, and it bounds
/// the work a caller can ask for).
fn clamp_size(size: f32) -> f32 {
    if size.is_nan() {
        1.0
    } else {
        size.clamp(1.0, 1000.0)
    }
}

/// Height in pixels of one line of text at `size` (ascent − descent, rounded up).
pub fn line_height(size: f32) -> u32 {
    let f = font().as_scaled(PxScale::from(clamp_size(size)));
    (f.ascent() - f.descent()).ceil() as u32
}

/// Distance from the top of one line to the top of the next.
fn line_pitch(size: f32) -> f32 {
    line_height(size) as f32 + (LEADING * clamp_size(size)).round()
}

/// Advance width of one line: glyph advances plus kerning.
fn line_width(line: &str, size: f32) -> f32 {
    let f = font().as_scaled(PxScale::from(clamp_size(size)));
    let mut caret = 0.0;
    let mut prev = None;
    for c in line.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        caret += f.h_advance(id);
        prev = Some(id);
    }
    caret
}

/// Size in pixels (width, height) of the box `text` takes at `size`: the widest
/// line by the lines' height, lines split at `'\n'`. Empty text is (0, 0).
/// [`draw`] and [`rasterize`] never touch a pixel outside this box.
pub fn measure(text: &str, size: f32) -> (u32, u32) {
    if text.is_empty() {
        return (0, 0);
    }
    let lines = text.split('\n').count() as f32;
    let w = text
        .split('\n')
        .map(|l| line_width(l, size).ceil() as u32)
        .max()
        .unwrap_or(0);
    let h = (lines - 1.0) * line_pitch(size) + line_height(size) as f32;
    (w, h as u32)
}

/// `text` broken into lines at spaces so that each line at `size` is at
/// most `width` pixels wide (existing line breaks kept; a word wider than
/// `width` gets a line of its own and overhangs). Only the breaking spaces
/// change: joining the lines with spaces gives `text` back.
pub fn wrap(text: &str, size: f32, width: u32) -> String {
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split(' ') {
            let candidate = match line.is_empty() {
                true => word.to_string(),
                false => format!("{line} {word}"),
            };
            if !line.is_empty() && line_width(&candidate, size).ceil() as u32 > width {
                out.push(std::mem::replace(&mut line, word.to_string()));
            } else {
                line = candidate;
            }
        }
        out.push(line);
    }
    out.join("\n")
}

/// Calls `pixel(x, y, coverage)` for every pixel that `text` at `size` covers,
/// with (x, y) relative to the top-left corner of its [`measure`] box and
/// coverage in (0, 1]. Glyph edges that stick out of the box (the tail of a
/// 'j' left of the first caret) are cut, so callers can rely on the box.
/// Characters the font lacks draw as its "missing glyph" box.
pub fn rasterize(text: &str, size: f32, mut pixel: impl FnMut(u32, u32, f32)) {
    let (w, h) = measure(text, size);
    let f = font().as_scaled(PxScale::from(clamp_size(size)));
    for (row, line) in text.split('\n').enumerate() {
        let baseline = row as f32 * line_pitch(size) + f.ascent();
        let mut caret = 0.0;
        let mut prev = None;
        for c in line.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(f.scale(), point(caret, baseline));
            caret += f.h_advance(id);
            let Some(outline) = font().outline_glyph(glyph) else {
                continue; // a space, or a glyph with no outline
            };
            let min = outline.px_bounds().min;
            outline.draw(|gx, gy, cov| {
                let (x, y) = (min.x as i64 + gx as i64, min.y as i64 + gy as i64);
                let inside = x >= 0 && y >= 0 && x < w as i64 && y < h as i64;
                if inside && cov > 0.0 {
                    pixel(x as u32, y as u32, cov.min(1.0));
                }
            });
        }
    }
}

/// Draws `text` at `size` in `color` with the top-left corner of its
/// [`measure`] box at (`x`, `y`), anti-aliased: each covered pixel is blended
/// towards `color` by its coverage (no background is painted). Whatever falls
/// outside the image is clipped.
pub fn draw(img: &mut RgbImage, x: i32, y: i32, text: &str, size: f32, color: [u8; 3]) {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    rasterize(text, size, |gx, gy, cov| {
        let (px, py) = (x as i64 + gx as i64, y as i64 + gy as i64);
        if px < 0 || py < 0 || px >= iw || py >= ih {
            return;
        }
        let p = img.get_pixel_mut(px as u32, py as u32);
        for (dst, &src) in p.0.iter_mut().zip(&color) {
            *dst = (*dst as f32 + (src as f32 - *dst as f32) * cov).round() as u8;
        }
    });
}
