//! The forward SDEs of score-based generative modelling (conventions of
//! score_sde_pytorch's `sde_lib.py`): dx = f(t)·x dt + g(t) dw, with the
//! marginal x(t) = μ(t)·x(0) + σ(t)·z. A small trait and three small impls;
//! everything the method needs (training targets, the paired reverse step) is
//! written once over the trait.

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, PerturbCoef, StepCoef};
use crate::error::{Error, Result};
use crate::rng::RngStream;

pub trait Sde: Send + Sync {
    /// Short name: "ve", "vp" or "subvp".
    fn name(&self) -> &'static str;
    /// Number of discretisation steps N on [0, 1] (Δt = 1/N).
    fn steps(&self) -> usize;
    /// Smallest time used in training and sampling.
    fn eps(&self) -> f64;
    /// Mean coefficient μ(t) of the marginal.
    fn mean_coef(&self, t: f64) -> f64;
    /// Standard deviation σ(t) of the marginal.
    fn std(&self, t: f64) -> f64;
    /// Drift coefficient f(t): the drift is f(t)·x.
    fn drift_coef(&self, t: f64) -> f64;
    /// Diffusion coefficient g(t).
    fn diffusion(&self, t: f64) -> f64;
    /// Standard deviation of the prior p_1 (its mean is 0).
    fn prior_std(&self) -> f64;

    fn dt(&self) -> f64 {
        1.0 / self.steps() as f64
    }

    /// Coefficients to noise a sample to time t.
    fn perturb_coef(&self, t: f64, stream: u64) -> PerturbCoef {
        PerturbCoef {
            mu: self.mean_coef(t) as f32,
            sigma: self.std(t) as f32,
            stream,
        }
    }

    /// Coefficients of one reverse Euler step from t to t − Δt.
    fn step_coef(&self, t: f64, dt: f64, stream: u64) -> StepCoef {
        let next = t - dt;
        StepCoef {
            f: self.drift_coef(t) as f32,
            g: self.diffusion(t) as f32,
            sigma: self.std(t) as f32,
            mu_next: self.mean_coef(next) as f32,
            sigma_next: self.std(next) as f32,
            dt: dt as f32,
            stream,
        }
    }
}

/// Draws x(1) from the SDE's prior N(0, prior_std²·I): element i is
/// `prior_std · rng.normal(i)`, the same numbers on every backend.
pub fn prior_sample<B: Backend>(
    backend: &B,
    sde: &dyn Sde,
    shape: &[usize],
    rng: RngStream,
) -> Result<B::Tensor> {
    let n = crate::backend::numel("prior_sample", shape)?;
    let mut v = vec![0.0f32; n];
    rng.fill_normal(0, &mut v);
    let scale = sde.prior_std() as f32;
    v.iter_mut().for_each(|x| *x *= scale);
    backend.upload(&v, shape)
}

/// Variance exploding: σ(t) = σmin·(σmax/σmin)^t, no drift.
#[derive(Clone, Debug, PartialEq)]
pub struct VeSde {
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub n: usize,
}

/// Variance preserving (DDPM): β(t) = β0 + t(β1 − β0).
#[derive(Clone, Debug, PartialEq)]
pub struct VpSde {
    pub beta_min: f64,
    pub beta_max: f64,
    pub n: usize,
}

/// Sub-VP: VP's drift with a diffusion that keeps σ(t) = 1 − μ(t)² below VP's.
#[derive(Clone, Debug, PartialEq)]
pub struct SubVpSde {
    pub beta_min: f64,
    pub beta_max: f64,
    pub n: usize,
}

impl Sde for VeSde {
    fn name(&self) -> &'static str {
        "ve"
    }
    fn steps(&self) -> usize {
        self.n
    }
    fn eps(&self) -> f64 {
        1e-5
    }
    fn mean_coef(&self, _t: f64) -> f64 {
        1.0
    }
    fn std(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion(&self, t: f64) -> f64 {
        self.std(t) * (2.0 * (self.sigma_max / self.sigma_min).ln()).sqrt()
    }
    fn prior_std(&self) -> f64 {
        self.sigma_max
    }
}

/// log μ(t) shared by VP and sub-VP: −¼t²(β1 − β0) − ½tβ0.
fn log_mean_coef(beta_min: f64, beta_max: f64, t: f64) -> f64 {
    -0.25 * t * t * (beta_max - beta_min) - 0.5 * t * beta_min
}

fn beta(beta_min: f64, beta_max: f64, t: f64) -> f64 {
    beta_min + t * (beta_max - beta_min)
}

