//! Validate once, dispatch twice. For every op, the ONE function that checks
//! its operands' shapes and returns a plan: the dimensions its kernels need
//! and the output shape. The checked trait methods ([`Backend`](super::Backend),
//! [`ModuleOps`](super::ModuleOps), [`ScoreDdOps`](super::ScoreDdOps),
//! [`TrainOps`](super::TrainOps)) call these and hand the plan to the
//! backend's kernel, so the CPU and the GPU backend accept and refuse exactly
//! the same inputs, with the same messages: an `Error::Shape` naming the op.
//!
//! A kernel trusts its plan and does not re-check shapes; build plans only
//! through these functions. Not checked here: a device's own limits (the GPU
//! kernels' 32-bit indexing and supported conv sizes, buffer and grid sizes),
//! which only that backend knows.

use super::module_ops::Conv2dSpec;
use super::pointwise::Pointwise;
use super::train_ops::{AdamStep, Reduce};
use super::Shape;
use crate::error::{Error, Result};

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

fn same_shape(op: &'static str, what: &str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("{what}: {a:?} vs {b:?}")));
    }
    Ok(())
}

// ------------------------------------------------------------------ primitives

/// `upload`: `values` numbers for `shape`; returns the element count.
pub fn upload(shape: &[usize], values: usize) -> Result<usize> {
    const OP: &str = "upload";
    let n = numel(OP, shape)?;
    if n != values {
        return Err(Error::shape(
            OP,
            format!("{values} values for shape {shape:?} ({n} elements)"),
        ));
    }
    Ok(n)
}

/// `reshape`: the same element count; returns it.
pub fn reshape(from: &[usize], to: &[usize]) -> Result<usize> {
    const OP: &str = "reshape";
    let (n, m) = (numel(OP, from)?, numel(OP, to)?);
    if n != m {
        return Err(Error::shape(
            OP,
            format!("{from:?} ({n} elements) cannot become {to:?} ({m} elements)"),
        ));
    }
    Ok(n)
}

/// `a: [M, K] × b: [K, N]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

pub fn matmul(a: &[usize], b: &[usize]) -> Result<MatmulPlan> {
    const OP: &str = "matmul";
    if a.len() != 2 || b.len() != 2 || a[1] != b[0] {
        return Err(Error::shape(
            OP,
            format!("{a:?} × {b:?}: need [M, K] × [K, N]"),
        ));
    }
    numel(OP, &[a[0], b[1]])?;
    Ok(MatmulPlan {
        m: a[0],
        k: a[1],
        n: b[1],
    })
}

/// A batched matmul `c[i] = op(a[i])·op(b[i])`, `[batch, M, N]` (or `[M, N]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmmPlan {
    /// Matrices in the output (1 when both operands are 2-D).
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// a is stored `[K, M]` (read transposed), b is stored `[N, K]`.
    pub ta: bool,
    pub tb: bool,
    /// Whether each operand has a batch axis (a 2-D one is broadcast).
    pub a_batched: bool,
    pub b_batched: bool,
    pub out: Shape,
}

