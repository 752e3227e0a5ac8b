//! The paper's exact-score experiment (Fig. 3, Appendix B): a 2-D Gaussian
//! mixture ⅕N((−5,−5), I) + ⅘N((5,5), I) under a VE SDE (σmin 0.1, σmax 20,
//! N = 100), whose score is known in closed form. It checks the method itself,
//! free of any learned network:
//! - a short paired reverse run from a small t separates the anomalous point
//!   (−6, 5) from the normal ones by the whole-score difference, and
//! - a full reverse run from t = 1 loses the identity of normal points (they
//!   can land in the other mode), which is why Score-DD uses small t.

use std::path::Path;

use crate::backend::{Backend, Sampler, ScoreDdOps};
use crate::error::Result;
use crate::method::{paired_reverse, paired_reverse_observed, ScoreFn};
use crate::plot::{path_panels, save_png, Color, Corner, Mark, PathPanel, Trace};
use crate::rng::RngStream;
use crate::sde::{Sde, VeSde};

/// Isotropic Gaussian mixture with unit-variance components in 2-D.
#[derive(Clone, Debug)]
pub struct GaussianMixture {
    pub weights: Vec<f64>,
    pub means: Vec<[f64; 2]>,
}

impl GaussianMixture {
    /// ⅕N((−5,−5), I) + ⅘N((5,5), I).
    pub fn paper() -> Self {
        GaussianMixture {
            weights: vec![0.2, 0.8],
            means: vec![[-5.0, -5.0], [5.0, 5.0]],
        }
    }

    /// Exact ∇ log p_σ(x) of the mixture convolved with N(0, σ²I):
    /// Σ_k γ_k(x)·(m_k − x)/(1 + σ²), γ the posterior responsibilities.
    pub fn score(&self, x: [f64; 2], sigma: f64) -> [f64; 2] {
        let var = 1.0 + sigma * sigma;
        let logits: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.means)
            .map(|(w, m)| w.ln() - ((x[0] - m[0]).powi(2) + (x[1] - m[1]).powi(2)) / (2.0 * var))
            .collect();
        let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let z: f64 = e.iter().sum();
        let mut s = [0.0; 2];
        for (g, m) in e.iter().zip(&self.means) {
            s[0] += g / z * (m[0] - x[0]) / var;
            s[1] += g / z * (m[1] - x[1]) / var;
        }
        s
    }

    /// Density of the noise-free mixture, for the plot background.
    pub fn density(&self, x: [f64; 2]) -> f64 {
        self.weights
            .iter()
            .zip(&self.means)
            .map(|(w, m)| {
                w * (-((x[0] - m[0]).powi(2) + (x[1] - m[1]).powi(2)) / 2.0).exp()
                    / std::f64::consts::TAU
            })
            .sum()
    }

    pub fn nearest_mode(&self, x: [f64; 2]) -> usize {
        let d = |m: &[f64; 2]| (x[0] - m[0]).powi(2) + (x[1] - m[1]).powi(2);
        (0..self.means.len())
            .min_by(|&a, &b| d(&self.means[a]).total_cmp(&d(&self.means[b])))
            .unwrap_or(0)
    }
}

/// The mixture's exact score as a [`ScoreFn`] on any backend. It computes on the
/// host (the point of the toy is the method, not the kernel).
pub struct MixtureScore {
    pub mixture: GaussianMixture,
    pub sde: VeSde,
}

impl<B: Backend> ScoreFn<B> for MixtureScore {
    fn score(&self, backend: &B, x: &B::Tensor, t: &[f64]) -> Result<B::Tensor> {
        let xs = backend.read(x)?;
        let mut out = vec![0.0f32; xs.len()];
        for (i, (p, o)) in xs.chunks(2).zip(out.chunks_mut(2)).enumerate() {
            let s = self
                .mixture
                .score([p[0] as f64, p[1] as f64], self.sde.std(t[i]));
            o[0] = s[0] as f32;
            o[1] = s[1] as f32;
        }
        backend.upload(&out, backend.shape(x))
    }
}

/// The three test points of the paper: one anomalous, two normal.
pub const POINTS: [([f64; 2], &str); 3] = [
    ([-6.0, 5.0], "anomalous (-6, 5)"),
    ([5.17, 5.2], "normal (5.17, 5.2)"),
    ([-4.2, -4.3], "normal (-4.2, -4.3)"),
];

pub struct ToyConfig {
    /// Noise draws per point (the paper's claim is about averages).
    pub draws: usize,
    pub seed: u64,
}

impl Default for ToyConfig {
    fn default() -> Self {
        ToyConfig {
            draws: 256,
            seed: 0,
        }
    }
}

/// Mean whole-score difference ‖s(x'(t_r)) − s(x''(t_r))‖ per point, for one (t, r, sampler).
#[derive(Clone, Debug)]
pub struct DifferenceRow {
    pub t: f64,
    pub r: usize,
    pub sampler: Sampler,
    pub mean_difference: [f64; 3],
}

