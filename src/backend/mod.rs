//! One compute API, two backends: `cpu` (plain Rust, the reference and the
//! fallback) and `gpu` (WGSL compute shaders through wgpu).
//!
//! **Traits by concept.** [`Backend`]: tensor plumbing and primitives (upload,
//! read, random, reshape, matmul, bmm, the elementwise registry, batch and
//! channel shuffles). [`ModuleOps`]: network layers and their backwards.
//! [`ScoreDdOps`]: the method's perturb, paired step and pair distance.
//! [`TrainOps`]: loss, gradient norm, Adam, EMA. [`NnBackend`]: all four.
//!
//! **Validate once, dispatch twice.** Each of those traits is the checked
//! API, implemented ONCE for every backend by a blanket impl over its
//! unchecked twin ([`BackendKernels`], [`ModuleKernels`], [`ScoreDdKernels`],
//! [`TrainKernels`]): a checked method asks [`plan`] to validate the operand
//! shapes — one function per op, returning a plan with the dims the kernels
//! need — then calls the backend's `*_planned` kernel with it. So both
//! backends refuse the same inputs with the same message, and a backend
//! cannot skip or reword a check. Generic code uses only the checked traits.
//!
//! **Where to add**
//! - an elementwise op (with its backward): a line in [`pointwise`]'s
//!   registry, its arm in `cpu/pointwise.rs`, its entry in
//!   `shaders/elementwise.wgsl`, its line in the `kernels!` table
//!   (`gpu/kernels.rs`). No dispatch code; the registry tests cover it.
//! - any other op: a plan fn in [`plan`]; the checked method (declaration +
//!   blanket body) and its `*_planned` kernel in the concept's trait file;
//!   the CPU kernel in `cpu/<concept>.rs`; the WGSL in `shaders/`, its
//!   parameter struct in `gpu/params.rs`, its `kernels!` line, and the GPU
//!   dispatch in `gpu/<concept>.rs`.
//! - a backend: a tensor type and the four `*Kernels` traits; the checked
//!   traits and [`NnBackend`] then come for free.

pub mod cpu;
pub mod gpu;
mod module_ops;
pub mod plan;
pub mod pointwise;
mod scoredd_ops;
mod select;
pub mod train_ops;

pub use module_ops::{
    Conv2dGrads, Conv2dSpec, ConvEpilogue, GroupNormGrads, GroupNormOut, ModuleKernels, ModuleOps,
};
pub use plan::{numel, ConvGeometry, NormAct};
pub use pointwise::Pointwise;
pub use scoredd_ops::{
    reverse_update, PairedState, PerturbCoef, Sampler, ScoreDdKernels, ScoreDdOps, StepCoef,
};
#[cfg(not(target_arch = "wasm32"))]
pub use select::open_backend;
pub use select::{AnyBackend, BackendChoice};
pub use train_ops::{AdamStep, Reduce, TrainKernels, TrainOps};

use crate::error::Result;
use crate::rng::RngStream;
use plan::{BmmPlan, ConcatPlan, MatmulPlan, PointwisePlan, SplitPlan, SumBatchPlan};

/// Shape of a row-major f32 tensor.
pub type Shape = Vec<usize>;

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

