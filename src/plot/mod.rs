//! Diagnostic charts drawn with `plotters` into RGB images: the training-loss
//! curve ([`loss_curve`]) and panels of 2-D trajectories ([`path_panels`], the
//! toy experiment), with axes, tick values, titles and legends inside the
//! picture; and [`save_png`] for any picture.
//!
//! All drawing is in memory (plotters' bitmap backend over a byte buffer), and
//! text comes from the embedded font ([`crate::text`], through
//! [`backend::TextBackend`]), so it builds and draws the same on wasm32.

mod backend;
mod loss;
mod paths;

use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::Color as _;

use crate::error::{Error, Result};
use crate::text;

pub use backend::TextBackend;
pub use loss::{
    loss_curve, loss_scale, running_mean, running_median, smooth_loss, smoothing_half_width, YScale,
};
pub use paths::{path_panels, PathPanel, Trace};

pub type Color = [u8; 3];

/// Text colour of charts.
const INK: RGBColor = RGBColor(25, 25, 25);

/// Font family handed to plotters; ignored by [`TextBackend`], which has one font.
const FAMILY: &str = "sans-serif";

/// A drawing area over a [`TextBackend`], in pixel coordinates.
type Area<'a> = DrawingArea<TextBackend<'a>, Shift>;

/// What plotters' drawing calls return.
type DrawResult<T = ()> = std::result::Result<T, DrawingAreaErrorKind<backend::BackendError>>;

/// Largest width or height [`render`] draws: bounds the buffer a caller can ask for.
const MAX_SIDE: u32 = 16_384;

/// Writes any RGB image as PNG atomically (temp file + rename), so a crash
/// never leaves half a picture.
pub fn save_png(img: &RgbImage, path: &std::path::Path) -> Result<()> {
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: tmp.display().to_string(),
            detail: e.to_string(),
        })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A white `width`×`height` picture with `paint` drawn on it. `what` names the
/// picture in errors. Sizes of 0 or over [`MAX_SIDE`] are [`Error::Invalid`].
fn render(
    width: u32,
    height: u32,
    what: &'static str,
    paint: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<RgbImage> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(Error::Invalid(format!(
            "{what}: a {width}×{height} picture (each side must be 1..={MAX_SIDE})"
        )));
    }
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = TextBackend::new(&mut buf, (width, height)).into_drawing_area();
        paint(&root)
            .and_then(|()| root.present())
            .map_err(|e| Error::Draw {
                what,
                detail: e.to_string(),
            })?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| Error::Draw {
        what,
        detail: "the pixel buffer does not match the picture size".into(),
    })
}

fn rgb(c: Color) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// A text style of `size` px in [`INK`].
fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&INK)
}

/// How a legend entry shows its series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mark {
    /// A line segment (a path or a curve).
    Line(Color),
    /// A filled dot (points, end points).
    Dot(Color),
    /// A hollow square (starting points).
    Square(Color),
    /// A filled swatch (a shaded background).
    Patch(Color),
}

/// Where a legend sits inside the plotting area.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Corner {
    TopRight,
    BottomRight,
}

/// Draws the marker `mark` centred on pixel `at` of `area`.
fn draw_mark(area: &Area<'_>, mark: Mark, at: (i32, i32)) -> DrawResult {
    let (x, y) = at;
    match mark {
        Mark::Line(c) => area.draw(&PathElement::new(
            vec![(x - 11, y), (x + 11, y)],
            rgb(c).stroke_width(3),
        )),
        Mark::Dot(c) => area.draw(&Circle::new(at, 4, rgb(c).filled())),
        Mark::Square(c) => area.draw(&Rectangle::new(
            [(x - 5, y - 5), (x + 5, y + 5)],
            rgb(c).stroke_width(2),
        )),
        Mark::Patch(c) => area.draw(&Rectangle::new(
            [(x - 9, y - 6), (x + 9, y + 6)],
            rgb(c).filled(),
        )),
    }
}

/// Draws a legend box listing `entries` in a corner of `area` (a plotting
/// area in pixels). plotters' own legend measures its text through the
/// platform font (the DOM on wasm32), so it is drawn here with our text.
fn legend(area: &Area<'_>, entries: &[(Mark, String)], corner: Corner) -> DrawResult {
    const SIZE: u32 = 14;
    const PAD: i32 = 8;
    const MARK_W: i32 = 26;
    if entries.is_empty() {
        return Ok(());
    }
    let row = text::line_height(SIZE as f32) as i32 + 4;
    let text_w = entries
        .iter()
        .map(|(_, s)| text::measure(s, SIZE as f32).0 as i32)
        .max()
        .unwrap_or(0);
    let (w, h) = (
        2 * PAD + MARK_W + 6 + text_w,
        2 * PAD + row * entries.len() as i32 - 4,
    );
    let (aw, ah) = area.dim_in_pixel();
    let x = aw as i32 - w - 10;
    let y = match corner {
        Corner::TopRight => 10,
        Corner::BottomRight => ah as i32 - h - 10,
    };
    area.draw(&Rectangle::new(
        [(x, y), (x + w, y + h)],
        WHITE.mix(0.88).filled(),
    ))?;
    area.draw(&Rectangle::new(
        [(x, y), (x + w, y + h)],
        RGBColor(160, 160, 160),
    ))?;
    for (i, (mark, label)) in entries.iter().enumerate() {
        let top = y + PAD + i as i32 * row;
        let mid = top + row / 2 - 2;
        draw_mark(area, *mark, (x + PAD + MARK_W / 2, mid))?;
        area.draw(&Text::new(
            label.as_str(),
            (x + PAD + MARK_W + 6, top),
            font(SIZE),
        ))?;
    }
    Ok(())
}

/// `v` rounded to 3 significant digits for a label: plain decimals from 0.001
/// to 99 999 (trailing zeros dropped), scientific outside ("2e-5", "1.5e6").
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return format!("{v}");
    }
    let unit = 10f64.powf(v.abs().log10().floor() - 2.0);
    let r = (v / unit).round() * unit;
    // From the rounded value: 9.996 rounds to 10.0, one more digit left of the point.
    let mag = r.abs().log10().floor() as i32;
    if !(1e-3..1e5).contains(&r.abs()) {
        let m = r / 10f64.powi(mag);
        return format!("{}e{mag}", trim_zeros(format!("{m:.2}")));
    }
    let decimals = (2 - mag).max(0) as usize;
    trim_zeros(format!("{r:.decimals$}"))
}

/// "0.250" → "0.25", "2.00" → "2", "150" stays.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}
