//! The ops a training step needs beyond the network's forward and backward:
//! the denoising-score-matching loss and its gradient, the squared gradient
//! norm, Adam with global-norm clipping, and the EMA of the weights.
//!
//! Contract: a GPU training step runs with NO readback except an occasional
//! scalar loss. So every scalar that feeds a later kernel (the loss, the sum
//! of squared gradients) stays on the device as a 1-element tensor `[1]`, and
//! the decisions that depend on it (the clipping scale, skipping a non-finite
//! step) are taken inside the kernels. [`TrainOps::is_finite`] is the one host
//! read, for callers that want to look.
//!
//! Conventions as in [`super::ModuleOps`]: row-major f32, shapes validated
//! once ([`super::plan`]), mismatches are `Error::Shape` naming the op.
//! In-place ops keep value semantics: a tensor whose storage is shared with a
//! clone is copied before it is updated, so the clone keeps its old value.

use super::plan::{self, AdamPlan, DsmPlan};
use super::{Backend, BackendKernels};
use crate::error::Result;

/// How the DSM loss reduces a sample's squared residuals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Reduce {
    /// Mean over the sample's elements of r².
    #[default]
    Mean,
    /// ½·Σ r² over the sample's elements (score_sde's `reduce_mean = False`).
    Sum,
}

/// Hyper-parameters of one Adam step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// 1-based step number t, for the bias corrections 1 − βᵗ (0 is refused).
    pub step: u64,
    /// Global gradient-norm clip; clipping is off when this is not a finite
    /// positive number (e.g. `f32::INFINITY` or 0).
    pub max_norm: f32,
}

impl AdamStep {
    /// β1 = 0.9, β2 = 0.999, ε = 1e-8, max_norm = 1.
    pub fn new(lr: f32, step: u64) -> Self {
        AdamStep {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step,
            max_norm: 1.0,
        }
    }

    /// (1 − β1ᵗ, 1 − β2ᵗ) computed in f64 and rounded once, the same numbers on
    /// every backend; `Error::Invalid` for step 0.
    pub fn bias_corrections(&self) -> Result<(f32, f32)> {
        if self.step == 0 {
            return Err(crate::error::Error::Invalid(
                "adam_step: the step number t starts at 1".into(),
            ));
        }
        let t = self.step.min(i32::MAX as u64) as i32;
        Ok((
            (1.0 - (self.beta1 as f64).powi(t)) as f32,
            (1.0 - (self.beta2 as f64).powi(t)) as f32,
        ))
    }

    /// Whether `max_norm` switches clipping on.
    pub fn clips(&self) -> bool {
        self.max_norm.is_finite() && self.max_norm > 0.0
    }

    /// The clipping factor for a squared global gradient norm `total`
    /// (assumed finite): min(1, max_norm / (√total + 1e-6)), or 1 when
    /// clipping is off. Every backend evaluates exactly this f32 expression.
    pub fn clip_scale(&self, total: f32) -> f32 {
        if self.clips() {
            (self.max_norm / (total.sqrt() + 1e-6)).min(1.0)
        } else {
            1.0
        }
    }
}