/// Tensors and the primitives every other op is built from: storage, host
/// transfers, random numbers, reshapes, matrix products, the elementwise
/// registry ([`Pointwise`]), and batch/channel reductions and shuffles. What
/// belongs here: an op with no meaning specific to networks, the method or
/// training. Tensors are dense row-major f32.
///
/// Implemented once, for every backend implementing [`BackendKernels`].
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

    /// Same data, new shape with the same element count (no copy needed).
    fn reshape(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// `a: [M, K] × b: [K, N] → [M, N]`.
    fn matmul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Batched matmul: `a: [B, M, K]` (or `[B, K, M]` when `ta`), `b: [B, K, N]`
    /// (or `[B, N, K]` when `tb`) → `[B, M, N]`, c[i] = op(a[i])·op(b[i]).
    /// A 2-D operand (no batch) is broadcast over the other's batch.
    fn bmm(&self, a: &Self::Tensor, b: &Self::Tensor, ta: bool, tb: bool) -> Result<Self::Tensor>;

    /// The elementwise op `op` over same-shaped `inputs` (one per
    /// [`Pointwise::operands`]), with the scalars α, β for the ops that read them.
    fn pointwise(
        &self,
        op: Pointwise,
        inputs: &[&Self::Tensor],
        scalars: [f32; 2],
    ) -> Result<Self::Tensor>;

    /// α·a + β·b, same shapes ([`Pointwise::Axpby`]).
    fn axpby(
        &self,
        alpha: f32,
        a: &Self::Tensor,
        beta: f32,
        b: &Self::Tensor,
    ) -> Result<Self::Tensor>;

    /// Elementwise product, same shapes ([`Pointwise::Mul`]).
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Σ over the first axis: `[B, …]` → `[…]`.
    fn sum_batch(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Channel concatenation `[B, Ca, …] ++ [B, Cb, …]` → `[B, Ca + Cb, …]`.
    fn concat_channels(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Inverse of concat: `[B, C, …]` → (`[B, ca, …]`, `[B, C − ca, …]`).
    fn split_channels(&self, x: &Self::Tensor, ca: usize) -> Result<(Self::Tensor, Self::Tensor)>;
}

/// What a backend implements for [`Backend`]: its tensor type, the
/// plumbing, and each primitive's computation on operands already
/// validated (a `*_planned` kernel takes its op's plan; `upload`, `zeros`,
/// `random` and `reshape` get shapes whose element count is checked).
/// Called only by the one implementation of [`Backend`] below.
pub trait BackendKernels {
    type Tensor: Clone + std::fmt::Debug;

    fn kind(&self) -> BackendKind;
    fn describe(&self) -> String;
    fn read(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a [usize];

    fn upload_planned(&self, data: &[f32], shape: &[usize]) -> Result<Self::Tensor>;
    fn zeros_planned(&self, shape: &[usize]) -> Result<Self::Tensor>;
    fn random_planned(
        &self,
        shape: &[usize],
        dist: Distribution,
        rng: RngStream,
    ) -> Result<Self::Tensor>;
    fn reshape_planned(&self, x: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    fn matmul_planned(
        &self,
        p: &MatmulPlan,
        a: &Self::Tensor,
        b: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    fn bmm_planned(&self, p: &BmmPlan, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
    /// Any op of the registry: `p.op` says which; no per-op code.
    fn pointwise_planned(
        &self,
        p: &PointwisePlan,
        inputs: &[&Self::Tensor],
    ) -> Result<Self::Tensor>;
    fn sum_batch_planned(&self, p: &SumBatchPlan, x: &Self::Tensor) -> Result<Self::Tensor>;
    fn concat_channels_planned(
        &self,
        p: &ConcatPlan,
        a: &Self::Tensor,
        b: &Self::Tensor,
    ) -> Result<Self::Tensor>;
    fn split_channels_planned(
        &self,
        p: &SplitPlan,
        x: &Self::Tensor,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
}

impl<K: BackendKernels> Backend for K {
    type Tensor = K::Tensor;

    fn kind(&self) -> BackendKind {
        K::kind(self)
    }

    fn describe(&self) -> String {
        K::describe(self)
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<K::Tensor> {
        plan::upload(shape, data.len())?;
        self.upload_planned(data, shape)
    }

    fn zeros(&self, shape: &[usize]) -> Result<K::Tensor> {
        numel("zeros", shape)?;
        self.zeros_planned(shape)
    }

    fn read(&self, t: &K::Tensor) -> Result<Vec<f32>> {
        K::read(self, t)
    }

    fn shape<'a>(&self, t: &'a K::Tensor) -> &'a [usize] {
        K::shape(self, t)
    }

    fn random(&self, shape: &[usize], dist: Distribution, rng: RngStream) -> Result<K::Tensor> {
        numel("random", shape)?;
        self.random_planned(shape, dist, rng)
    }

    fn reshape(&self, x: &K::Tensor, shape: &[usize]) -> Result<K::Tensor> {
        plan::reshape(K::shape(self, x), shape)?;
        self.reshape_planned(x, shape)
    }

    fn matmul(&self, a: &K::Tensor, b: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::matmul(K::shape(self, a), K::shape(self, b))?;
        self.matmul_planned(&p, a, b)
    }

    fn bmm(&self, a: &K::Tensor, b: &K::Tensor, ta: bool, tb: bool) -> Result<K::Tensor> {
        let p = plan::bmm(K::shape(self, a), K::shape(self, b), ta, tb)?;
        self.bmm_planned(&p, a, b)
    }

    fn pointwise(
        &self,
        op: Pointwise,
        inputs: &[&K::Tensor],
        scalars: [f32; 2],
    ) -> Result<K::Tensor> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| K::shape(self, t)).collect();
        let p = plan::pointwise(op, &shapes, scalars)?;
        self.pointwise_planned(&p, inputs)
    }

    fn axpby(&self, alpha: f32, a: &K::Tensor, beta: f32, b: &K::Tensor) -> Result<K::Tensor> {
        self.pointwise(Pointwise::Axpby, &[a, b], [alpha, beta])
    }

    fn mul(&self, a: &K::Tensor, b: &K::Tensor) -> Result<K::Tensor> {
        self.pointwise(Pointwise::Mul, &[a, b], [0.0; 2])
    }

    fn sum_batch(&self, x: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::sum_batch(K::shape(self, x))?;
        self.sum_batch_planned(&p, x)
    }

    fn concat_channels(&self, a: &K::Tensor, b: &K::Tensor) -> Result<K::Tensor> {
        let p = plan::concat_channels(K::shape(self, a), K::shape(self, b))?;
        self.concat_channels_planned(&p, a, b)
    }

    fn split_channels(&self, x: &K::Tensor, ca: usize) -> Result<(K::Tensor, K::Tensor)> {
        let p = plan::split_channels(K::shape(self, x), ca)?;
        self.split_channels_planned(&p, x)
    }
}

/// Everything the score network, the method and the trainer need.
pub trait NnBackend: Backend + ModuleOps + ScoreDdOps + TrainOps {}
impl<B: Backend + ModuleOps + ScoreDdOps + TrainOps> NnBackend for B {}
