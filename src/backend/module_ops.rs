//! Network layers and their backwards: what the score U-net is built from.
//!
//! Conventions: tensors are row-major f32, images NCHW. Every `*_backward`
//! takes the upstream gradient `dy` (same shape as the forward output) and
//! returns gradients with the shapes of the forward inputs. Shapes are
//! validated once ([`super::plan`]); mismatches are `Error::Shape` naming the op.

use super::plan::{
    self, ChannelDims, ConvGeometry, DropoutPlan, GroupNormPlan, NormAct, Resample, ResamplePlan,
    RowsPlan,
};
use super::pointwise::Pointwise;
use super::{Backend, BackendKernels};
use crate::error::Result;
use crate::rng::RngStream;

/// Stride and zero padding of a 2-D convolution (square kernels, same in both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dSpec {
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dSpec { stride, padding }
    }
}

/// What a conv adds to `W∗x` in the same pass over its output:
/// `out = scale·(W∗x + bias[c] + sample_bias[b, c] + residual)`. The
/// ResBlock's time embedding (`sample_bias`) and its residual sum with the
/// skip rescale (`residual`, `scale` 1/√2) then cost no pass of their own.
#[derive(Clone, Copy, Debug)]
pub struct ConvEpilogue<'a, T> {
    /// `[Cout]`.
    pub bias: &'a T,
    /// `[B, Cout]`, or none.
    pub sample_bias: Option<&'a T>,
    /// Shaped like the output, or none.
    pub residual: Option<&'a T>,
    pub scale: f32,
}

/// Gradients of a conv2d with respect to its input, weight and bias.
pub struct Conv2dGrads<T> {
    pub dx: T,
    pub dw: T,
    /// Σ over batch and space of dy, `[Cout]`.
    pub db: T,
}

/// Per-(sample, group) statistics saved by the GroupNorm forward for its backward.
pub struct GroupNormOut<T> {
    pub y: T,
    /// `[B, G, 2]`: (mean, 1/sqrt(var + eps)) of each group, biased variance.
    pub stats: T,
}

pub struct GroupNormGrads<T> {
    pub dx: T,
    /// `[C]`
    pub dgamma: T,
    /// `[C]`
    pub dbeta: T,
}

