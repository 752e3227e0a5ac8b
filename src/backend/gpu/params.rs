//! The uniform parameter block of every WGSL kernel, declared once here with
//! the WGSL struct's field names, order and types (padding included, as
//! `_p0`, `_p1`, …): binding 0 of each kernel is one of these structs.
//!
//! `tests/shaders_validate.rs` reflects the WGSL with naga and checks, for
//! every kernel, that its struct has the same fields at the same offsets with
//! the same types and the same size (rounded as [`uniform_size`] rounds).
//!
//! Build a value with every meaningful field named and `..Default::default()`
//! for the padding only. WGSL `vec4<u32>` is `[u32; 4]` here; a signed or
//! wrapping quantity the kernel reads as `u32` is passed as its two's
//! complement (`v as u32`).

use bytemuck::{Pod, Zeroable};

/// One field of a parameter struct, as the reflection test compares it with
/// the WGSL: name, byte offset, and the Rust type as written (`u32`, `f32`,
/// `[u32; 4]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamField {
    pub name: &'static str,
    pub offset: usize,
    pub ty: &'static str,
}

/// A kernel's uniform block: plain old data uploaded byte for byte.
pub trait KernelParams: Pod {
    /// The Rust type's name, for messages.
    const NAME: &'static str;
    /// Every field in declaration order (which is the WGSL order).
    const FIELDS: &'static [ParamField];
}

/// Bytes of the uniform buffer that holds `size` bytes of parameters: at
/// least 16 and a multiple of 16, as WGSL lays out uniform structs.
pub const fn uniform_size(size: usize) -> usize {
    let size = if size < 16 { 16 } else { size };
    size.div_ceil(16) * 16
}

/// Declares parameter structs: `#[repr(C)]`, `Pod`, `Default` (all zero),
/// with their [`KernelParams`] field table.
macro_rules! params {
    ($(
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl KernelParams for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [ParamField] = &[$(
                ParamField {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    ty: stringify!($ty),
                }
            ),*];
        }
    )*};
}