/// The training step's ops beyond the network: the loss, the gradient norm,
/// the optimiser and the weight average. What belongs here: an op only a
/// trainer calls. Scalars are 1-element tensors of shape `[1]`.
///
/// Implemented once, for every backend implementing [`TrainKernels`].
pub trait TrainOps: Backend {
    /// Denoising score matching: with `out, z: [B, …]` (same shape, B ≥ 1,
    /// D ≥ 1 elements per sample) and one weight per sample,
    /// r = sign·out + z, per-sample term = w_b·mean_D(r²) (`Reduce::Mean`) or
    /// w_b·½·Σ_D r² (`Reduce::Sum`), loss = mean over b of the terms.
    /// Returns `(loss: [1], dout = ∂loss/∂out)`, dout shaped like `out`:
    /// dout = sign·w_b·r·(2/D or 1)/B. The loss sum is accumulated in f64 on
    /// the CPU and in f32 with two-level (per-thread, then tree) reductions on
    /// the GPU.
    fn dsm_loss(
        &self,
        out: &Self::Tensor,
        z: &Self::Tensor,
        weights: &[f32],
        sign: f32,
        reduce: Reduce,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    /// Σ x² over every element (any shape, 0 for an empty tensor) → `[1]`.
    fn sum_squares(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// acc + Σ x² → a fresh `[1]` (`acc: [1]` untouched): accumulates the
    /// squared global gradient norm over all parameters without leaving the device.
    fn add_sum_squares(&self, acc: &Self::Tensor, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// One Adam step, in place on `param`, `m`, `v` (all shaped like `grad`),
    /// with global-norm clipping computed from `grad_sq_total: [1]` (Σ over
    /// ALL parameters' squared gradients): g' = [`AdamStep::clip_scale`]·g,
    /// m = β1·m + (1−β1)·g', v = β2·v + (1−β2)·g'²,
    /// p −= lr·(m/(1−β1ᵗ)) / (√(v/(1−β2ᵗ)) + ε).
    /// If `grad_sq_total` is not finite the step is skipped: param, m and v
    /// keep their values (so a NaN or Inf never reaches the weights).
    fn adam_step(
        &self,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        hp: &AdamStep,
        grad_sq_total: &Self::Tensor,
    ) -> Result<()>;

    /// ema = rate·ema + (1 − rate)·param, in place, same shapes.
    fn ema_update(&self, ema: &mut Self::Tensor, param: &Self::Tensor, rate: f32) -> Result<()>;

    /// Σ x² over every element of every tensor → `[1]` (0 for none): the
    /// squared global gradient norm, equal to chaining
    /// [`TrainOps::add_sum_squares`] from zero up to f32 rounding (the GPU
    /// adds all tensors' partial sums in one pass).
    fn sum_squares_all(&self, xs: &[&Self::Tensor]) -> Result<Self::Tensor>;

    /// [`TrainOps::adam_step`], then [`TrainOps::ema_update`] of `ema` toward
    /// the updated `param` at `rate`: the same results, fused where the
    /// backend can (one GPU dispatch per parameter instead of two).
    #[allow(clippy::too_many_arguments)]
    fn adam_ema_step(
        &self,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        hp: &AdamStep,
        grad_sq_total: &Self::Tensor,
        ema: &mut Self::Tensor,
        rate: f32,
    ) -> Result<()>;

    /// Whether every element of `x` (typically a `[1]` scalar) is finite. A
    /// host read: it waits for the device.
    fn is_finite(&self, x: &Self::Tensor) -> Result<bool>;
}

/// What a backend implements for [`TrainOps`]: the computations on validated
/// operands. Called only by the one implementation of [`TrainOps`].
pub trait TrainKernels: BackendKernels {
    fn dsm_loss_planned(
        &self,
        p: &DsmPlan,
        out: &Self::Tensor,
        z: &Self::Tensor,
        sign: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    /// acc (if any) + Σ x² → `[1]`; `n` elements in x.
    fn sum_squares_planned(
        &self,
        n: usize,
        acc: Option<&Self::Tensor>,
        x: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    #[allow(clippy::too_many_arguments)]
    fn adam_step_planned(
        &self,
        p: &AdamPlan,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        hp: &AdamStep,
        grad_sq_total: &Self::Tensor,
    ) -> Result<()>;

    /// `n` elements in each.
    fn ema_update_planned(
        &self,
        n: usize,
        ema: &mut Self::Tensor,
        param: &Self::Tensor,
        rate: f32,
    ) -> Result<()>;

    /// Σ x² over all `xs` (`ns[i]` elements in `xs[i]`) → `[1]`; by default
    /// one accumulating sum per tensor, from zero.
    fn sum_squares_all_planned(&self, ns: &[usize], xs: &[&Self::Tensor]) -> Result<Self::Tensor> {
        let mut total = self.zeros_planned(&[1])?;
        for (&n, x) in ns.iter().zip(xs) {
            total = self.sum_squares_planned(n, Some(&total), x)?;
        }
        Ok(total)
    }

    /// Adam then the EMA toward the updated param; by default the two
    /// kernels one after the other.
    #[allow(clippy::too_many_arguments)]
    fn adam_ema_step_planned(
        &self,
        p: &AdamPlan,
        param: &mut Self::Tensor,
        grad: &Self::Tensor,
        m: &mut Self::Tensor,
        v: &mut Self::Tensor,
        hp: &AdamStep,
        grad_sq_total: &Self::Tensor,
        ema: &mut Self::Tensor,
        rate: f32,
    ) -> Result<()> {
        self.adam_step_planned(p, param, grad, m, v, hp, grad_sq_total)?;
        self.ema_update_planned(p.n, ema, param, rate)
    }
}

impl<K: TrainKernels> TrainOps for K {
    fn dsm_loss(
        &self,
        out: &K::Tensor,
        z: &K::Tensor,
        weights: &[f32],
        sign: f32,
        reduce: Reduce,
    ) -> Result<(K::Tensor, K::Tensor)> {
        let p = plan::dsm_loss(self.shape(out), self.shape(z), weights, sign, reduce)?;
        self.dsm_loss_planned(&p, out, z, sign)
    }

    fn sum_squares(&self, x: &K::Tensor) -> Result<K::Tensor> {
        let n = plan::sum_squares(self.shape(x))?;
        self.sum_squares_planned(n, None, x)
    }

    fn add_sum_squares(&self, acc: &K::Tensor, x: &K::Tensor) -> Result<K::Tensor> {
        let n = plan::add_sum_squares(self.shape(acc), self.shape(x))?;
        self.sum_squares_planned(n, Some(acc), x)
    }

    fn adam_step(
        &self,
        param: &mut K::Tensor,
        grad: &K::Tensor,
        m: &mut K::Tensor,
        v: &mut K::Tensor,
        hp: &AdamStep,
        grad_sq_total: &K::Tensor,
    ) -> Result<()> {
        let shapes = [&*param, grad, &*m, &*v].map(|t| self.shape(t));
        let p = plan::adam_step(shapes, self.shape(grad_sq_total), hp)?;
        self.adam_step_planned(&p, param, grad, m, v, hp, grad_sq_total)
    }

    fn ema_update(&self, ema: &mut K::Tensor, param: &K::Tensor, rate: f32) -> Result<()> {
        let n = plan::ema_update(self.shape(ema), self.shape(param))?;
        self.ema_update_planned(n, ema, param, rate)
    }

    fn sum_squares_all(&self, xs: &[&K::Tensor]) -> Result<K::Tensor> {
        let ns = xs
            .iter()
            .map(|x| plan::sum_squares(self.shape(x)))
            .collect::<Result<Vec<_>>>()?;
        self.sum_squares_all_planned(&ns, xs)
    }

    fn adam_ema_step(
        &self,
        param: &mut K::Tensor,
        grad: &K::Tensor,
        m: &mut K::Tensor,
        v: &mut K::Tensor,
        hp: &AdamStep,
        grad_sq_total: &K::Tensor,
        ema: &mut K::Tensor,
        rate: f32,
    ) -> Result<()> {
        let shapes = [&*param, grad, &*m, &*v].map(|t| self.shape(t));
        let p = plan::adam_step(shapes, self.shape(grad_sq_total), hp)?;
        plan::ema_update(self.shape(ema), self.shape(param))?;
        self.adam_ema_step_planned(&p, param, grad, m, v, hp, grad_sq_total, ema, rate)
    }

    fn is_finite(&self, x: &K::Tensor) -> Result<bool> {
        Ok(self.read(x)?.iter().all(|v| v.is_finite()))
    }
}
