//! One compute API, two backends.
//!
//! Model, trainer and detector code is generic over [`Backend`]: the contract of
//! every op lives here, the kernels live with each backend (`cpu` in plain Rust,
//! the reference and fallback; `gpu` as WGSL compute shaders through wgpu).

pub mod cpu;
pub mod gpu;
pub mod nn_ops;
mod select;
pub(crate) mod shape_check;
pub mod train_ops;

pub use nn_ops::{Conv2dGrads, GroupNormGrads, GroupNormOut, LayerOps, MatOps, NnBackend};
#[cfg(not(target_arch = "wasm32"))]
pub use select::open_backend;
pub use select::{AnyBackend, BackendChoice};
pub use train_ops::{AdamStep, Reduce, TrainOps};

use crate::error::{Error, Result};
use crate::rng::RngStream;

/// Shape of a row-major f32 tensor.
pub type Shape = Vec<usize>;

/// Number of elements of a shape, refusing overflow (absurd shapes are bad input, not a panic).
pub fn numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::shape(
                op,
                format!("{shape:?} has more elements than fit in memory"),
            )
        })
}

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

/// Output geometry of a conv2d, validated once for both backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub h_out: usize,
    pub w_out: usize,
}

impl ConvGeometry {
    /// Checks `x: [B, Cin, H, W]`, `w: [Cout, Cin, k, k]`, `bias: [Cout]`.
    pub fn new(x: &[usize], w: &[usize], bias: Option<&[usize]>, spec: Conv2dSpec) -> Result<Self> {
        const OP: &str = "conv2d";
        if x.len() != 4 || w.len() != 4 {
            return Err(Error::shape(
                OP,
                format!("input {x:?} and weight {w:?} must both be 4-D (NCHW, OIHW)"),
            ));
        }
        let (batch, c_in, h, wd) = (x[0], x[1], x[2], x[3]);
        let (c_out, wc_in, kh, kw) = (w[0], w[1], w[2], w[3]);
        if wc_in != c_in || kh != kw || kh == 0 {
            return Err(Error::shape(
                OP,
                format!("weight {w:?} does not fit input {x:?} (need [Cout, {c_in}, k, k])"),
            ));
        }
        if let Some(b) = bias {
            if b != [c_out] {
                return Err(Error::shape(OP, format!("bias {b:?} must be [{c_out}]")));
            }
        }
        if spec.stride == 0 {
            return Err(Error::shape(OP, "stride must be at least 1"));
        }
        let (hp, wp) = (h + 2 * spec.padding, wd + 2 * spec.padding);
        if hp < kh || wp < kw {
            return Err(Error::shape(
                OP,
                format!("kernel {kh}x{kw} larger than padded input {hp}x{wp}"),
            ));
        }
        numel(OP, x)?;
        numel(OP, w)?;
        Ok(ConvGeometry {
            batch,
            c_in,
            h,
            w: wd,
            c_out,
            k: kh,
            stride: spec.stride,
            padding: spec.padding,
            h_out: (hp - kh) / spec.stride + 1,
            w_out: (wp - kw) / spec.stride + 1,
        })
    }

    pub fn out_shape(&self) -> Shape {
        vec![self.batch, self.c_out, self.h_out, self.w_out]
    }

    /// Multiply-adds ×2, the usual FLOP count.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.c_out * self.h_out * self.w_out) as f64
            * (self.c_in * self.k * self.k) as f64
    }
}

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

/// What [`Backend::random`] draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Uniform in (0, 1), never 0 or 1.
    Uniform,
    /// Standard normal.
    Normal,
}

/// Which kind of device a backend computes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Gpu,
}

/// The ops every backend provides. Tensors are dense row-major f32.
pub trait Backend {
    type Tensor: Clone + std::fmt::Debug;

    fn kind(&self) -> BackendKind;
    /// One line for users: which device, which driver.
    fn describe(&self) -> String;

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor>;
    /// Waits for pending work and copies the tensor to host memory.
    fn read(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a [usize];

    /// Element i of `rng`'s uniform sequence in (0, 1), or of its Gaussian
    /// sequence — the same numbers on every backend.
    fn random(&self, shape: &[usize], dist: Distribution, rng: RngStream) -> Result<Self::Tensor>;

    /// `a: [M, K] × b: [K, N] → [M, N]`.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// 2-D convolution (cross-correlation, as in PyTorch): `x: [B, Cin, H, W]`,
    /// `w: [Cout, Cin, k, k]`, optional `bias: [Cout]` → `[B, Cout, Ho, Wo]`.
    fn conv2d(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        spec: Conv2dSpec,
    ) -> Result<Self::Tensor>;

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
}

/// Checks that a per-sample op got one coefficient per sample of `shape` and
/// returns the number of elements per sample.
pub(crate) fn per_sample_len(op: &'static str, shape: &[usize], n_coef: usize) -> Result<usize> {
    let batch = *shape
        .first()
        .ok_or_else(|| Error::shape(op, "a batch tensor needs at least one dimension"))?;
    if batch != n_coef {
        return Err(Error::shape(
            op,
            format!("{n_coef} per-sample coefficients for a batch of {batch} ({shape:?})"),
        ));
    }
    numel(op, &shape[1..])
}

/// Validates a paired step's operands — x0, whole path, self path and z, then
/// the score — and returns the elements per sample.
pub(crate) fn paired_step_len(
    state: [&[usize]; 4],
    score: &[usize],
    n_coef: usize,
) -> Result<usize> {
    const OP: &str = "paired_step";
    let [x0, rest @ ..] = state;
    for (what, s) in ["whole path", "self path", "z"]
        .iter()
        .zip(rest)
        .chain([(&"score", score)])
    {
        if s != x0 {
            return Err(Error::shape(
                OP,
                format!("{what} {s:?} differs from x0 {x0:?}"),
            ));
        }
    }
    per_sample_len(OP, x0, n_coef)
}

pub(crate) fn matmul_dims(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    if a.len() != 2 || b.len() != 2 || a[1] != b[0] {
        return Err(Error::shape(
            "matmul",
            format!("{a:?} × {b:?}: need [M, K] × [K, N]"),
        ));
    }
    Ok((a[0], a[1], b[1]))
}