impl BmmPlan {
    /// (rows, cols) of one stored matrix of a.
    pub fn a_dims(&self) -> (usize, usize) {
        if self.ta {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }

    /// (rows, cols) of one stored matrix of b.
    pub fn b_dims(&self) -> (usize, usize) {
        if self.tb {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }
}

/// `a: [B, M, K]` (or `[B, K, M]` when `ta`), `b: [B, K, N]` (or `[B, N, K]`
/// when `tb`), either may be 2-D.
pub fn bmm(a: &[usize], b: &[usize], ta: bool, tb: bool) -> Result<BmmPlan> {
    const OP: &str = "bmm";
    let bad = |why: &str| {
        let t = |on: bool| if on { "ᵀ" } else { "" };
        Error::shape(OP, format!("{a:?}{} × {b:?}{}: {why}", t(ta), t(tb)))
    };
    let rank_ok = |s: &[usize]| s.len() == 2 || s.len() == 3;
    if !rank_ok(a) || !rank_ok(b) {
        return Err(bad("operands must be [B, rows, cols] or [rows, cols]"));
    }
    let (ra, ca) = (a[a.len() - 2], a[a.len() - 1]);
    let (rb, cb) = (b[b.len() - 2], b[b.len() - 1]);
    let (m, ka) = if ta { (ca, ra) } else { (ra, ca) };
    let (kb, n) = if tb { (cb, rb) } else { (rb, cb) };
    if ka != kb {
        return Err(bad(&format!("inner dimensions differ ({ka} vs {kb})")));
    }
    let (a_batched, b_batched) = (a.len() == 3, b.len() == 3);
    let batch = match (a_batched, b_batched) {
        (true, true) if a[0] != b[0] => {
            return Err(bad(&format!("batch sizes differ ({} vs {})", a[0], b[0])))
        }
        (true, _) => Some(a[0]),
        (_, true) => Some(b[0]),
        _ => None,
    };
    let out = match batch {
        Some(bt) => vec![bt, m, n],
        None => vec![m, n],
    };
    numel(OP, a)?;
    numel(OP, b)?;
    numel(OP, &out)?;
    Ok(BmmPlan {
        batch: batch.unwrap_or(1),
        m,
        k: ka,
        n,
        ta,
        tb,
        a_batched,
        b_batched,
        out,
    })
}

/// One op of the elementwise registry over same-shaped operands.
#[derive(Clone, Debug, PartialEq)]
pub struct PointwisePlan {
    pub op: Pointwise,
    /// α, β: read by the ops whose doc says so.
    pub scalars: [f32; 2],
    /// Elements of every operand and of the output.
    pub n: usize,
    pub shape: Shape,
}

pub fn pointwise(op: Pointwise, inputs: &[&[usize]], scalars: [f32; 2]) -> Result<PointwisePlan> {
    let name = op.name();
    let operands = op.operands();
    if inputs.len() != operands.len() {
        return Err(Error::shape(
            name,
            format!(
                "takes {} operands ({}), got {}",
                operands.len(),
                operands.join(", "),
                inputs.len()
            ),
        ));
    }
    let first = inputs[0];
    for (what, s) in operands.iter().zip(inputs).skip(1) {
        if *s != first {
            return Err(Error::shape(
                name,
                format!("{what} {s:?} differs from {} {first:?}", operands[0]),
            ));
        }
    }
    Ok(PointwisePlan {
        op,
        scalars,
        n: numel(name, first)?,
        shape: first.to_vec(),
    })
}

/// Σ over the first axis: `[B, …]` → `[…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumBatchPlan {
    pub batch: usize,
    /// Elements per sample.
    pub d: usize,
    pub out: Shape,
}

pub fn sum_batch(x: &[usize]) -> Result<SumBatchPlan> {
    const OP: &str = "sum_batch";
    let Some((&batch, rest)) = x.split_first() else {
        return Err(Error::shape(OP, "a scalar has no batch axis"));
    };
    numel(OP, x)?;
    Ok(SumBatchPlan {
        batch,
        d: numel(OP, rest)?,
        out: rest.to_vec(),
    })
}

/// `[B, C, …]` seen as B samples of C channel planes of S elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelDims {
    pub batch: usize,
    pub c: usize,
    /// Elements per channel plane.
    pub s: usize,
}

pub fn channel_dims(op: &'static str, shape: &[usize]) -> Result<ChannelDims> {
    if shape.len() < 2 {
        return Err(Error::shape(
            op,
            format!("{shape:?}: need at least [batch, channels]"),
        ));
    }
    numel(op, shape)?;
    // Row lengths C·S are used even when B = 0.
    numel(op, &shape[1..])?;
    Ok(ChannelDims {
        batch: shape[0],
        c: shape[1],
        s: numel(op, &shape[2..])?,
    })
}

/// `[B, Ca, …] ++ [B, Cb, …]` → `[B, Ca + Cb, …]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcatPlan {
    pub batch: usize,
    pub ca: usize,
    pub cb: usize,
    pub s: usize,
    pub out: Shape,
}

pub fn concat_channels(a: &[usize], b: &[usize]) -> Result<ConcatPlan> {
    const OP: &str = "concat_channels";
    let (da, db) = (channel_dims(OP, a)?, channel_dims(OP, b)?);
    if da.batch != db.batch || a[2..] != b[2..] {
        return Err(Error::shape(
            OP,
            format!("{a:?} and {b:?} differ outside the channel axis"),
        ));
    }
    let mut out = a.to_vec();
    out[1] =
        da.c.checked_add(db.c)
            .ok_or_else(|| Error::shape(OP, "channel count overflows"))?;
    numel(OP, &out)?;
    numel(OP, &out[1..])?;
    Ok(ConcatPlan {
        batch: da.batch,
        ca: da.c,
        cb: db.c,
        s: da.s,
        out,
    })
}

