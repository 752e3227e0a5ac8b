//! The Score-DD method's own ops: noising a clean batch, one paired reverse
//! step of the whole-score and self-score walks, and the feature distance
//! between the two walks' images.

use super::plan::{self, PairPlan, PerSamplePlan};
use super::{Backend, BackendKernels};
use crate::error::Result;
use crate::rng::RngStream;

/// Per-sample coefficients of the forward SDE's marginal: x_t = μ·x0 + σ·z.
/// `stream` picks the sample's own random stream (see [`RngStream::derive`]), so a
/// sample's noise does not depend on which batch it travels in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerturbCoef {
    pub mu: f32,
    pub sigma: f32,
    pub stream: u64,
}

/// Which reverse-time process the paired step integrates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Sampler {
    /// Probability-flow ODE (paper's Algorithm 1): deterministic.
    Ode,
    /// Reverse SDE (Algorithm 2): the same noise on both paths.
    Sde,
}

/// Per-sample coefficients of one reverse step from t_i to t_{i+1} = t_i − Δt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoef {
    /// drift coefficient f(t_i) (drift = f·x)
    pub f: f32,
    /// diffusion g(t_i)
    pub g: f32,
    /// σ(t_i): the self-score is −z/σ(t_i)
    pub sigma: f32,
    /// μ(t_{i+1}) and σ(t_{i+1}), to re-derive z after the step
    pub mu_next: f32,
    pub sigma_next: f32,
    pub dt: f32,
    /// the sample's random stream for the reverse-SDE noise n_i
    pub stream: u64,
}

/// The two walks of Score-DD, side by side: `whole` follows the learned score,
/// `own` follows the image's analytic score −z/σ; `z` is the noise that makes
/// `own` equal μ·x0 + σ·z at the current time.
#[derive(Clone, Debug)]
pub struct PairedState<T> {
    pub x0: T,
    pub whole: T,
    pub own: T,
    pub z: T,
}

/// One Euler step of the reverse-time process for a single value: the
/// expression both backends evaluate (`shaders/paired_step.wgsl` writes it too).
#[inline]
pub fn reverse_update(x: f32, score: f32, c: &StepCoef, sampler: Sampler, noise: f32) -> f32 {
    let g2 = c.g * c.g;
    match sampler {
        Sampler::Ode => x + (-c.f * x + 0.5 * g2 * score) * c.dt,
        Sampler::Sde => x + (-c.f * x + g2 * score) * c.dt + c.g * c.dt.sqrt() * noise,
    }
}

/// The ops of the Score-DD method (Teng et al.) that are not network layers:
/// they read per-sample SDE coefficients and Philox streams. What belongs
/// here: a step of the method's sampling or scoring that a backend fuses into
/// one kernel.
///
/// Implemented once, for every backend implementing [`ScoreDdKernels`].
pub trait ScoreDdOps: Backend {
    /// SDE noise injection. `x0: [B, …]`, one coefficient per sample.
    /// Returns `(x_t, z)` with z ~ N(0, I) drawn from `rng.derive(coef.stream)`.
    fn perturb(
        &self,
        x0: &Self::Tensor,
        coef: &[PerturbCoef],
        rng: RngStream,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    /// One paired whole/self-score reverse step, in place: advances `state.whole`
    /// with `whole_score` (= s_θ(state.whole, t_i)), `state.own` with −z/σ, then
    /// sets z = (own − μ(t_{i+1})·x0)/σ(t_{i+1}). For [`Sampler::Sde`] both paths
    /// get the same noise n_i, drawn from `rng.derive(coef.stream)`.
    fn paired_step(
        &self,
        state: &mut PairedState<Self::Tensor>,
        whole_score: &Self::Tensor,
        coef: &[StepCoef],
        sampler: Sampler,
        rng: RngStream,
    ) -> Result<()>;

    /// Score-DD's feature distance. `x: [2N, C, H, W]` holds a feature map of
    /// the batch [x'; x''] (sample n and N + n are a pair); the result `[N, H, W]`
    /// is the per-pixel Euclidean distance over channels,
    /// sqrt(Σ_c (x[n, c] − x[N + n, c])²).
    fn pair_distance(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// [`ScoreDdOps::pair_distance`] relative to the features' magnitude:
    /// ‖a − b‖ / (‖a‖ + ‖b‖ + 1e-6) per pixel, in [0, 1]. Busy texture
    /// makes features and their differences large together; the ratio
    /// does not grow with it, so a plain region's defect can outrank it.
    fn pair_relative_distance(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
}

/// What a backend implements for [`ScoreDdOps`]: the computations on
/// validated operands. Called only by the one implementation of [`ScoreDdOps`].
pub trait ScoreDdKernels: BackendKernels {
    fn perturb_planned(
        &self,
        p: &PerSamplePlan,
        x0: &Self::Tensor,
        coef: &[PerturbCoef],
        rng: RngStream,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    fn paired_step_planned(
        &self,
        p: &PerSamplePlan,
        state: &mut PairedState<Self::Tensor>,
        whole_score: &Self::Tensor,
        coef: &[StepCoef],
        sampler: Sampler,
        rng: RngStream,
    ) -> Result<()>;

    fn pair_distance_planned(&self, p: &PairPlan, x: &Self::Tensor) -> Result<Self::Tensor>;
}

impl<K: ScoreDdKernels> ScoreDdOps for K {
    fn perturb(
        &self,
        x0: &K::Tensor,
        coef: &[PerturbCoef],
        rng: RngStream,
    ) -> Result<(K::Tensor, K::Tensor)> {
        let p = plan::perturb(self.shape(x0), coef.len())?;
        self.perturb_planned(&p, x0, coef, rng)
    }

    fn paired_step(
        &self,
        st: &mut PairedState<K::Tensor>,
        whole_score: &K::Tensor,
        coef: &[StepCoef],
        sampler: Sampler,
        rng: RngStream,
    ) -> Result<()> {
        let state = [&st.x0, &st.whole, &st.own, &st.z].map(|t| self.shape(t));
        let p = plan::paired_step(state, self.shape(whole_score), coef.len())?;
        self.paired_step_planned(&p, st, whole_score, coef, sampler, rng)
    }

    fn pair_distance(&self, x: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::pair_distance(self.shape(x))?;
        self.pair_distance_planned(&p, x)
    }

    fn pair_relative_distance(&self, x: &K::Tensor) -> Result<K::Tensor> {
        let p = PairPlan {
            relative: true,
            ..plan::pair_distance(self.shape(x))?
        };
        self.pair_distance_planned(&p, x)
    }
}