impl Sde for VpSde {
    fn name(&self) -> &'static str {
        "vp"
    }
    fn steps(&self) -> usize {
        self.n
    }
    fn eps(&self) -> f64 {
        1e-3
    }
    fn mean_coef(&self, t: f64) -> f64 {
        log_mean_coef(self.beta_min, self.beta_max, t).exp()
    }
    fn std(&self, t: f64) -> f64 {
        // 1 − μ² computed as −expm1(2 log μ) keeps precision at small t.
        (-(2.0 * log_mean_coef(self.beta_min, self.beta_max, t)).exp_m1()).sqrt()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -0.5 * beta(self.beta_min, self.beta_max, t)
    }
    fn diffusion(&self, t: f64) -> f64 {
        beta(self.beta_min, self.beta_max, t).sqrt()
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
}

impl Sde for SubVpSde {
    fn name(&self) -> &'static str {
        "subvp"
    }
    fn steps(&self) -> usize {
        self.n
    }
    fn eps(&self) -> f64 {
        1e-3
    }
    fn mean_coef(&self, t: f64) -> f64 {
        log_mean_coef(self.beta_min, self.beta_max, t).exp()
    }
    fn std(&self, t: f64) -> f64 {
        -(2.0 * log_mean_coef(self.beta_min, self.beta_max, t)).exp_m1()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -0.5 * beta(self.beta_min, self.beta_max, t)
    }
    fn diffusion(&self, t: f64) -> f64 {
        let discount = -(4.0 * log_mean_coef(self.beta_min, self.beta_max, t)).exp_m1();
        (beta(self.beta_min, self.beta_max, t) * discount).sqrt()
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
}

/// The three SDE families, without their parameters (`scoredd train --sde`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum SdeKind {
    /// Variance exploding (NCSN++).
    Ve,
    /// Variance preserving (DDPM++).
    Vp,
    /// Sub-variance preserving.
    Subvp,
}

impl SdeKind {
    /// The SDE of this kind with DESIGN.md's parameters for images of side
    /// `image_size`: σmax 50 for small images (≤ 64 px), 348 for MVTec-size ones.
    pub fn config(self, image_size: usize) -> SdeConfig {
        match self {
            SdeKind::Ve => SdeConfig::ve(if image_size <= 64 { 50.0 } else { 348.0 }),
            SdeKind::Vp => SdeConfig::vp(),
            SdeKind::Subvp => SdeConfig::subvp(),
        }
    }
}

/// An SDE as stored in a model file or given on the command line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SdeConfig {
    Ve {
        sigma_min: f64,
        sigma_max: f64,
        n: usize,
    },
    Vp {
        beta_min: f64,
        beta_max: f64,
        n: usize,
    },
    Subvp {
        beta_min: f64,
        beta_max: f64,
        n: usize,
    },
}