/// `[B, C, …]` → (`[B, ca, …]`, `[B, C − ca, …]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    pub dims: ChannelDims,
    pub ca: usize,
    pub out_a: Shape,
    pub out_b: Shape,
}

pub fn split_channels(x: &[usize], ca: usize) -> Result<SplitPlan> {
    const OP: &str = "split_channels";
    let dims = channel_dims(OP, x)?;
    if ca > dims.c {
        return Err(Error::shape(
            OP,
            format!("cannot split {ca} channels off {x:?}"),
        ));
    }
    let (mut out_a, mut out_b) = (x.to_vec(), x.to_vec());
    out_a[1] = ca;
    out_b[1] = dims.c - ca;
    Ok(SplitPlan {
        dims,
        ca,
        out_a,
        out_b,
    })
}

// ------------------------------------------------------------------ network layers

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
        conv_geometry("conv2d", x, w, bias, spec)
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

fn conv_geometry(
    op: &'static str,
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
    spec: Conv2dSpec,
) -> Result<ConvGeometry> {
    if x.len() != 4 || w.len() != 4 {
        return Err(Error::shape(
            op,
            format!("input {x:?} and weight {w:?} must both be 4-D (NCHW, OIHW)"),
        ));
    }
    let (batch, c_in, h, wd) = (x[0], x[1], x[2], x[3]);
    let (c_out, wc_in, kh, kw) = (w[0], w[1], w[2], w[3]);
    if wc_in != c_in || kh != kw || kh == 0 {
        return Err(Error::shape(
            op,
            format!("weight {w:?} does not fit input {x:?} (need [Cout, {c_in}, k, k])"),
        ));
    }
    if let Some(b) = bias {
        if b != [c_out] {
            return Err(Error::shape(op, format!("bias {b:?} must be [{c_out}]")));
        }
    }
    if spec.stride == 0 {
        return Err(Error::shape(op, "stride must be at least 1"));
    }
    let big = || {
        Error::shape(
            op,
            format!("input {x:?} padded by {} overflows", spec.padding),
        )
    };
    let pad2 = spec.padding.checked_mul(2).ok_or_else(big)?;
    let hp = h.checked_add(pad2).ok_or_else(big)?;
    let wp = wd.checked_add(pad2).ok_or_else(big)?;
    if hp < kh || wp < kw {
        return Err(Error::shape(
            op,
            format!("kernel {kh}x{kw} larger than padded input {hp}x{wp}"),
        ));
    }
    numel(op, x)?;
    numel(op, w)?;
    let g = ConvGeometry {
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
    };
    numel(op, &g.out_shape())?;
    Ok(g)
}

pub fn conv2d(
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
    spec: Conv2dSpec,
) -> Result<ConvGeometry> {
    conv_geometry("conv2d", x, w, bias, spec)
}

/// A conv with an epilogue: `bias [Cout]`, `sample_bias [B, Cout]`,
/// `residual` shaped like the output.
pub fn conv2d_fused(
    x: &[usize],
    w: &[usize],
    bias: &[usize],
    sample_bias: Option<&[usize]>,
    residual: Option<&[usize]>,
    spec: Conv2dSpec,
) -> Result<ConvGeometry> {
    const OP: &str = "conv2d_fused";
    let g = conv_geometry(OP, x, w, Some(bias), spec)?;
    if let Some(sb) = sample_bias {
        if sb != [g.batch, g.c_out] {
            let want = [g.batch, g.c_out];
            return Err(Error::shape(
                OP,
                format!("sample bias {sb:?} must be {want:?}"),
            ));
        }
    }
    if let Some(r) = residual {
        if r != g.out_shape() {
            let want = g.out_shape();
            return Err(Error::shape(
                OP,
                format!("residual {r:?} must be the output's {want:?}"),
            ));
        }
    }
    Ok(g)
}

/// The forward's geometry, and `dy` shaped like the forward's output.
pub fn conv2d_backward(
    x: &[usize],
    w: &[usize],
    dy: &[usize],
    spec: Conv2dSpec,
) -> Result<ConvGeometry> {
    const OP: &str = "conv2d_backward";
    let g = conv_geometry(OP, x, w, None, spec)?;
    if dy != g.out_shape() {
        return Err(Error::shape(
            OP,
            format!("dy {dy:?} is not the conv output shape {:?}", g.out_shape()),
        ));
    }
    Ok(g)
}

/// What a GroupNorm applies to its normalised output in the same pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormAct {
    /// y = x̂·γ + β.
    #[default]
    Identity,
    /// y = SiLU(x̂·γ + β): the U-net's norm → activation pairs in one pass,
    /// without keeping the pre-activation (the backward recomputes it).
    Silu,
}