params! {
    /// `matmul.wgsl` (`matmul_vec4`): C = A·B with A packed k-major.
    MatmulParams {
        /// Rows of A and C.
        m: u32,
        /// Columns of B and C.
        n: u32,
        /// Inner dimension.
        k: u32,
        /// M rounded up to 8: the row length of the packed A.
        m_pad: u32,
    }

    /// `matmul_transpose.wgsl`: A `[M, K]` → k-major `[K, m_pad]`.
    MatmulTransposeParams {
        /// Rows of A.
        m: u32,
        /// Columns of A.
        k: u32,
        /// M rounded up to 8.
        m_pad: u32,
        /// Padding.
        _p0: u32,
    }

    /// `matmul_any.wgsl`: C = A·B for any shapes.
    MatmulAnyParams {
        /// Rows of A and C.
        m: u32,
        /// Columns of B and C.
        n: u32,
        /// Inner dimension.
        k: u32,
        /// Padding.
        _pad: u32,
    }

    /// `conv2d.wgsl` (all four `conv2d_k*s*` entry points).
    Conv2dParams {
        /// Batch size B.
        batch: u32,
        /// Input channels.
        c_in: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Output channels.
        c_out: u32,
        /// Output channels rounded up to 8 (the packed weights' row length).
        c_out_pad: u32,
        /// Output height.
        h_out: u32,
        /// Output width.
        w_out: u32,
        /// Zero padding; read as i32 (two's complement when negative).
        padding: u32,
        /// ceil(Wo / 8): 8-wide output tiles per row.
        tiles_x: u32,
        /// 1 to add the bias.
        has_bias: u32,
        /// 1 to add `sample_bias[b, co]` (the fused epilogue).
        has_sample_bias: u32,
        /// 1 to add the residual (shaped like the output).
        has_residual: u32,
        /// 1 to multiply the sum by `scale` (0 leaves it as is, so a default
        /// value does not scale by zero).
        has_scale: u32,
        /// The epilogue's scale.
        scale: f32,
        /// Padding.
        _pad: u32,
    }

    /// `conv_weight_pack.wgsl`: `[Cout, Cin, K, K]` → `[Cin·K·K, c_out_pad]`.
    ConvWeightPackParams {
        /// Output channels.
        c_out: u32,
        /// Input channels.
        c_in: u32,
        /// K·K.
        kk: u32,
        /// Output channels rounded up to 8.
        c_out_pad: u32,
    }

    /// `perturb.wgsl`: x_t = μ·x₀ + σ·z per sample.
    PerturbParams {
        /// Elements per sample.
        d: u32,
        /// Samples.
        batch: u32,
        /// Padding.
        _p0: u32,
        /// Padding.
        _p1: u32,
    }

    /// `paired_step.wgsl`: one reverse step of the paired chains.
    PairedStepParams {
        /// Elements per sample.
        d: u32,
        /// Samples.
        batch: u32,
        /// 0: probability-flow ODE, 1: reverse SDE.
        sde: u32,
        /// Padding.
        _p0: u32,
    }

    /// `rng_fill.wgsl`: uniform or Gaussian Philox draws.
    RngFillParams {
        /// Elements.
        n: u32,
        /// 0: uniform, 1: Gaussian.
        normal: u32,
        /// Padding.
        _p0: u32,
        /// Padding.
        _p1: u32,
        /// Philox key: (seed lo, seed hi, stream lo, stream hi).
        key: [u32; 4],
    }

    /// `elementwise.wgsl` (axpby, mul, silu, silu_backward, add_bias, add_sample_bias).
    ElementwiseParams {
        /// Output elements.
        n: u32,
        /// Channels (add_bias).
        c: u32,
        /// Elements per (sample, channel) (add_bias, add_sample_bias).
        inner: u32,
        /// Padding.
        _p0: u32,
        /// axpby's α.
        alpha: f32,
        /// axpby's β.
        beta: f32,
        /// Padding.
        _p1: u32,
        /// Padding.
        _p2: u32,
    }

    /// `channels.wgsl` (concat_channels, slice_channels).
    ChannelsParams {
        /// Output elements.
        n: u32,
        /// concat: Ca·S; slice: output row length Cout·S.
        row_a: u32,
        /// concat: Cb·S; slice: input row length C·S.
        row_b: u32,
        /// slice: first channel's offset in the input row, c0·S.
        off: u32,
    }

    /// `resample.wgsl` (upsample2x, avgpool2x).
    ResampleParams {
        /// Output elements.
        n: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Padding.
        _p0: u32,
    }

    /// `fir.wgsl` (fir_up, fir_down).
    FirParams {
        /// Output elements.
        n: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Overall factor (1 for the forwards).
        scale: f32,
    }

    /// `reduce.wgsl` (reduce_rows, sum_batch).
    ReduceParams {
        /// reduce_rows: outputs; sum_batch: elements per sample D.
        rows: u32,
        /// Batch entries summed over.
        nb: u32,
        /// reduce_rows: contiguous elements per (batch entry, row).
        len: u32,
        /// reduce_rows: distance between batch entries.
        stride_b: u32,
    }

    /// `pair_distance.wgsl`: per-pixel distance between the halves of each pair.
    PairDistanceParams {
        /// Pairs N.
        n: u32,
        /// Channels.
        c: u32,
        /// Pixels per channel (H·W).
        s: u32,
        /// 1: divide by the pair's feature norms.
        relative: u32,
    }

    /// `group_norm.wgsl`: forward with per-group statistics.
    GroupNormParams {
        /// B·G workgroups of work.
        bg: u32,
        /// Groups G.
        groups: u32,
        /// Channels per group.
        cg: u32,
        /// Spatial elements per channel.
        s: u32,
        /// Variance epsilon.
        eps: f32,
        /// 0: y = x̂·γ + β; 1: y = SiLU(x̂·γ + β) ([`crate::backend::NormAct`]).
        act: u32,
        /// Padding.
        _p1: u32,
        /// Padding.
        _p2: u32,
    }

    /// `group_norm_backward.wgsl`: the input gradient.
    GroupNormBackwardParams {
        /// B·G.
        bg: u32,
        /// Groups G.
        groups: u32,
        /// Channels per group.
        cg: u32,
        /// Spatial elements per channel.
        s: u32,
    }

    /// `group_norm_param_grad.wgsl`: the γ and β gradients.
    GroupNormParamGradParams {
        /// Channels C (workgroups of work).
        c: u32,
        /// Batch size B.
        batch: u32,
        /// Channels per group.
        cg: u32,
        /// Spatial elements per channel.
        s: u32,
    }

    /// `dropout.wgsl`: a mask of 0 or `scale`.
    DropoutParams {
        /// Elements.
        n: u32,
        /// Drop probability.
        p: f32,
        /// Kept value, 1 / (1 − p).
        scale: f32,
        /// Padding.
        _p0: u32,
        /// Philox key: (seed lo, seed hi, stream lo, stream hi).
        key: [u32; 4],
    }

    /// `strided_pack.wgsl`: gathers a strided 3-D view into `[batch][rows][cols_pad]`.
    StridedPackParams {
        /// Batch entries.
        batch: u32,
        /// Rows per entry.
        rows: u32,
        /// Columns read per row.
        cols: u32,
        /// Columns written per row (zero past `cols`).
        cols_pad: u32,
        /// First element read (wrapping 32-bit arithmetic).
        base: u32,
        /// Batch stride in elements (two's complement when negative).
        s_batch: u32,
        /// Row stride in elements (two's complement when negative).
        s_row: u32,
        /// Column stride in elements (two's complement when negative).
        s_col: u32,
    }

    /// `bmm.wgsl`: batched C = A·B on packed operands.
    BmmParams {
        /// Rows of C.
        m: u32,
        /// Columns of C.
        n: u32,
        /// Inner dimension.
        k: u32,
        /// M padded, in vec4: the row length of the packed A.
        m4: u32,
        /// N padded, in vec4: the row length of the packed B.
        n4: u32,
        /// Batch stride of the packed A in vec4 (0: broadcast).
        a_batch4: u32,
        /// Batch stride of the packed B in vec4 (0: broadcast).
        b_batch4: u32,
        /// ceil(N / 8).
        n_blocks: u32,
        /// ceil(M / 8) · ceil(N / 8).
        blocks: u32,
        /// Padding.
        _p0: u32,
        /// Padding.
        _p1: u32,
        /// Padding.
        _p2: u32,
    }

    /// `conv2d_backward_input.wgsl`: dx of a stride-2 conv.
    Conv2dBackwardInputParams {
        /// Batch size B.
        batch: u32,
        /// Cout: channels of dy.
        c_dy: u32,
        /// Height of dy.
        ho: u32,
        /// Width of dy.
        wo: u32,
        /// Cin: channels of dx.
        c_x: u32,
        /// Cin rounded up to 8.
        c_x_pad: u32,
        /// Height of dx.
        h: u32,
        /// Width of dx.
        w: u32,
        /// The forward conv's padding.
        padding: u32,
        /// ceil((W + P) / 8).
        tiles_x: u32,
        /// Padding.
        _p0: u32,
        /// Padding.
        _p1: u32,
    }

    /// `conv2d_backward_weight.wgsl`: dw per tap, the reduction split over rows.
    Conv2dBackwardWeightParams {
        /// Input channels.
        c_in: u32,
        /// Output channels.
        c_out: u32,
        /// Kernel size K.
        k: u32,
        /// K·K.
        kk: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Output height.
        ho: u32,
        /// Output width.
        wo: u32,
        /// Stride.
        stride: u32,
        /// Zero padding.
        padding: u32,
        /// Cin padded, in vec4.
        cip4: u32,
        /// Cout padded, in vec4.
        cop4: u32,
        /// ceil(Cin / 8).
        nci8: u32,
        /// ceil(Cout / 8).
        nco8: u32,
        /// B · Ho.
        rows: u32,
        /// Rows each split of the reduction covers.
        rows_per_split: u32,
    }

    /// `conv2d_backward_reduce.wgsl`: sums the weight-gradient splits.
    Conv2dBackwardReduceParams {
        /// Weight-gradient elements.
        n: u32,
        /// Splits to add.
        splits: u32,
        /// Padding.
        _p0: u32,
        /// Padding.
        _p1: u32,
    }

    /// `conv2d_backward_bias.wgsl`: db = Σ over batch and plane of dy.
    Conv2dBackwardBiasParams {
        /// Batch size B.
        batch: u32,
        /// Output channels.
        c_out: u32,
        /// Ho · Wo.
        plane: u32,
        /// Padding.
        _p0: u32,
    }

    /// `softmax.wgsl` and `softmax_backward.wgsl` (all four entry points):
    /// rows of the last axis.
    SoftmaxParams {
        /// Rows.
        rows: u32,
        /// Row length.
        len: u32,
        /// Padding.
        _p0: u32,
        /// Padding.
        _p1: u32,
    }

    /// `sum_squares.wgsl` (sum_squares_partial, sum_partials).
    SumSquaresParams {
        /// sum_squares_partial: elements of x; sum_partials: partials to add.
        n: u32,
        /// sum_partials: 1 to also add acc_in[0].
        accumulate: u32,
        /// sum_squares_partial: where its partials start in the output.
        offset: u32,
        /// Padding.
        _p1: u32,
    }

    /// `dsm_loss.wgsl` (dsm_loss_partial): the loss's first level and its gradient.
    DsmLossParams {
        /// B·D.
        n: u32,
        /// Elements per sample.
        d: u32,
        /// Residual = sign·out + z.
        sign: f32,
        /// Padding.
        _p0: u32,
    }

    /// `optim.wgsl` (adam_step).
    AdamParams {
        /// Elements.
        n: u32,
        /// 1: clip the gradient to `max_norm`.
        clip: u32,
        /// Padding.
        _p0: u32,
        /// Padding.
        _p1: u32,
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// 1 − beta1^t.
        bc1: f32,
        /// 1 − beta2^t.
        bc2: f32,
        /// Gradient-norm clip threshold.
        max_norm: f32,
        /// adam_ema_step: the weight kept on the old average.
        ema_rate: f32,
    }

    /// `ema.wgsl` (ema_update): ema = rate·ema + (1 − rate)·param.
    EmaParams {
        /// Elements.
        n: u32,
        /// Padding.
        _p0: u32,
        /// Decay: the weight kept on the old average.
        rate: f32,
        /// Padding.
        _p1: u32,
    }
}