/// The layers of a network and their backwards: convolution, normalisation,
/// activations, attention's softmax, biases, resampling, dropout. What
/// belongs here: an op a model's layer calls, with the gradient its backward
/// needs. (Tensor plumbing and linear algebra are [`Backend`]'s; the
/// Score-DD method's ops [`ScoreDdOps`](super::ScoreDdOps)'; the trainer's
/// [`TrainOps`](super::TrainOps)'.)
///
/// Implemented once, for every backend implementing [`ModuleKernels`].
pub trait ModuleOps: Backend {
    /// 2-D convolution (cross-correlation, as in PyTorch): `x: [B, Cin, H, W]`,
    /// `w: [Cout, Cin, k, k]`, optional `bias: [Cout]` → `[B, Cout, Ho, Wo]`.
    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        spec: Conv2dSpec,
    ) -> Result<Self::Tensor>;

    /// Gradients of [`ModuleOps::conv2d`] (the bias gradient is returned whether
    /// or not the forward had a bias). Same kernel sizes/strides as the forward.
    fn conv2d_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        spec: Conv2dSpec,
    ) -> Result<Conv2dGrads<Self::Tensor>>;

    /// [`ModuleOps::conv2d`] with the [`ConvEpilogue`] applied to its output.
    /// Its gradients are [`ModuleOps::conv2d_backward`]'s of `dy·scale`, plus
    /// `dy·scale` itself for the residual and its per-(sample, channel) sums
    /// for `sample_bias`.
    fn conv2d_fused(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        epilogue: ConvEpilogue<'_, Self::Tensor>,
        spec: Conv2dSpec,
    ) -> Result<Self::Tensor>;

    /// GroupNorm over `x: [B, C, …]` with `groups` groups of C/groups channels
    /// (C divisible by groups), per-channel affine `gamma, beta: [C]`:
    /// y = (x − mean)/sqrt(var + eps)·gamma + beta, statistics per (sample, group).
    fn group_norm(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<GroupNormOut<Self::Tensor>>;

    fn group_norm_backward(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        stats: &Self::Tensor,
        dy: &Self::Tensor,
        groups: usize,
    ) -> Result<GroupNormGrads<Self::Tensor>>;

    /// SiLU(GroupNorm(x)) in one pass over memory (the U-net's norm →
    /// activation pairs): y = silu(x̂·γ + β), stats as [`ModuleOps::group_norm`].
    fn group_norm_silu(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<GroupNormOut<Self::Tensor>>;

    /// Gradients of [`ModuleOps::group_norm_silu`]: the pre-activation
    /// x̂·γ + β is recomputed from x, the stats, γ and β (nothing else saved).
    fn group_norm_silu_backward(
        &self,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        stats: &Self::Tensor,
        dy: &Self::Tensor,
        groups: usize,
    ) -> Result<GroupNormGrads<Self::Tensor>>;

    /// x·sigmoid(x) ([`Pointwise::Silu`]).
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// dy ⊙ silu'(x), silu'(x) = σ(x)·(1 + x·(1 − σ(x))) ([`Pointwise::SiluBackward`]).
    fn silu_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// Softmax over the last axis of `x` (any rank ≥ 1), numerically stable
    /// (subtract the row max).
    fn softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Given y = softmax(x) and dy, returns dx = y ⊙ (dy − Σ_j dy_j·y_j) per row.
    fn softmax_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x: [B, C, …] + bias[c]` (one bias per channel, broadcast over batch and
    /// space; for `x: [B, C]` this is a Linear layer's bias).
    fn add_bias(&self, x: &Self::Tensor, bias: &Self::Tensor) -> Result<Self::Tensor>;

    /// Gradient of [`ModuleOps::add_bias`] w.r.t. the bias: Σ over batch and space, `[C]`.
    fn bias_grad(&self, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x: [B, C, …] + t[b, c]`: a per-sample, per-channel bias (the time
    /// embedding added inside every residual block).
    fn add_sample_bias(&self, x: &Self::Tensor, t: &Self::Tensor) -> Result<Self::Tensor>;

    /// Gradient of [`ModuleOps::add_sample_bias`] w.r.t. t: Σ over space, `[B, C]`.
    fn sample_bias_grad(&self, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// Nearest-neighbour ×2 upsampling of `[B, C, H, W]` → `[B, C, 2H, 2W]`.
    fn upsample2x(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// 2×2 average pooling, stride 2: `[B, C, H, W]` → `[B, C, H/2, W/2]` (H, W even).
    /// Its adjoint is upsample2x/4; upsample2x's adjoint is 4·avgpool2x.
    fn avgpool2x(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// FIR ×2 upsampling with the [1,3,3,1] kernel (NCSN++'s upfirdn2d with up = 2):
    /// zero-insertion, then the separable 2-D filter k⊗k with k = [1,3,3,1]/8 and
    /// gain 4, pads (2, 1): `[B, C, H, W]` → `[B, C, 2H, 2W]`.
    fn fir_up(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// FIR ×2 downsampling (upfirdn2d with down = 2): filter with k⊗k,
    /// k = [1,3,3,1]/8, pads (1, 1), keep every second sample:
    /// `[B, C, H, W]` → `[B, C, H/2, W/2]` (H, W even).
    fn fir_down(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Adjoint (gradient) of [`ModuleOps::fir_up`]: `[B, C, 2H, 2W]` → `[B, C, H, W]`.
    fn fir_up_backward(&self, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// Adjoint (gradient) of [`ModuleOps::fir_down`]: `[B, C, H/2, W/2]` → `[B, C, H, W]`.
    fn fir_down_backward(&self, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// Inverted-dropout mask: element i is 1/(1 − p) if `rng.uniform(i)` ≥ p, else 0
    /// (0 ≤ p < 1, else `Error::Invalid`). The same mask on every backend.
    fn dropout_mask(&self, shape: &[usize], p: f32, rng: RngStream) -> Result<Self::Tensor>;
}

/// What a backend implements for [`ModuleOps`]: the computations, on operands
/// already validated (each takes its op's plan). Called only by the one
/// implementation of [`ModuleOps`] below; generic code never names this trait.
pub trait ModuleKernels: BackendKernels {
    fn conv2d_planned(
        &self,
        g: &ConvGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;

    fn conv2d_backward_planned(
        &self,
        g: &ConvGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<Conv2dGrads<Self::Tensor>>;

    fn conv2d_fused_planned(
        &self,
        g: &ConvGeometry,
        x: &Self::Tensor,
        w: &Self::Tensor,
        epilogue: ConvEpilogue<'_, Self::Tensor>,
    ) -> Result<Self::Tensor>;

    fn group_norm_planned(
        &self,
        p: &GroupNormPlan,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f32,
    ) -> Result<GroupNormOut<Self::Tensor>>;

    /// `beta` is Some exactly when `p.act` is [`NormAct::Silu`].
    fn group_norm_backward_planned(
        &self,
        p: &GroupNormPlan,
        x: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: Option<&Self::Tensor>,
        stats: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<GroupNormGrads<Self::Tensor>>;

    fn softmax_planned(&self, p: &RowsPlan, x: &Self::Tensor) -> Result<Self::Tensor>;

    fn softmax_backward_planned(
        &self,
        p: &RowsPlan,
        y: &Self::Tensor,
        dy: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    fn add_bias_planned(
        &self,
        p: &ChannelDims,
        x: &Self::Tensor,
        bias: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    fn bias_grad_planned(&self, p: &ChannelDims, dy: &Self::Tensor) -> Result<Self::Tensor>;

    fn add_sample_bias_planned(
        &self,
        p: &ChannelDims,
        x: &Self::Tensor,
        t: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    fn sample_bias_grad_planned(&self, p: &ChannelDims, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// The six ×2 resampling ops; `p.op` says which.
    fn resample_planned(&self, p: &ResamplePlan, x: &Self::Tensor) -> Result<Self::Tensor>;

    fn dropout_mask_planned(&self, p: &DropoutPlan, rng: RngStream) -> Result<Self::Tensor>;
}

impl<K: ModuleKernels> ModuleOps for K {
    fn conv2d(
        &self,
        x: &K::Tensor,
        w: &K::Tensor,
        bias: Option<&K::Tensor>,
        spec: Conv2dSpec,
    ) -> Result<K::Tensor> {
        let b = bias.map(|b| self.shape(b));
        let g = plan::conv2d(self.shape(x), self.shape(w), b, spec)?;
        self.conv2d_planned(&g, x, w, bias)
    }

    fn conv2d_backward(
        &self,
        x: &K::Tensor,
        w: &K::Tensor,
        dy: &K::Tensor,
        spec: Conv2dSpec,
    ) -> Result<Conv2dGrads<K::Tensor>> {
        let g = plan::conv2d_backward(self.shape(x), self.shape(w), self.shape(dy), spec)?;
        self.conv2d_backward_planned(&g, x, w, dy)
    }

    fn conv2d_fused(
        &self,
        x: &K::Tensor,
        w: &K::Tensor,
        epilogue: ConvEpilogue<'_, K::Tensor>,
        spec: Conv2dSpec,
    ) -> Result<K::Tensor> {
        let g = plan::conv2d_fused(
            self.shape(x),
            self.shape(w),
            self.shape(epilogue.bias),
            epilogue.sample_bias.map(|t| self.shape(t)),
            epilogue.residual.map(|t| self.shape(t)),
            spec,
        )?;
        self.conv2d_fused_planned(&g, x, w, epilogue)
    }

    fn group_norm(
        &self,
        x: &K::Tensor,
        gamma: &K::Tensor,
        beta: &K::Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<GroupNormOut<K::Tensor>> {
        let [sx, sg, sb] = [x, gamma, beta].map(|t| self.shape(t));
        let p = plan::group_norm(sx, sg, sb, groups, NormAct::Identity)?;
        self.group_norm_planned(&p, x, gamma, beta, eps)
    }

    fn group_norm_backward(
        &self,
        x: &K::Tensor,
        gamma: &K::Tensor,
        stats: &K::Tensor,
        dy: &K::Tensor,
        groups: usize,
    ) -> Result<GroupNormGrads<K::Tensor>> {
        let [sx, sg, ss, sd] = [x, gamma, stats, dy].map(|t| self.shape(t));
        let p = plan::group_norm_backward(sx, sg, None, ss, sd, groups)?;
        self.group_norm_backward_planned(&p, x, gamma, None, stats, dy)
    }

    fn group_norm_silu(
        &self,
        x: &K::Tensor,
        gamma: &K::Tensor,
        beta: &K::Tensor,
        groups: usize,
        eps: f32,
    ) -> Result<GroupNormOut<K::Tensor>> {
        let [sx, sg, sb] = [x, gamma, beta].map(|t| self.shape(t));
        let p = plan::group_norm(sx, sg, sb, groups, NormAct::Silu)?;
        self.group_norm_planned(&p, x, gamma, beta, eps)
    }

    fn group_norm_silu_backward(
        &self,
        x: &K::Tensor,
        gamma: &K::Tensor,
        beta: &K::Tensor,
        stats: &K::Tensor,
        dy: &K::Tensor,
        groups: usize,
    ) -> Result<GroupNormGrads<K::Tensor>> {
        let [sx, sg, sb, ss, sd] = [x, gamma, beta, stats, dy].map(|t| self.shape(t));
        let p = plan::group_norm_backward(sx, sg, Some(sb), ss, sd, groups)?;
        self.group_norm_backward_planned(&p, x, gamma, Some(beta), stats, dy)
    }

    fn silu(&self, x: &K::Tensor) -> Result<K::Tensor> {
        self.pointwise(Pointwise::Silu, &[x], [0.0; 2])
    }

    fn silu_backward(&self, x: &K::Tensor, dy: &K::Tensor) -> Result<K::Tensor> {
        self.pointwise(Pointwise::SiluBackward, &[x, dy], [0.0; 2])
    }

    fn softmax(&self, x: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::softmax(self.shape(x))?;
        self.softmax_planned(&p, x)
    }

    fn softmax_backward(&self, y: &K::Tensor, dy: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::softmax_backward(self.shape(y), self.shape(dy))?;
        self.softmax_backward_planned(&p, y, dy)
    }

    fn add_bias(&self, x: &K::Tensor, bias: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::add_bias(self.shape(x), self.shape(bias))?;
        self.add_bias_planned(&p, x, bias)
    }

    fn bias_grad(&self, dy: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::bias_grad(self.shape(dy))?;
        self.bias_grad_planned(&p, dy)
    }

    fn add_sample_bias(&self, x: &K::Tensor, t: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::add_sample_bias(self.shape(x), self.shape(t))?;
        self.add_sample_bias_planned(&p, x, t)
    }

    fn sample_bias_grad(&self, dy: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::sample_bias_grad(self.shape(dy))?;
        self.sample_bias_grad_planned(&p, dy)
    }

    fn upsample2x(&self, x: &K::Tensor) -> Result<K::Tensor> {
        resample(self, Resample::Upsample2x, x)
    }

    fn avgpool2x(&self, x: &K::Tensor) -> Result<K::Tensor> {
        resample(self, Resample::Avgpool2x, x)
    }

    fn fir_up(&self, x: &K::Tensor) -> Result<K::Tensor> {
        resample(self, Resample::FirUp, x)
    }

    fn fir_down(&self, x: &K::Tensor) -> Result<K::Tensor> {
        resample(self, Resample::FirDown, x)
    }

    fn fir_up_backward(&self, dy: &K::Tensor) -> Result<K::Tensor> {
        resample(self, Resample::FirUpBackward, dy)
    }

    fn fir_down_backward(&self, dy: &K::Tensor) -> Result<K::Tensor> {
        resample(self, Resample::FirDownBackward, dy)
    }

    fn dropout_mask(&self, shape: &[usize], p: f32, rng: RngStream) -> Result<K::Tensor> {
        let p = plan::dropout_mask(shape, p)?;
        self.dropout_mask_planned(&p, rng)
    }
}

fn resample<K: ModuleKernels>(be: &K, op: Resample, x: &K::Tensor) -> Result<K::Tensor> {
    let p = plan::resample(op, be.shape(x))?;
    be.resample_planned(&p, x)
}