/// GroupNorm over `[B, C, …]`: `groups` groups of `cg` channels of S elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupNormPlan {
    pub batch: usize,
    pub c: usize,
    pub s: usize,
    pub groups: usize,
    /// Channels per group.
    pub cg: usize,
    pub act: NormAct,
}

impl GroupNormPlan {
    /// The saved statistics: (mean, rstd) per (sample, group).
    pub fn stats_shape(&self) -> [usize; 3] {
        [self.batch, self.groups, 2]
    }
}

fn group_plan(
    op: &'static str,
    x: &[usize],
    gamma: &[usize],
    groups: usize,
) -> Result<GroupNormPlan> {
    let ChannelDims { batch, c, s } = channel_dims(op, x)?;
    same_shape(op, "gamma must be [C]", gamma, &[c])?;
    Ok(GroupNormPlan {
        batch,
        c,
        s,
        groups,
        cg: 0,
        act: NormAct::Identity,
    })
}

/// Channels per group, checking that `groups` divides `c`.
fn group_size(op: &'static str, c: usize, groups: usize) -> Result<usize> {
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::shape(
            op,
            format!("{c} channels cannot form {groups} equal groups"),
        ));
    }
    Ok(c / groups)
}

pub fn group_norm(
    x: &[usize],
    gamma: &[usize],
    beta: &[usize],
    groups: usize,
    act: NormAct,
) -> Result<GroupNormPlan> {
    let op = match act {
        NormAct::Identity => "group_norm",
        NormAct::Silu => "group_norm_silu",
    };
    let mut p = group_plan(op, x, gamma, groups)?;
    same_shape(op, "beta must be [C]", beta, &[p.c])?;
    p.cg = group_size(op, p.c, groups)?;
    p.act = act;
    numel(op, &p.stats_shape())?;
    Ok(p)
}

/// The backward's operands; `beta` only with [`NormAct::Silu`], whose
/// backward recomputes the pre-activation x̂·γ + β.
pub fn group_norm_backward(
    x: &[usize],
    gamma: &[usize],
    beta: Option<&[usize]>,
    stats: &[usize],
    dy: &[usize],
    groups: usize,
) -> Result<GroupNormPlan> {
    let op = match beta {
        None => "group_norm_backward",
        Some(_) => "group_norm_silu_backward",
    };
    let mut p = group_plan(op, x, gamma, groups)?;
    if let Some(b) = beta {
        same_shape(op, "beta must be [C]", b, &[p.c])?;
        p.act = NormAct::Silu;
    }
    same_shape(op, "dy must have x's shape", dy, x)?;
    p.cg = group_size(op, p.c, groups)?;
    same_shape(op, "stats must be [B, groups, 2]", stats, &p.stats_shape())?;
    Ok(p)
}

/// Rows of the last axis (softmax and its backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsPlan {
    pub rows: usize,
    /// Row length.
    pub len: usize,
    /// Elements.
    pub n: usize,
}

fn rows(op: &'static str, x: &[usize]) -> Result<RowsPlan> {
    let Some(&len) = x.last() else {
        return Err(Error::shape(op, "a scalar has no axis to normalise"));
    };
    let n = numel(op, x)?;
    Ok(RowsPlan {
        rows: n.checked_div(len).unwrap_or(0),
        len,
        n,
    })
}

pub fn softmax(x: &[usize]) -> Result<RowsPlan> {
    rows("softmax", x)
}

pub fn softmax_backward(y: &[usize], dy: &[usize]) -> Result<RowsPlan> {
    const OP: &str = "softmax_backward";
    same_shape(OP, "y and dy differ", y, dy)?;
    rows(OP, y)
}

pub fn add_bias(x: &[usize], bias: &[usize]) -> Result<ChannelDims> {
    const OP: &str = "add_bias";
    let d = channel_dims(OP, x)?;
    same_shape(OP, "bias must be [C]", bias, &[d.c])?;
    Ok(d)
}

pub fn add_sample_bias(x: &[usize], t: &[usize]) -> Result<ChannelDims> {
    const OP: &str = "add_sample_bias";
    let d = channel_dims(OP, x)?;
    same_shape(OP, "t must be [B, C]", t, &[d.batch, d.c])?;
    Ok(d)
}

pub fn bias_grad(dy: &[usize]) -> Result<ChannelDims> {
    channel_dims("bias_grad", dy)
}

