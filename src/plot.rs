//! Just enough raster drawing for diagnostic pictures (trajectory plots, loss
//! curves): a canvas with a world-to-pixel transform, anti-aliased-enough thick
//! lines and discs, written as PNG through the `image` crate.

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};

pub type Color = [u8; 3];

/// A canvas showing the world rectangle [x0, x1] × [y0, y1] (y up).
pub struct Canvas {
    pub img: RgbImage,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Canvas {
    pub fn new(width: u32, height: u32, x: (f64, f64), y: (f64, f64), background: Color) -> Self {
        Canvas {
            img: RgbImage::from_pixel(width, height, Rgb(background)),
            x0: x.0,
            x1: x.1,
            y0: y.0,
            y1: y.1,
        }
    }

    /// World coordinates to (fractional) pixel coordinates.
    pub fn to_px(&self, x: f64, y: f64) -> (f64, f64) {
        let (w, h) = (self.img.width() as f64, self.img.height() as f64);
        (
            (x - self.x0) / (self.x1 - self.x0) * w,
            (self.y1 - y) / (self.y1 - self.y0) * h,
        )
    }

    /// Pixel centre to world coordinates.
    pub fn to_world(&self, px: u32, py: u32) -> (f64, f64) {
        let (w, h) = (self.img.width() as f64, self.img.height() as f64);
        (
            self.x0 + (px as f64 + 0.5) / w * (self.x1 - self.x0),
            self.y1 - (py as f64 + 0.5) / h * (self.y1 - self.y0),
        )
    }

    /// Blends `color` into pixel (px, py) with weight `alpha`.
    pub fn blend(&mut self, px: i64, py: i64, color: Color, alpha: f64) {
        if px < 0 || py < 0 || px >= self.img.width() as i64 || py >= self.img.height() as i64 {
            return;
        }
        let p = self.img.get_pixel_mut(px as u32, py as u32);
        for (dst, &src) in p.0.iter_mut().zip(&color) {
            *dst = (*dst as f64 * (1.0 - alpha) + src as f64 * alpha).round() as u8;
        }
    }

    /// A filled disc of `radius` pixels at world (x, y), with a soft edge.
    pub fn disc(&mut self, x: f64, y: f64, radius: f64, color: Color, alpha: f64) {
        let (cx, cy) = self.to_px(x, y);
        self.disc_px(cx, cy, radius, color, alpha);
    }

    fn disc_px(&mut self, cx: f64, cy: f64, radius: f64, color: Color, alpha: f64) {
        let r = radius.ceil() as i64 + 1;
        for dy in -r..=r {
            for dx in -r..=r {
                let (px, py) = (cx.floor() as i64 + dx, cy.floor() as i64 + dy);
                let d = ((px as f64 + 0.5 - cx).powi(2) + (py as f64 + 0.5 - cy).powi(2)).sqrt();
                let cover = (radius + 0.5 - d).clamp(0.0, 1.0);
                if cover > 0.0 {
                    self.blend(px, py, color, alpha * cover);
                }
            }
        }
    }

    /// A line of `width` pixels between world points.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), width: f64, color: Color, alpha: f64) {
        let (ax, ay) = self.to_px(a.0, a.1);
        let (bx, by) = self.to_px(b.0, b.1);
        let len = ((bx - ax).powi(2) + (by - ay).powi(2)).sqrt();
        let n = (len / 0.7).ceil().max(1.0) as usize;
        for i in 0..=n {
            let f = i as f64 / n as f64;
            self.disc_px(
                ax + (bx - ax) * f,
                ay + (by - ay) * f,
                width / 2.0,
                color,
                alpha / (width.max(1.0)),
            );
        }
    }

    /// Light grid lines every `step` world units, darker axes through 0 and a
    /// frame: orientation without text.
    pub fn grid(&mut self, step: f64) {
        let (w, h) = (self.img.width() as i64, self.img.height() as i64);
        let mut v = (self.x0 / step).ceil() * step;
        while v <= self.x1 {
            let px = self.to_px(v, 0.0).0.floor() as i64;
            let shade = if v.abs() < 1e-9 { 0.35 } else { 0.12 };
            for py in 0..h {
                self.blend(px, py, [0, 0, 0], shade);
            }
            v += step;
        }
        let mut v = (self.y0 / step).ceil() * step;
        while v <= self.y1 {
            let py = self.to_px(0.0, v).1.floor() as i64;
            let shade = if v.abs() < 1e-9 { 0.35 } else { 0.12 };
            for px in 0..w {
                self.blend(px, py, [0, 0, 0], shade);
            }
            v += step;
        }
        for i in 0..w.max(h) {
            for (x, y) in [(i, 0), (i, h - 1), (0, i), (w - 1, i)] {
                self.blend(x, y, [0, 0, 0], 0.8);
            }
        }
    }

