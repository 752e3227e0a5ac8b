//! Side-by-side square panels of 2-D trajectories over a shaded background
//! (the toy experiment's reverse-diffusion paths), each with axes, tick
//! values, a title and a legend.

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::Color as _;

use super::{fmt_value, font, legend, render, rgb, Area, Color, Corner, DrawResult, Mark, INK};
use crate::error::{Error, Result};

/// One polyline in world coordinates.
pub struct Trace {
    pub points: Vec<(f64, f64)>,
    pub color: Color,
    /// Stroke width in pixels.
    pub width: u32,
    /// Opacity in [0, 1]: overlapping paths then show where they bunch up.
    pub alpha: f64,
}

/// One square panel showing [−extent, extent]² on both axes.
pub struct PathPanel<'a> {
    pub title: String,
    pub extent: f64,
    /// Background weight in [0, 1] at a world point (e.g. a density over its
    /// peak), painted in `shade_color` over white.
    pub shade: &'a dyn Fn(f64, f64) -> f64,
    pub shade_color: Color,
    pub traces: Vec<Trace>,
    /// Markers at world points, drawn over the traces (starts, ends).
    pub markers: Vec<(Mark, (f64, f64))>,
    pub legend: Vec<(Mark, String)>,
    pub legend_corner: Corner,
}

/// `panels` side by side, each `panel` = (width, height) px, under `title`
/// (none if empty). Errors: no panels, an extent that is not finite and
/// positive, or a picture side of 0 or over 16 384 px.
pub fn path_panels(title: &str, panels: &[PathPanel], panel: (u32, u32)) -> Result<RgbImage> {
    if panels.is_empty() {
        return Err(Error::Invalid("path_panels: no panels to draw".into()));
    }
    if let Some(p) = panels
        .iter()
        .find(|p| !(p.extent.is_finite() && p.extent > 0.0))
    {
        return Err(Error::Invalid(format!(
            "path_panels: panel {:?} has extent {}; it must be finite and positive",
            p.title, p.extent
        )));
    }
    let title_h = if title.is_empty() { 0 } else { 40 };
    let width = panel.0.saturating_mul(panels.len() as u32);
    render(
        width,
        panel.1.saturating_add(title_h),
        "the trajectory plot",
        |root| {
            root.fill(&WHITE)?;
            let body = if title.is_empty() {
                root.clone()
            } else {
                root.titled(title, font(20))?
            };
            for (area, p) in body.split_evenly((1, panels.len())).iter().zip(panels) {
                draw_panel(area, p)?;
            }
            Ok(())
        },
    )
}

fn draw_panel(area: &Area<'_>, p: &PathPanel) -> DrawResult {
    let e = p.extent;
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, font(16))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(52)
        .build_cartesian_2d(-e..e, -e..e)?;
    shade(&chart.plotting_area().strip_coord_spec(), p)?;
    chart
        .configure_mesh()
        .x_desc("x₁")
        .y_desc("x₂")
        .x_labels(9)
        .y_labels(9)
        .x_label_formatter(&|v| fmt_value(*v))
        .y_label_formatter(&|v| fmt_value(*v))
        .label_style(font(13))
        .axis_desc_style(font(15))
        .axis_style(INK)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for t in &p.traces {
        let style = rgb(t.color)
            .mix(t.alpha.clamp(0.0, 1.0))
            .stroke_width(t.width);
        chart.draw_series(LineSeries::new(t.points.iter().copied(), style))?;
    }
    // A line or patch mark has no point form: those draw as dots.
    for &(mark, at) in &p.markers {
        match mark {
            Mark::Square(c) => chart.draw_series(std::iter::once(
                EmptyElement::at(at) + Rectangle::new([(-6, -6), (6, 6)], rgb(c).stroke_width(2)),
            ))?,
            Mark::Dot(c) | Mark::Line(c) | Mark::Patch(c) => {
                chart.draw_series(std::iter::once(Circle::new(at, 4, rgb(c).filled())))?
            }
        };
    }
    legend(
        &chart.plotting_area().strip_coord_spec(),
        &p.legend,
        p.legend_corner,
    )
}

/// Paints the background weight of every pixel of the plotting area `plot`.
fn shade(plot: &Area<'_>, p: &PathPanel) -> DrawResult {
    let (w, h) = plot.dim_in_pixel();
    let (e, color) = (p.extent, rgb(p.shade_color));
    for py in 0..h {
        for px in 0..w {
            let x = -e + (px as f64 + 0.5) / w as f64 * 2.0 * e;
            let y = e - (py as f64 + 0.5) / h as f64 * 2.0 * e;
            let a = (p.shade)(x, y);
            if a > 1.0 / 512.0 {
                plot.draw_pixel((px as i32, py as i32), &color.mix(a.min(1.0)))?;
            }
        }
    }
    Ok(())
}