pub fn sample_bias_grad(dy: &[usize]) -> Result<ChannelDims> {
    channel_dims("sample_bias_grad", dy)
}

/// The ×2 resampling ops of `[B, C, H, W]` images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    /// Nearest neighbour, ×2.
    Upsample2x,
    /// 2×2 mean, ÷2.
    Avgpool2x,
    /// FIR [1,3,3,1] ×2 (upfirdn2d, up = 2).
    FirUp,
    /// FIR [1,3,3,1] ÷2 (upfirdn2d, down = 2).
    FirDown,
    /// fir_up's adjoint (÷2).
    FirUpBackward,
    /// fir_down's adjoint (×2).
    FirDownBackward,
}

impl Resample {
    pub fn name(self) -> &'static str {
        match self {
            Resample::Upsample2x => "upsample2x",
            Resample::Avgpool2x => "avgpool2x",
            Resample::FirUp => "fir_up",
            Resample::FirDown => "fir_down",
            Resample::FirUpBackward => "fir_up_backward",
            Resample::FirDownBackward => "fir_down_backward",
        }
    }

    /// Whether the output has twice (else half) the input's height and width.
    pub fn up(self) -> bool {
        matches!(
            self,
            Resample::Upsample2x | Resample::FirUp | Resample::FirDownBackward
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResamplePlan {
    pub op: Resample,
    /// B·C planes.
    pub planes: usize,
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Output height and width.
    pub ho: usize,
    pub wo: usize,
    pub out: Shape,
}

pub fn resample(op: Resample, x: &[usize]) -> Result<ResamplePlan> {
    let name = op.name();
    if x.len() != 4 {
        return Err(Error::shape(
            name,
            format!("{x:?}: need a 4-D [B, C, H, W] tensor"),
        ));
    }
    numel(name, x)?;
    let (h, w) = (x[2], x[3]);
    let (ho, wo) = if op.up() {
        let big = || Error::shape(name, format!("{x:?} doubled is too large"));
        (
            h.checked_mul(2).ok_or_else(big)?,
            w.checked_mul(2).ok_or_else(big)?,
        )
    } else {
        if !h.is_multiple_of(2) || !w.is_multiple_of(2) {
            return Err(Error::shape(
                name,
                format!("{x:?}: height and width must be even"),
            ));
        }
        (h / 2, w / 2)
    };
    let out = vec![x[0], x[1], ho, wo];
    numel(name, &out)?;
    Ok(ResamplePlan {
        op,
        planes: x[0] * x[1],
        h,
        w,
        ho,
        wo,
        out,
    })
}

/// An inverted-dropout mask: 0 or `keep` = 1/(1 − p).
#[derive(Clone, Debug, PartialEq)]
pub struct DropoutPlan {
    pub p: f32,
    /// The kept value, one f32 expression for every backend (bit-identical masks).
    pub keep: f32,
    pub n: usize,
    pub shape: Shape,
}

pub fn dropout_mask(shape: &[usize], p: f32) -> Result<DropoutPlan> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Invalid(format!(
            "dropout probability {p} must lie in [0, 1)"
        )));
    }
    Ok(DropoutPlan {
        p,
        keep: 1.0 / (1.0 - p),
        n: numel("dropout_mask", shape)?,
        shape: shape.to_vec(),
    })
}

// ------------------------------------------------------------------ Score-DD

/// A per-sample op on `[B, …]`: one coefficient per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerSamplePlan {
    pub batch: usize,
    /// Elements per sample.
    pub d: usize,
}

fn per_sample(op: &'static str, shape: &[usize], n_coef: usize) -> Result<PerSamplePlan> {
    let batch = *shape
        .first()
        .ok_or_else(|| Error::shape(op, "a batch tensor needs at least one dimension"))?;
    if batch != n_coef {
        return Err(Error::shape(
            op,
            format!("{n_coef} per-sample coefficients for a batch of {batch} ({shape:?})"),
        ));
    }
    numel(op, shape)?;
    Ok(PerSamplePlan {
        batch,
        d: numel(op, &shape[1..])?,
    })
}

pub fn perturb(x0: &[usize], n_coef: usize) -> Result<PerSamplePlan> {
    per_sample("perturb", x0, n_coef)
}

/// The state's x0, whole path, self path and z, then the score: all alike.
pub fn paired_step(state: [&[usize]; 4], score: &[usize], n_coef: usize) -> Result<PerSamplePlan> {
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
    per_sample(OP, x0, n_coef)
}

