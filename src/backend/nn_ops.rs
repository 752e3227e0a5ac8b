//! The ops a neural network needs beyond [`Backend`]'s core: forward AND backward
//! of every layer of the score U-net. Two traits, so the matrix ops and the
//! pointwise/normalisation/resampling ops can live in separate files per backend;
//! model code asks for both through [`NnBackend`].
//!
//! Conventions: tensors are row-major f32, images NCHW. Every `*_backward`
//! takes the upstream gradient `dy` (same shape as the forward output) and
//! returns gradients with the shapes of the forward inputs. Shapes are
//! validated and mismatches are `Error::Shape` naming the op.

use super::{Backend, Conv2dSpec};
use crate::error::Result;
use crate::rng::RngStream;

/// Gradients of a conv2d with respect to its input, weight and bias.
pub struct Conv2dGrads<T> {
    pub dx: T,
    pub dw: T,
    /// Σ over batch and space of dy, `[Cout]`.
    pub db: T,
}

/// Matrix-shaped ops: convolution gradients, batched matmul, softmax.
pub trait MatOps: Backend {
    /// Gradients of [`Backend::conv2d`] (the bias gradient is returned whether
    /// or not the forward had a bias). Same kernel sizes/strides as the forward.
    fn conv2d_backward(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        dy: &Self::Tensor,
        spec: Conv2dSpec,
    ) -> Result<Conv2dGrads<Self::Tensor>>;

    /// Batched matmul: `a: [B, M, K]` (or `[B, K, M]` when `ta`), `b: [B, K, N]`
    /// (or `[B, N, K]` when `tb`) → `[B, M, N]`, c[i] = op(a[i])·op(b[i]).
    /// A 2-D operand (no batch) is broadcast over the other's batch.
    fn bmm(&self, a: &Self::Tensor, b: &Self::Tensor, ta: bool, tb: bool) -> Result<Self::Tensor>;

    /// Softmax over the last axis of `x` (any rank ≥ 1), numerically stable
    /// (subtract the row max).
    fn softmax(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Given y = softmax(x) and dy, returns dx = y ⊙ (dy − Σ_j dy_j·y_j) per row.
    fn softmax_backward(&self, y: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;
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

/// Pointwise, normalisation, bias, resampling and shape ops.
pub trait LayerOps: Backend {
    /// Same data, new shape with the same element count (no copy needed).
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// α·a + β·b, same shapes (residuals, skip_rescale, scaling when β = 0 and b = a).
    fn axpby(
        &self,
        alpha: f32,
        a: &Self::Tensor,
        beta: f32,
        b: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    /// Elementwise product, same shapes.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// x·sigmoid(x).
    fn silu(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// dy ⊙ silu'(x), silu'(x) = σ(x)·(1 + x·(1 − σ(x))).
    fn silu_backward(&self, x: &Self::Tensor, dy: &Self::Tensor) -> Result<Self::Tensor>;

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

    /// `x: [B, C, …] + bias[c]` (one bias per channel, broadcast over batch and
    /// space; for `x: [B, C]` this is a Linear layer's bias).
    fn add_bias(&self, x: &Self::Tensor, bias: &Self::Tensor) -> Result<Self::Tensor>;

    /// Gradient of [`LayerOps::add_bias`] w.r.t. the bias: Σ over batch and space, `[C]`.
    fn bias_grad(&self, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// `x: [B, C, …] + t[b, c]`: a per-sample, per-channel bias (the time
    /// embedding added inside every residual block).
    fn add_sample_bias(&self, x: &Self::Tensor, t: &Self::Tensor) -> Result<Self::Tensor>;

    /// Gradient of [`LayerOps::add_sample_bias`] w.r.t. t: Σ over space, `[B, C]`.
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

    /// Adjoint (gradient) of [`LayerOps::fir_up`]: `[B, C, 2H, 2W]` → `[B, C, H, W]`.
    fn fir_up_backward(&self, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// Adjoint (gradient) of [`LayerOps::fir_down`]: `[B, C, H/2, W/2]` → `[B, C, H, W]`.
    fn fir_down_backward(&self, dy: &Self::Tensor) -> Result<Self::Tensor>;

    /// Channel concatenation `[B, Ca, …] ++ [B, Cb, …]` → `[B, Ca + Cb, …]`.
    fn concat_channels(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Inverse of concat: `[B, C, …]` → (`[B, ca, …]`, `[B, C − ca, …]`).
    fn split_channels(&self, x: &Self::Tensor, ca: usize) -> Result<(Self::Tensor, Self::Tensor)>;

    /// Inverted-dropout mask: element i is 1/(1 − p) if `rng.uniform(i)` ≥ p, else 0
    /// (0 ≤ p < 1). The same mask on every backend.
    fn dropout_mask(&self, shape: &[usize], p: f32, rng: RngStream) -> Result<Self::Tensor>;

    /// Σ over the first axis: `[B, …]` → `[…]`.
    fn sum_batch(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Score-DD's feature distance. `x: [2N, C, H, W]` holds a feature map of
    /// the batch [x'; x''] (sample n and N + n are a pair); the result `[N, H, W]`
    /// is the per-pixel Euclidean distance over channels,
    /// sqrt(Σ_c (x[n, c] − x[N + n, c])²).
    fn pair_distance(&self, x: &Self::Tensor) -> Result<Self::Tensor>;
}

/// Everything the score network needs.
pub trait NnBackend: Backend + MatOps + LayerOps + super::TrainOps {}
impl<B: Backend + MatOps + LayerOps + super::TrainOps> NnBackend for B {}
