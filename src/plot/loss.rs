//! The training-loss chart: every step's loss as a light dot, a running median
//! through them, on a log scale when the loss spans a decade or more.

use image::RgbImage;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use plotters::style::Color as _;

use super::{fmt_value, font, legend, render, rgb, Area, Color, Corner, DrawResult, Mark, INK};
use crate::error::Result;

/// The raw per-step losses (light: they are many and noisy).
const POINT: Color = [150, 180, 220];
/// The running median.
const CURVE: Color = [31, 119, 180];

/// The y axis of a loss chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YScale {
    Linear,
    Log,
}

/// [`YScale::Log`] when every finite value is positive and they span at least a
/// decade (max ≥ 10 × min): a loss that falls from 1 to 0.01 then shows its
/// late progress instead of a flat line at the bottom. Narrower ranges (or any
/// value ≤ 0) read better on a linear axis.
pub fn loss_scale(ys: &[f64]) -> YScale {
    let (lo, hi) = ys
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if lo > 0.0 && hi >= 10.0 * lo {
        YScale::Log
    } else {
        YScale::Linear
    }
}

/// Half-width of the smoothing window for `n` points: 2 % of the run on each
/// side, at least 2 and at most 50 points.
pub fn smoothing_half_width(n: usize) -> usize {
    (n / 50).clamp(2, 50)
}

/// `ys[i − m ..= i + m]` with m = `half`, or less near the ends so that the
/// window stays centred on i (the first and last values are their own window).
fn centred(ys: &[f64], i: usize, half: usize) -> &[f64] {
    let m = half.min(i).min(ys.len() - 1 - i);
    &ys[i - m..=i + m]
}

/// The median of the centred window of half-width `half` around every value
/// (narrower near the ends, see [`centred`]).
///
/// Why a *centred median*: a trailing average (or an EMA, even bias-corrected)
/// only sees the past, so it trails a falling loss by about its window — the
/// old curve sat visibly above the points. A centred window has no such lag
/// (nor, shrunk symmetrically at the ends, a lead at the start or a lag at the
/// end), and a median, unlike a mean, keeps a step sharp (after a jump it
/// switches as soon as more than half of the window is past it) and ignores
/// isolated spikes. Non-finite values should be removed first; they sort last.
pub fn running_median(ys: &[f64], half: usize) -> Vec<f64> {
    let mut buf = Vec::with_capacity(2 * half + 1);
    (0..ys.len())
        .map(|i| {
            buf.clear();
            buf.extend_from_slice(centred(ys, i, half));
            buf.sort_unstable_by(f64::total_cmp);
            buf[buf.len() / 2] // the window has an odd length
        })
        .collect()
}

/// The mean of the centred window of half-width `half` around every value.
pub fn running_mean(ys: &[f64], half: usize) -> Vec<f64> {
    (0..ys.len())
        .map(|i| {
            let w = centred(ys, i, half);
            w.iter().sum::<f64>() / w.len() as f64
        })
        .collect()
}

/// The curve drawn through the losses: a [`running_median`] of half-width
/// [`smoothing_half_width`], then a running mean a quarter as wide to round
/// off the median's flat runs and jumps. Both windows are centred, so the
/// curve does not lag: after a step in the loss it is at the new level within
/// a quarter window (the mean's half-width) of the step. Its ends are the
/// first and last losses themselves (their windows shrink to one value).
pub fn smooth_loss(ys: &[f64]) -> Vec<f64> {
    let half = smoothing_half_width(ys.len());
    running_mean(&running_median(ys, half), (half / 4).max(1))
}

/// The median of the last 2·`half` + 1 values: what the loss is now, for the
/// title (the curve's own last value is just the last loss).
fn recent_median(ys: &[f64], half: usize) -> Option<f64> {
    let mut last = ys[ys.len().saturating_sub(2 * half + 1)..].to_vec();
    last.sort_unstable_by(f64::total_cmp);
    last.get(last.len() / 2).copied()
}