impl SdeConfig {
    /// DESIGN.md's defaults: VE σmin 0.01, σmax `sigma_max` (348 for MVTec-size
    /// images, 50 for small ones), N = 2000; VP/sub-VP β0 0.1, β1 20, N = 1000.
    pub fn ve(sigma_max: f64) -> Self {
        SdeConfig::Ve {
            sigma_min: 0.01,
            sigma_max,
            n: 2000,
        }
    }
    pub fn vp() -> Self {
        SdeConfig::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
            n: 1000,
        }
    }
    pub fn subvp() -> Self {
        SdeConfig::Subvp {
            beta_min: 0.1,
            beta_max: 20.0,
            n: 1000,
        }
    }

    /// Checks the parameters and builds the SDE.
    pub fn build(&self) -> Result<Box<dyn Sde>> {
        let bad = |m: String| Err(Error::Invalid(m));
        match *self {
            SdeConfig::Ve {
                sigma_min,
                sigma_max,
                n,
            } => {
                if !(sigma_min > 0.0 && sigma_max > sigma_min && sigma_max.is_finite()) {
                    return bad(format!(
                        "VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}"
                    ));
                }
                if n == 0 {
                    return bad("an SDE needs at least one step".into());
                }
                Ok(Box::new(VeSde {
                    sigma_min,
                    sigma_max,
                    n,
                }))
            }
            SdeConfig::Vp {
                beta_min,
                beta_max,
                n,
            }
            | SdeConfig::Subvp {
                beta_min,
                beta_max,
                n,
            } => {
                if !(beta_min > 0.0 && beta_max >= beta_min && beta_max.is_finite()) {
                    return bad(format!("VP/sub-VP SDE needs 0 < beta_min <= beta_max, got {beta_min} and {beta_max}"));
                }
                if n == 0 {
                    return bad("an SDE needs at least one step".into());
                }
                Ok(if matches!(self, SdeConfig::Vp { .. }) {
                    Box::new(VpSde {
                        beta_min,
                        beta_max,
                        n,
                    })
                } else {
                    Box::new(SubVpSde {
                        beta_min,
                        beta_max,
                        n,
                    })
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Box<dyn Sde>> {
        vec![
            SdeConfig::ve(348.0).build().unwrap(),
            SdeConfig::vp().build().unwrap(),
            SdeConfig::subvp().build().unwrap(),
        ]
    }

    fn ts() -> impl Iterator<Item = f64> {
        (1..100).map(|i| i as f64 / 100.0)
    }

    #[test]
    fn vp_preserves_variance() {
        let s = SdeConfig::vp().build().unwrap();
        for t in ts() {
            let (m, sd) = (s.mean_coef(t), s.std(t));
            assert!((m * m + sd * sd - 1.0).abs() < 1e-12, "t={t}");
        }
    }

    #[test]
    fn subvp_std_is_one_minus_mean_squared() {
        let s = SdeConfig::subvp().build().unwrap();
        for t in ts() {
            let m = s.mean_coef(t);
            assert!((s.std(t) - (1.0 - m * m)).abs() < 1e-12, "t={t}");
        }
    }

    #[test]
    fn ve_endpoints_and_g2_is_dsigma2_dt() {
        let s = VeSde {
            sigma_min: 0.01,
            sigma_max: 348.0,
            n: 2000,
        };
        assert!((s.std(0.0) - 0.01).abs() < 1e-15);
        assert!((s.std(1.0) - 348.0).abs() < 1e-9);
        for t in ts() {
            let h = 1e-6;
            let d = (s.std(t + h).powi(2) - s.std(t - h).powi(2)) / (2.0 * h);
            let g2 = s.diffusion(t).powi(2);
            assert!((d - g2).abs() / g2 < 1e-7, "t={t}: dσ²/dt {d} vs g² {g2}");
        }
    }

    /// For a linear SDE the marginal moments obey dμ/dt = f·μ and
    /// dσ²/dt = 2f·σ² + g²: this ties μ, σ, f and g together for every SDE.
    #[test]
    fn moments_follow_the_sde() {
        for s in all() {
            for t in ts() {
                let h = 1e-6;
                let dmu = (s.mean_coef(t + h) - s.mean_coef(t - h)) / (2.0 * h);
                let fmu = s.drift_coef(t) * s.mean_coef(t);
                assert!(
                    (dmu - fmu).abs() < 1e-6 * (1.0 + fmu.abs()),
                    "{} t={t}",
                    s.name()
                );
                let dvar = (s.std(t + h).powi(2) - s.std(t - h).powi(2)) / (2.0 * h);
                let rhs = 2.0 * s.drift_coef(t) * s.std(t).powi(2) + s.diffusion(t).powi(2);
                assert!(
                    (dvar - rhs).abs() < 1e-5 * (1.0 + rhs.abs()),
                    "{} t={t}: {dvar} vs {rhs}",
                    s.name()
                );
            }
        }
    }

    #[test]
    fn prior_matches_marginal_at_one() {
        for s in all() {
            // VP/sub-VP's prior N(0, 1) is the marginal's limit; at t = 1 μ ≈ 7e-3.
            assert!(s.mean_coef(1.0) < 1e-2 || s.name() == "ve");
            assert!(
                (s.std(1.0) - s.prior_std()).abs() / s.prior_std() < 1e-3,
                "{}",
                s.name()
            );
        }
    }

    #[test]
    fn prior_samples_have_the_prior_spread() {
        let b = crate::backend::cpu::CpuBackend::new();
        for s in all() {
            let x = b
                .read(&prior_sample(&b, s.as_ref(), &[20_000], RngStream::new(1, 2)).unwrap())
                .unwrap();
            let var = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
            let want = s.prior_std().powi(2);
            assert!(
                (var / want - 1.0).abs() < 0.03,
                "{}: variance {var} vs {want}",
                s.name()
            );
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(SdeConfig::Ve {
            sigma_min: 1.0,
            sigma_max: 0.5,
            n: 10
        }
        .build()
        .is_err());
        assert!(SdeConfig::Vp {
            beta_min: 0.1,
            beta_max: 20.0,
            n: 0
        }
        .build()
        .is_err());
        assert!(SdeConfig::Subvp {
            beta_min: -1.0,
            beta_max: 20.0,
            n: 10
        }
        .build()
        .is_err());
    }

    #[test]
    fn config_round_trips_through_json() {
        for c in [SdeConfig::ve(50.0), SdeConfig::vp(), SdeConfig::subvp()] {
            let j = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<SdeConfig>(&j).unwrap(), c);
        }
    }
}