impl DifferenceRow {
    /// How many times the anomalous point's difference exceeds each normal point's.
    pub fn ratios(&self) -> [f64; 2] {
        [
            self.mean_difference[0] / self.mean_difference[1],
            self.mean_difference[0] / self.mean_difference[2],
        ]
    }
}

/// Fraction of each normal point's noise draws that a full reverse run from
/// t = 1 delivers to the other mode.
#[derive(Clone, Debug)]
pub struct ReverseRow {
    pub sampler: Sampler,
    pub switched: [f64; 2],
}

pub struct ToyReport {
    pub differences: Vec<DifferenceRow>,
    pub reverse: Vec<ReverseRow>,
}

pub fn paper_sde() -> VeSde {
    VeSde {
        sigma_min: 0.1,
        sigma_max: 20.0,
        n: 100,
    }
}

fn batch_of_points(points: &[[f64; 2]], draws: usize) -> Vec<f32> {
    points
        .iter()
        .flat_map(|p| std::iter::repeat_n([p[0] as f32, p[1] as f32], draws))
        .flatten()
        .collect()
}

/// Runs every setting of the experiment on `backend`.
pub fn run<B: ScoreDdOps>(backend: &B, cfg: &ToyConfig) -> Result<ToyReport> {
    let sde = paper_sde();
    let score = MixtureScore {
        mixture: GaussianMixture::paper(),
        sde: sde.clone(),
    };
    let n = cfg.draws;
    let root = RngStream::new(cfg.seed, 0);

    let pts: Vec<[f64; 2]> = POINTS.iter().map(|p| p.0).collect();
    let x0 = backend.upload(&batch_of_points(&pts, n), &[3 * n, 2])?;
    let streams: Vec<u64> = (0..3 * n as u64).collect();
    let mut differences = Vec::new();
    for (si, sampler) in [Sampler::Ode, Sampler::Sde].into_iter().enumerate() {
        for (ti, t) in [0.3, 0.6].into_iter().enumerate() {
            for (ri, r) in [1usize, 5].into_iter().enumerate() {
                let rng = root.derive((si * 100 + ti * 10 + ri) as u64);
                let run = paired_reverse(
                    backend,
                    &sde,
                    &score,
                    &x0,
                    &vec![t; 3 * n],
                    r,
                    sampler,
                    rng,
                    &streams,
                )?;
                let sw = backend.read(&score.score(backend, &run.state.whole, &run.t_end)?)?;
                let so = backend.read(&score.score(backend, &run.state.own, &run.t_end)?)?;
                let mut mean = [0.0; 3];
                for (i, (a, b)) in sw.chunks(2).zip(so.chunks(2)).enumerate() {
                    let d =
                        (((a[0] - b[0]) as f64).powi(2) + ((a[1] - b[1]) as f64).powi(2)).sqrt();
                    mean[i / n] += d / n as f64;
                }
                differences.push(DifferenceRow {
                    t,
                    r,
                    sampler,
                    mean_difference: mean,
                });
            }
        }
    }

    let normal: Vec<[f64; 2]> = pts[1..].to_vec();
    let x0n = backend.upload(&batch_of_points(&normal, n), &[2 * n, 2])?;
    let streams_n: Vec<u64> = (0..2 * n as u64).collect();
    let mut reverse = Vec::new();
    for (si, sampler) in [Sampler::Ode, Sampler::Sde].into_iter().enumerate() {
        let rng = root.derive(1000 + si as u64);
        let run = paired_reverse(
            backend,
            &sde,
            &score,
            &x0n,
            &vec![1.0; 2 * n],
            sde.n,
            sampler,
            rng,
            &streams_n,
        )?;
        let end = backend.read(&run.state.whole)?;
        let mut switched = [0.0; 2];
        for (i, p) in end.chunks(2).enumerate() {
            let from = score.mixture.nearest_mode(normal[i / n]);
            if score.mixture.nearest_mode([p[0] as f64, p[1] as f64]) != from {
                switched[i / n] += 1.0 / n as f64;
            }
        }
        reverse.push(ReverseRow { sampler, switched });
    }
    Ok(ToyReport {
        differences,
        reverse,
    })
}

const POINT_COLORS: [Color; 3] = [[214, 39, 40], [31, 119, 180], [44, 160, 44]];
const SELF_GREY: Color = [120, 120, 120];
const DENSITY: Color = [200, 200, 215];
const START: Color = [20, 20, 20];

/// A trajectory: the state after each reverse step.
type Path2 = Vec<(f64, f64)>;