/// A y axis in plot space (log10 of the loss on a log scale) with its ticks.
#[derive(Clone)]
struct YAxis {
    scale: YScale,
    lo: f64,
    hi: f64,
    /// Labelled ticks, in plot space.
    major: Vec<f64>,
    /// Unlabelled grid lines, in plot space.
    minor: Vec<f64>,
    /// Digits after the point of linear tick labels.
    decimals: usize,
}

impl YAxis {
    fn new(ys: &[f64]) -> Self {
        match loss_scale(ys) {
            YScale::Log => Self::log(ys),
            YScale::Linear => Self::linear(ys),
        }
    }

    /// From the smallest value to the 99th percentile: a few early spikes
    /// would otherwise flatten the rest (they are drawn at the top edge).
    fn linear(ys: &[f64]) -> Self {
        let mut sorted: Vec<f64> = ys.to_vec();
        sorted.sort_by(f64::total_cmp);
        let lo = sorted.first().copied().unwrap_or(0.0);
        let hi = sorted.get(sorted.len() * 99 / 100).copied().unwrap_or(1.0);
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            let pad = (lo.abs() * 0.1).max(1e-6);
            (lo - pad, lo + pad)
        };
        let pad = 0.05 * (hi - lo);
        let (lo, hi) = (lo - pad, hi + pad);
        let step = nice_step(hi - lo);
        let major = (((lo / step).ceil() as i64)..=((hi / step).floor() as i64))
            .map(|k| k as f64 * step)
            .collect();
        YAxis {
            scale: YScale::Linear,
            lo,
            hi,
            major,
            minor: Vec::new(),
            decimals: (-step.log10().floor()).max(0.0) as usize,
        }
    }

    /// The whole range (a log axis has room for early spikes), 3 % padding.
    fn log(ys: &[f64]) -> Self {
        let (lo, hi) = ys
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v.log10()), b.max(v.log10()))
            });
        let pad = 0.03 * (hi - lo);
        let (lo, hi) = (lo - pad, hi + pad);
        let (major, minor) = log_ticks(lo, hi);
        YAxis {
            scale: YScale::Log,
            lo,
            hi,
            major,
            minor,
            decimals: 0,
        }
    }

    /// A loss in plot space, clamped into the axis.
    fn to_plot(&self, y: f64) -> f64 {
        let v = match self.scale {
            YScale::Log => y.log10(),
            YScale::Linear => y,
        };
        v.clamp(self.lo, self.hi)
    }

    /// The label of a tick at `v` (plot space): the loss value it stands for.
    fn label(&self, v: f64) -> String {
        match self.scale {
            YScale::Log => fmt_value(10f64.powf(v)),
            YScale::Linear => format!("{v:.*}", self.decimals),
        }
    }
}

/// plotters reads the axis through this: the mapping to pixels, the ticks
/// (labelled ones as "bold" points, grid-only ones as "light"), and through
/// [`ValueFormatter`] the label of each tick.
impl Ranged for YAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        let f = if f.is_finite() {
            f.clamp(-1.0, 2.0)
        } else {
            0.0
        };
        limit.0 + ((limit.1 - limit.0) as f64 * f).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.major.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for YAxis {
    fn format_ext(&self, v: &f64) -> String {
        self.label(*v)
    }
}

/// 1, 2 or 5 × a power of ten, giving about five ticks over `span`.
fn nice_step(span: f64) -> f64 {
    let raw = span / 5.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(p * 10.0)
}