    /// A hollow square marker, e.g. for a starting point.
    pub fn square(&mut self, x: f64, y: f64, half: f64, color: Color) {
        let (cx, cy) = self.to_px(x, y);
        let h = half as i64;
        let (cx, cy) = (cx as i64, cy as i64);
        for d in -h..=h {
            for t in 0..2 {
                self.blend(cx + d, cy - h - t, color, 1.0);
                self.blend(cx + d, cy + h + t, color, 1.0);
                self.blend(cx - h - t, cy + d, color, 1.0);
                self.blend(cx + h + t, cy + d, color, 1.0);
            }
        }
    }

    /// Writes the canvas as PNG, through a temporary file so a crash never
    /// leaves half a picture.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        save_png(&self.img, path)
    }
}

/// Writes any RGB image as PNG atomically (temp file + rename).
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

/// Places several canvases side by side with a gap.
pub fn hstack(panels: &[&RgbImage], gap: u32, background: Color) -> RgbImage {
    let w: u32 = panels.iter().map(|p| p.width()).sum::<u32>()
        + gap * (panels.len().saturating_sub(1) as u32);
    let h = panels.iter().map(|p| p.height()).max().unwrap_or(0);
    let mut out = RgbImage::from_pixel(w, h, Rgb(background));
    let mut x = 0;
    for p in panels {
        image::imageops::replace(&mut out, *p, x as i64, 0);
        x += p.width() + gap;
    }
    out
}

/// A line chart of `ys` against `xs` (e.g. a loss curve): light raw points, a
/// smoothed line on top, a grid; y from 0 to the 99th percentile so a few
/// early spikes do not flatten the rest.
pub fn curve(xs: &[f64], ys: &[f64], width: u32, height: u32) -> RgbImage {
    let mut sorted: Vec<f64> = ys.iter().cloned().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let top = sorted
        .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
        .cloned()
        .unwrap_or(1.0)
        .max(1e-12)
        * 1.05;
    let (x0, x1) = (
        xs.first().cloned().unwrap_or(0.0),
        xs.last()
            .cloned()
            .unwrap_or(1.0)
            .max(xs.first().cloned().unwrap_or(0.0) + 1.0),
    );
    let mut c = Canvas::new(width, height, (x0, x1), (0.0, top), [255, 255, 255]);
    let step = nice_step(top);
    c.grid_y(step);
    for (x, y) in xs.iter().zip(ys) {
        if y.is_finite() {
            c.disc(*x, y.min(top), 1.2, [150, 180, 220], 0.6);
        }
    }
    let mut smooth = Vec::with_capacity(ys.len());
    let mut acc = None;
    for y in ys.iter().filter(|v| v.is_finite()) {
        let a: f64 = acc.map_or(*y, |a: f64| 0.9 * a + 0.1 * y);
        acc = Some(a);
        smooth.push(a);
    }
    for (w, xw) in smooth.windows(2).zip(xs.windows(2)) {
        c.line(
            (xw[0], w[0].min(top)),
            (xw[1], w[1].min(top)),
            2.0,
            [31, 119, 180],
            1.0,
        );
    }
    c.img
}

/// 1, 2 or 5 × a power of ten, giving about five grid lines up to `top`.
fn nice_step(top: f64) -> f64 {
    let raw = top / 5.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(p * 10.0)
}

impl Canvas {
    /// Horizontal grid lines every `step` (a y-only [`Canvas::grid`]) and a frame.
    pub fn grid_y(&mut self, step: f64) {
        let (w, h) = (self.img.width() as i64, self.img.height() as i64);
        let mut v = (self.y0 / step).ceil() * step;
        while v <= self.y1 {
            let py = self.to_px(0.0, v).1.floor() as i64;
            for px in 0..w {
                self.blend(px, py, [0, 0, 0], 0.12);
            }
            v += step;
        }
        for i in 0..w.max(h) {
            for (x, y) in [(i, 0), (i, h - 1), (0, i), (w - 1, i)] {
                self.blend(x, y, [0, 0, 0], 0.8);
            }
        }
    }
}