/// `[2N, C, H, W]` (a batch of pairs) → `[N, H, W]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairPlan {
    /// Pairs.
    pub n: usize,
    pub c: usize,
    /// Pixels per channel (H·W).
    pub s: usize,
    pub out: Shape,
    /// Divide each distance by the pair's feature norms (see
    /// `ScoreDdOps::pair_relative_distance`).
    pub relative: bool,
}

pub fn pair_distance(x: &[usize]) -> Result<PairPlan> {
    const OP: &str = "pair_distance";
    if x.len() != 4 {
        return Err(Error::shape(
            OP,
            format!("{x:?}: need a 4-D [B, C, H, W] tensor"),
        ));
    }
    numel(OP, x)?;
    if !x[0].is_multiple_of(2) {
        return Err(Error::shape(
            OP,
            format!("{x:?}: the batch must hold pairs (an even count)"),
        ));
    }
    Ok(PairPlan {
        n: x[0] / 2,
        c: x[1],
        s: x[2] * x[3],
        out: vec![x[0] / 2, x[2], x[3]],
        relative: false,
    })
}

// ------------------------------------------------------------------ training

/// The DSM loss over `[B, …]` with D elements per sample, and the factors of
/// each sample: (per-element loss factor c_b, gradient factor g_b), so that
/// loss = Σ_b c_b·Σ r² and dout = g_b·r (g_b includes `sign`). Computed in
/// f64 and rounded once: the same numbers on every backend.
#[derive(Clone, Debug, PartialEq)]
pub struct DsmPlan {
    pub batch: usize,
    pub d: usize,
    pub factors: Vec<[f32; 2]>,
}

pub fn dsm_loss(
    out: &[usize],
    z: &[usize],
    weights: &[f32],
    sign: f32,
    reduce: Reduce,
) -> Result<DsmPlan> {
    const OP: &str = "dsm_loss";
    same_shape(OP, "score output and noise differ", out, z)?;
    let PerSamplePlan { batch, d } = per_sample(OP, out, weights.len())?;
    if batch == 0 || d == 0 {
        return Err(Error::shape(
            OP,
            format!("{out:?}: the loss needs at least one sample of at least one element"),
        ));
    }
    let b = batch as f64;
    let (kl, kg) = match reduce {
        Reduce::Mean => (1.0 / d as f64, 2.0 / d as f64),
        Reduce::Sum => (0.5, 1.0),
    };
    let factors = weights
        .iter()
        .map(|&w| {
            let w = w as f64 / b;
            [(w * kl) as f32, (w * kg * sign as f64) as f32]
        })
        .collect();
    Ok(DsmPlan { batch, d, factors })
}

fn scalar(op: &'static str, what: &str, s: &[usize]) -> Result<()> {
    if numel(op, s)? != 1 {
        return Err(Error::shape(
            op,
            format!("{what} must be a 1-element tensor, got {s:?}"),
        ));
    }
    Ok(())
}

/// `sum_squares`: any shape; returns the element count.
pub fn sum_squares(x: &[usize]) -> Result<usize> {
    numel("sum_squares", x)
}

/// `add_sum_squares`: a `[1]` accumulator; returns x's element count.
pub fn add_sum_squares(acc: &[usize], x: &[usize]) -> Result<usize> {
    const OP: &str = "add_sum_squares";
    scalar(OP, "accumulator", acc)?;
    numel(OP, x)
}

/// One Adam step over `n` elements, with the bias corrections (1 − β1ᵗ, 1 − β2ᵗ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamPlan {
    pub n: usize,
    pub bc1: f32,
    pub bc2: f32,
}

pub fn adam_step(
    [param, grad, m, v]: [&[usize]; 4],
    grad_sq_total: &[usize],
    hp: &AdamStep,
) -> Result<AdamPlan> {
    const OP: &str = "adam_step";
    same_shape(OP, "parameter and gradient differ", param, grad)?;
    same_shape(OP, "first moment and gradient differ", m, grad)?;
    same_shape(OP, "second moment and gradient differ", v, grad)?;
    scalar(OP, "grad_sq_total", grad_sq_total)?;
    let (bc1, bc2) = hp.bias_corrections()?;
    Ok(AdamPlan {
        n: numel(OP, grad)?,
        bc1,
        bc2,
    })
}

/// `ema_update`: the average and the parameter alike; returns the element count.
pub fn ema_update(ema: &[usize], param: &[usize]) -> Result<usize> {
    const OP: &str = "ema_update";
    same_shape(OP, "EMA and parameter differ", ema, param)?;
    numel(OP, ema)
}