/// Ticks of a log axis over [lo, hi] (log10 of the values): powers of ten,
/// or 1-2-5 or 1…9 times them when that gives too few labels; the 1…9
/// multiples that are not labelled become grid lines. Over many decades the
/// labelled powers are thinned to about eight.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let decades = (hi.ceil() - lo.floor()).max(1.0);
    let stride = (decades / 8.0).ceil().max(1.0) as i64;
    let at = |mantissas: &[f64], stride: i64| -> Vec<f64> {
        (lo.floor() as i64..=hi.ceil() as i64)
            .filter(|k| k.rem_euclid(stride) == 0)
            .flat_map(|k| mantissas.iter().map(move |m| m.log10() + k as f64))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let all: Vec<f64> = (1..=9).map(f64::from).collect();
    let major = [&[1.0][..], &[1.0, 2.0, 5.0], &all]
        .into_iter()
        .map(|m| at(m, stride))
        .find(|t| t.len() >= 3)
        .unwrap_or_else(|| at(&all, 1));
    let minor = if decades <= 12.0 {
        at(&all, 1)
            .into_iter()
            .filter(|v| !major.iter().any(|m| (m - v).abs() < 1e-9))
            .collect()
    } else {
        Vec::new()
    };
    (major, minor)
}

/// The training-loss chart of (step, loss) pairs, `width`×`height` px: a
/// title with the recent median loss, both axes with ticks and values, the
/// raw losses as dots, the centred [`smooth_loss`] as a line, and a legend.
/// The y axis is logarithmic when the loss spans a decade ([`loss_scale`]).
/// Pairs with a non-finite step or loss are left out; extra values in the
/// longer slice are ignored. Errors: a size of 0 or over 16 384 px.
pub fn loss_curve(steps: &[f64], losses: &[f64], width: u32, height: u32) -> Result<RgbImage> {
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .zip(losses)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(&x, &y)| (x, y))
        .collect();
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let half = smoothing_half_width(pts.len());
    let smooth = smooth_loss(&ys);
    let axis = YAxis::new(&ys);
    let recent = pts.len().saturating_sub(2 * half + 1);
    let title = match (pts.get(recent), pts.last(), recent_median(&ys, half)) {
        (Some(a), Some(b), Some(v)) => format!(
            "Training loss: {} (median of steps {}–{})",
            fmt_value(v),
            a.0,
            b.0
        ),
        _ => "Training loss: no finite values yet".to_string(),
    };
    render(width, height, "the loss curve", |root| {
        draw_loss(root, &title, &pts, &smooth, half, &axis)
    })
}

fn draw_loss(
    root: &Area<'_>,
    title: &str,
    pts: &[(f64, f64)],
    smooth: &[f64],
    half: usize,
    axis: &YAxis,
) -> DrawResult {
    root.fill(&WHITE)?;
    let x0 = pts.first().map_or(0.0, |p| p.0);
    let x1 = pts.last().map_or(1.0, |p| p.0).max(x0 + 1.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, font(20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(76)
        .build_cartesian_2d(x0..x1, axis.clone())?;
    let x_label = |v: &f64| {
        if x1 - x0 >= 10.0 {
            format!("{v:.0}")
        } else {
            fmt_value(*v)
        }
    };
    chart
        .configure_mesh()
        .x_desc("training step")
        .y_desc(match axis.scale {
            YScale::Log => "loss (log scale)",
            YScale::Linear => "loss",
        })
        .x_labels(8)
        .x_max_light_lines(0)
        .x_label_formatter(&x_label)
        .label_style(font(14))
        .axis_desc_style(font(15))
        .axis_style(INK)
        .bold_line_style(RGBColor(215, 215, 215))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    let r = match pts.len() {
        0..=200 => 3,
        201..=2000 => 2,
        _ => 1,
    };
    chart.draw_series(
        pts.iter()
            .map(|&(x, y)| Circle::new((x, axis.to_plot(y)), r, rgb(POINT).filled())),
    )?;
    chart.draw_series(LineSeries::new(
        pts.iter()
            .zip(smooth)
            .map(|(&(x, _), &s)| (x, axis.to_plot(s))),
        rgb(CURVE).stroke_width(2),
    ))?;
    if pts.is_empty() {
        return Ok(());
    }
    let entries = [
        (Mark::Dot(POINT), "loss of each step".to_string()),
        (
            Mark::Line(CURVE),
            format!("running median of {} points (centred)", 2 * half + 1),
        ),
    ];
    legend(
        &chart.plotting_area().strip_coord_spec(),
        &entries,
        Corner::TopRight,
    )
}