/// Paired short runs (t = 0.6, r = 5, reverse SDE) of `draws` noise draws per
/// point: the whole-score and the self-score path of each draw.
fn short_runs<B: ScoreDdOps>(
    backend: &B,
    score: &MixtureScore,
    pts: &[[f64; 2]],
    draws: usize,
    rng: RngStream,
) -> Result<(Vec<Path2>, Vec<Path2>)> {
    let n = pts.len() * draws;
    let x0 = backend.upload(&batch_of_points(pts, draws), &[n, 2])?;
    let streams: Vec<u64> = (0..n as u64).collect();
    let (mut whole, mut own) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    paired_reverse_observed(
        backend,
        &score.sde,
        score,
        &x0,
        &vec![0.6; n],
        5,
        Sampler::Sde,
        rng,
        &streams,
        &mut |_, st| {
            for (paths, t) in [(&mut whole, &st.whole), (&mut own, &st.own)] {
                for (i, p) in backend.read(t)?.chunks(2).enumerate() {
                    paths[i].push((p[0] as f64, p[1] as f64));
                }
            }
            Ok(())
        },
    )?;
    Ok((whole, own))
}

/// Full reverse runs from t = 1 (probability-flow ODE, whole score) of
/// `draws` noise draws per point.
fn full_runs<B: ScoreDdOps>(
    backend: &B,
    score: &MixtureScore,
    pts: &[[f64; 2]],
    draws: usize,
    rng: RngStream,
) -> Result<Vec<Path2>> {
    let n = pts.len() * draws;
    let x0 = backend.upload(&batch_of_points(pts, draws), &[n, 2])?;
    let streams: Vec<u64> = (0..n as u64).collect();
    let mut paths = vec![Vec::new(); n];
    paired_reverse_observed(
        backend,
        &score.sde,
        score,
        &x0,
        &vec![1.0; n],
        score.sde.n,
        Sampler::Ode,
        rng,
        &streams,
        &mut |_, st| {
            for (i, p) in backend.read(&st.whole)?.chunks(2).enumerate() {
                paths[i].push((p[0] as f64, p[1] as f64));
            }
            Ok(())
        },
    )?;
    Ok(paths)
}

/// Draws the experiment as two panels and writes them to `path`:
/// left, short paired runs (t = 0.6, r = 5, reverse SDE) — whole-score paths
/// in colour, self-score paths in grey, starting points as squares; right,
/// full reverse runs of the normal points from t = 1 (probability-flow ODE),
/// whole-score paths ending as dots, some in the wrong mode. The data density
/// shades both; each panel has axes with values, a title and a legend.
pub fn plot<B: ScoreDdOps>(backend: &B, cfg: &ToyConfig, path: &Path) -> Result<()> {
    let mixture = GaussianMixture::paper();
    let score = MixtureScore {
        mixture: mixture.clone(),
        sde: paper_sde(),
    };
    let draws = cfg.draws.min(16);
    let root = RngStream::new(cfg.seed, 1);
    let pts: Vec<[f64; 2]> = POINTS.iter().map(|p| p.0).collect();
    let (whole, own) = short_runs(backend, &score, &pts, draws, root.derive(0))?;
    let full = full_runs(backend, &score, &pts[1..], draws, root.derive(1))?;

    let peak = mixture.density([5.0, 5.0]);
    let shade = move |x: f64, y: f64| (mixture.density([x, y]) / peak).sqrt();
    let trace = |points: &Path2, color: Color, width: u32, alpha: f64| Trace {
        points: points.clone(),
        color,
        width,
        alpha,
    };
    let start = |i: usize| (Mark::Square(START), (pts[i][0], pts[i][1]));
    let named = |i: usize| (Mark::Line(POINT_COLORS[i]), POINTS[i].1.to_string());
    let density = (Mark::Patch(DENSITY), "data density".to_string());

    let mut traces: Vec<Trace> = own.iter().map(|p| trace(p, SELF_GREY, 1, 0.8)).collect();
    traces.extend((0..whole.len()).map(|i| trace(&whole[i], POINT_COLORS[i / draws], 2, 0.9)));
    let left = PathPanel {
        title: "short paired runs: t = 0.6, r = 5 steps (reverse SDE)".into(),
        extent: 12.0,
        shade: &shade,
        shade_color: DENSITY,
        traces,
        markers: (0..3).map(start).collect(),
        legend: vec![
            named(0),
            named(1),
            named(2),
            (Mark::Line(SELF_GREY), "self-score paths".into()),
            (Mark::Square(START), "starting points".into()),
            density.clone(),
        ],
        legend_corner: Corner::BottomRight,
    };

    let color = |i: usize| POINT_COLORS[1 + i / draws];
    let ends = full
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((Mark::Dot(color(i)), *p.last()?)));
    let right = PathPanel {
        title: "full reverse runs from t = 1 (probability-flow ODE)".into(),
        extent: 30.0,
        shade: &shade,
        shade_color: DENSITY,
        traces: full
            .iter()
            .enumerate()
            .map(|(i, p)| trace(p, color(i), 1, 0.6))
            .collect(),
        markers: (1..3).map(start).chain(ends).collect(),
        legend: vec![
            named(1),
            named(2),
            (Mark::Square(START), "starting points".into()),
            (Mark::Dot(START), "end of a run".into()),
            density,
        ],
        legend_corner: Corner::BottomRight,
    };
    let title = "Score-DD on the exact score of ⅕N((−5,−5), I) + ⅘N((5,5), I)";
    save_png(&path_panels(title, &[left, right], (600, 600))?, path)
}
