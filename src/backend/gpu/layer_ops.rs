//! [`LayerOps`] on the GPU: every op a WGSL kernel (`shaders/elementwise.wgsl`,
//! `channels.wgsl`, `resample.wgsl`, `fir.wgsl`, `reduce.wgsl`, `group_norm*.wgsl`,
//! `dropout.wgsl`). Pointwise and resampling kernels run one invocation per
//! output element on [`grid_1d`]; reductions run one 64-invocation workgroup
//! per output (or per normalisation group) with a tree reduction in workgroup
//! memory, since WGSL has no float atomics.
//!
//! Kernels index with u32, so every tensor an op touches must have fewer than
//! 2³² elements (else `Error::Shape`); outputs are always fresh buffers, so an
//! op may read the same tensor through several bindings.

use std::sync::Arc;

use super::context::Bind;
use super::kernels::{self, Kernel};
use super::params::*;
use super::{grid_1d, rng_key, u32_of, GpuBackend, GpuTensor};
use crate::backend::nn_ops::{GroupNormGrads, GroupNormOut, LayerOps};
use crate::backend::numel;
use crate::backend::shape_check::{channel_dims, group_size, image_dims, pair_dims, same_shape};
use crate::error::{Error, Result};
use crate::rng::RngStream;

/// `[B, C, 2H, 2W]` for `[B, C, H, W]`.
fn doubled(op: &'static str, shape: &[usize]) -> Result<[usize; 4]> {
    let big = || Error::shape(op, format!("{shape:?} doubled is too large"));
    let out = [
        shape[0],
        shape[1],
        shape[2].checked_mul(2).ok_or_else(big)?,
        shape[3].checked_mul(2).ok_or_else(big)?,
    ];
    numel(op, &out)?;
    Ok(out)
}

fn even_dims(op: &'static str, shape: &[usize], h: usize, w: usize) -> Result<()> {
    if !h.is_multiple_of(2) || !w.is_multiple_of(2) {
        return Err(Error::shape(
            op,
            format!("{shape:?}: height and width must be even"),
        ));
    }
    Ok(())
}

/// Element count of `t` as the kernels index it.
fn elems(op: &'static str, t: &GpuTensor) -> Result<u32> {
    u32_of(op, "elements", t.numel())
}

/// `resample.wgsl`'s parameters for `n` outputs from `h × w` planes.
fn plane(n: u32, h: u32, w: u32) -> ResampleParams {
    ResampleParams {
        n,
        h,
        w,
        ..Default::default()
    }
}

/// `fir.wgsl`'s parameters, the result scaled by `scale`.
fn fir(scale: f32) -> impl FnOnce(u32, u32, u32) -> FirParams {
    move |n, h, w| FirParams { n, h, w, scale }
}

impl GpuBackend {
    fn max_groups(&self) -> u32 {
        self.ctx.limits.max_compute_workgroups_per_dimension
    }

    /// `threads` invocations of a 1-D kernel (64 per workgroup).
    fn launch_1d<P: KernelParams>(
        &self,
        kernel: Kernel<P>,
        params: &P,
        binds: &[Bind],
        threads: u64,
    ) -> Result<()> {
        self.ctx.dispatch(
            kernel,
            &[],
            params,
            binds,
            grid_1d(threads, self.max_groups()),
        )
    }

    /// One workgroup per item (the kernels linearise x and y with num_workgroups).
    fn launch_per_workgroup<P: KernelParams>(
        &self,
        op: &'static str,
        kernel: Kernel<P>,
        params: &P,
        binds: &[Bind],
        items: usize,
    ) -> Result<()> {
        let max = self.max_groups() as u64;
        let n = u32_of(op, "workgroups", items)? as u64;
        let grid = if n <= max {
            (n as u32, 1, 1)
        } else {
            let y = n.div_ceil(max);
            if y > max {
                return Err(Error::shape(
                    op,
                    format!("{items} workgroups are more than the device's grid holds"),
                ));
            }
            (max as u32, y as u32, 1)
        };
        self.ctx.dispatch(kernel, &[], params, binds, grid)
    }

    /// A pointwise kernel of `elementwise.wgsl` over `a` (and `b`), output shaped like `a`.
    #[allow(clippy::too_many_arguments)]
    fn elementwise(
        &self,
        op: &'static str,
        kernel: Kernel<ElementwiseParams>,
        a: &GpuTensor,
        b: Option<&GpuTensor>,
        c: usize,
        inner: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<GpuTensor> {
        let n = elems(op, a)?;
        if let Some(b) = b {
            elems(op, b)?;
        }
        let out = self.tensor(op, &a.shape)?;
        let params = ElementwiseParams {
            n,
            c: u32_of(op, "channels", c)?,
            inner: u32_of(op, "elements per channel", inner)?,
            alpha,
            beta,
            ..Default::default()
        };
        let mut binds = vec![Bind::Storage(&out.buf), Bind::Storage(&a.buf)];
        if let Some(b) = b {
            binds.push(Bind::Storage(&b.buf));
        }
        self.launch_1d(kernel, &params, &binds, n as u64)?;
        Ok(out)
    }

    /// A kernel of `resample.wgsl` / `fir.wgsl`: planes of `h × w` → `out_shape`,
    /// its parameters made by `params(n, h, w)` (output elements, input height and width).
    fn resample<P: KernelParams>(
        &self,
        op: &'static str,
        kernel: Kernel<P>,
        x: &GpuTensor,
        out_shape: &[usize],
        (h, w): (usize, usize),
        params: impl FnOnce(u32, u32, u32) -> P,
    ) -> Result<GpuTensor> {
        elems(op, x)?;
        let out = self.tensor(op, out_shape)?;
        let n = elems(op, &out)?;
        let params = params(n, u32_of(op, "height", h)?, u32_of(op, "width", w)?);
        self.launch_1d(
            kernel,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            n as u64,
        )?;
        Ok(out)
    }

    /// `out[r] = Σ_{b < nb} Σ_{s < len} x[b·stride_b + r·len + s]` (`reduce.wgsl`).
    fn reduce_rows(
        &self,
        op: &'static str,
        x: &GpuTensor,
        out_shape: &[usize],
        nb: usize,
        len: usize,
        stride_b: usize,
    ) -> Result<GpuTensor> {
        elems(op, x)?;
        let out = self.tensor(op, out_shape)?;
        let rows = out.numel();
        let params = ReduceParams {
            rows: u32_of(op, "rows", rows)?,
            nb: u32_of(op, "batch", nb)?,
            len: u32_of(op, "row length", len)?,
            stride_b: u32_of(op, "batch stride", stride_b)?,
        };
        self.launch_per_workgroup(
            op,
            kernels::REDUCE_ROWS,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            rows,
        )?;
        Ok(out)
    }

    /// Channels `c0 .. c0 + cn` of `x: [B, C, …]` (`channels.wgsl`).
    fn slice_channels(
        &self,
        op: &'static str,
        x: &GpuTensor,
        (b, c, s): (usize, usize, usize),
        c0: usize,
        cn: usize,
    ) -> Result<GpuTensor> {
        let mut shape = x.shape.clone();
        shape[1] = cn;
        let out = self.tensor(op, &shape)?;
        let n = elems(op, &out)?;
        if b == 0 || cn * s == 0 {
            return Ok(out);
        }
        let params = ChannelsParams {
            n,
            row_a: u32_of(op, "output row", cn * s)?,
            row_b: u32_of(op, "input row", c * s)?,
            off: u32_of(op, "channel offset", c0 * s)?,
        };
        self.launch_1d(
            kernels::SLICE_CHANNELS,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            n as u64,
        )?;
        Ok(out)
    }
}

impl LayerOps for GpuBackend {
    fn reshape(&self, x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        const OP: &str = "reshape";
        let n = numel(OP, shape)?;
        if n != x.numel() {
            return Err(Error::shape(
                OP,
                format!(
                    "{:?} ({} elements) cannot become {shape:?} ({n} elements)",
                    x.shape,
                    x.numel()
                ),
            ));
        }
        Ok(GpuTensor {
            buf: Arc::clone(&x.buf),
            shape: shape.to_vec(),
        })
    }

    fn axpby(&self, alpha: f32, a: &GpuTensor, beta: f32, b: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "axpby";
        same_shape(OP, "a and b", &a.shape, &b.shape)?;
        self.elementwise(OP, kernels::AXPBY, a, Some(b), 0, 0, alpha, beta)
    }

    fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "mul";
        same_shape(OP, "a and b", &a.shape, &b.shape)?;
        self.elementwise(OP, kernels::MUL, a, Some(b), 0, 0, 0.0, 0.0)
    }

    fn silu(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.elementwise("silu", kernels::SILU, x, None, 0, 0, 0.0, 0.0)
    }

    fn silu_backward(&self, x: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "silu_backward";
        same_shape(OP, "dy must have x's shape", &dy.shape, &x.shape)?;
        self.elementwise(OP, kernels::SILU_BACKWARD, x, Some(dy), 0, 0, 0.0, 0.0)
    }

    fn group_norm(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        groups: usize,
        eps: f32,
    ) -> Result<GroupNormOut<GpuTensor>> {
        const OP: &str = "group_norm";
        let (b, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "gamma must be [C]", &gamma.shape, &[c])?;
        same_shape(OP, "beta must be [C]", &beta.shape, &[c])?;
        let cg = group_size(OP, c, groups)?;
        elems(OP, x)?;
        let y = self.tensor(OP, &x.shape)?;
        let stats = self.tensor(OP, &[b, groups, 2])?;
        let bg = elems(OP, &stats)? / 2;
        let params = GroupNormParams {
            bg,
            groups: u32_of(OP, "groups", groups)?,
            cg: u32_of(OP, "channels per group", cg)?,
            s: u32_of(OP, "elements per channel", s)?,
            eps,
            ..Default::default()
        };
        self.launch_per_workgroup(
            OP,
            kernels::GROUP_NORM,
            &params,
            &[
                Bind::Storage(&y.buf),
                Bind::Storage(&stats.buf),
                Bind::Storage(&x.buf),
                Bind::Storage(&gamma.buf),
                Bind::Storage(&beta.buf),
            ],
            bg as usize,
        )?;
        Ok(GroupNormOut { y, stats })
    }

    fn group_norm_backward(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        stats: &GpuTensor,
        dy: &GpuTensor,
        groups: usize,
    ) -> Result<GroupNormGrads<GpuTensor>> {
        const OP: &str = "group_norm_backward";
        let (b, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "gamma must be [C]", &gamma.shape, &[c])?;
        same_shape(OP, "dy must have x's shape", &dy.shape, &x.shape)?;
        let cg = group_size(OP, c, groups)?;
        same_shape(
            OP,
            "stats must be [B, groups, 2]",
            &stats.shape,
            &[b, groups, 2],
        )?;
        elems(OP, x)?;
        let bg = elems(OP, stats)? / 2;
        let dx = self.tensor(OP, &x.shape)?;
        let dgamma = self.tensor(OP, &[c])?;
        let dbeta = self.tensor(OP, &[c])?;
        let (groups32, cg32, s32) = (
            u32_of(OP, "groups", groups)?,
            u32_of(OP, "channels per group", cg)?,
            u32_of(OP, "elements per channel", s)?,
        );
        let params = GroupNormBackwardParams {
            bg,
            groups: groups32,
            cg: cg32,
            s: s32,
        };
        self.launch_per_workgroup(
            OP,
            kernels::GROUP_NORM_BACKWARD_DX,
            &params,
            &[
                Bind::Storage(&dx.buf),
                Bind::Storage(&x.buf),
                Bind::Storage(&gamma.buf),
                Bind::Storage(&stats.buf),
                Bind::Storage(&dy.buf),
            ],
            bg as usize,
        )?;
        let params = GroupNormParamGradParams {
            c: u32_of(OP, "channels", c)?,
            batch: u32_of(OP, "batch", b)?,
            cg: cg32,
            s: s32,
        };
        self.launch_per_workgroup(
            OP,
            kernels::GROUP_NORM_PARAM_GRAD,
            &params,
            &[
                Bind::Storage(&dgamma.buf),
                Bind::Storage(&dbeta.buf),
                Bind::Storage(&x.buf),
                Bind::Storage(&stats.buf),
                Bind::Storage(&dy.buf),
            ],
            c,
        )?;
        Ok(GroupNormGrads { dx, dgamma, dbeta })
    }

    fn add_bias(&self, x: &GpuTensor, bias: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "add_bias";
        let (_, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "bias must be [C]", &bias.shape, &[c])?;
        self.elementwise(OP, kernels::ADD_BIAS, x, Some(bias), c, s, 0.0, 0.0)
    }

    fn bias_grad(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "bias_grad";
        let (b, c, s) = channel_dims(OP, &dy.shape)?;
        self.reduce_rows(OP, dy, &[c], b, s, c * s)
    }

    fn add_sample_bias(&self, x: &GpuTensor, t: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "add_sample_bias";
        let (b, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "t must be [B, C]", &t.shape, &[b, c])?;
        self.elementwise(OP, kernels::ADD_SAMPLE_BIAS, x, Some(t), c, s, 0.0, 0.0)
    }

    fn sample_bias_grad(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "sample_bias_grad";
        let (b, c, s) = channel_dims(OP, &dy.shape)?;
        self.reduce_rows(OP, dy, &[b, c], 1, s, 0)
    }

    fn upsample2x(&self, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "upsample2x";
        let (_, h, w) = image_dims(OP, &x.shape)?;
        let out = doubled(OP, &x.shape)?;
        self.resample(OP, kernels::UPSAMPLE2X, x, &out, (h, w), plane)
    }

    fn avgpool2x(&self, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "avgpool2x";
        let (_, h, w) = image_dims(OP, &x.shape)?;
        even_dims(OP, &x.shape, h, w)?;
        let out = [x.shape[0], x.shape[1], h / 2, w / 2];
        self.resample(OP, kernels::AVGPOOL2X, x, &out, (h, w), plane)
    }

    fn fir_up(&self, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "fir_up";
        let (_, h, w) = image_dims(OP, &x.shape)?;
        let out = doubled(OP, &x.shape)?;
        self.resample(OP, kernels::FIR_UP, x, &out, (h, w), fir(1.0))
    }

    fn fir_down(&self, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "fir_down";
        let (_, h, w) = image_dims(OP, &x.shape)?;
        even_dims(OP, &x.shape, h, w)?;
        let out = [x.shape[0], x.shape[1], h / 2, w / 2];
        self.resample(OP, kernels::FIR_DOWN, x, &out, (h, w), fir(1.0))
    }

    /// fir_up's adjoint is 4·fir_down (its per-axis taps are twice fir_down's).
    fn fir_up_backward(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "fir_up_backward";
        let (_, h, w) = image_dims(OP, &dy.shape)?;
        even_dims(OP, &dy.shape, h, w)?;
        let out = [dy.shape[0], dy.shape[1], h / 2, w / 2];
        self.resample(OP, kernels::FIR_DOWN, dy, &out, (h, w), fir(4.0))
    }

    /// fir_down's adjoint is fir_up/4.
    fn fir_down_backward(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "fir_down_backward";
        let (_, h, w) = image_dims(OP, &dy.shape)?;
        let out = doubled(OP, &dy.shape)?;
        self.resample(OP, kernels::FIR_UP, dy, &out, (h, w), fir(0.25))
    }

    fn concat_channels(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "concat_channels";
        let (ba, ca, sa) = channel_dims(OP, &a.shape)?;
        channel_dims(OP, &b.shape)?;
        if b.shape.len() != a.shape.len() || b.shape[0] != ba || b.shape[2..] != a.shape[2..] {
            return Err(Error::shape(
                OP,
                format!(
                    "{:?} and {:?} differ outside the channel axis",
                    a.shape, b.shape
                ),
            ));
        }
        let cb = b.shape[1];
        let mut shape = a.shape.clone();
        shape[1] = ca
            .checked_add(cb)
            .ok_or_else(|| Error::shape(OP, "too many channels"))?;
        elems(OP, a)?;
        elems(OP, b)?;
        let out = self.tensor(OP, &shape)?;
        let n = elems(OP, &out)?;
        if n == 0 {
            return Ok(out);
        }
        let params = ChannelsParams {
            n,
            row_a: u32_of(OP, "first row", ca * sa)?,
            row_b: u32_of(OP, "second row", cb * sa)?,
            off: 0,
        };
        self.launch_1d(
            kernels::CONCAT_CHANNELS,
            &params,
            &[
                Bind::Storage(&out.buf),
                Bind::Storage(&a.buf),
                Bind::Storage(&b.buf),
            ],
            n as u64,
        )?;
        Ok(out)
    }

    fn split_channels(&self, x: &GpuTensor, ca: usize) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "split_channels";
        let dims = channel_dims(OP, &x.shape)?;
        let c = dims.1;
        if ca > c {
            return Err(Error::shape(
                OP,
                format!("cannot take {ca} channels from {:?}", x.shape),
            ));
        }
        elems(OP, x)?;
        Ok((
            self.slice_channels(OP, x, dims, 0, ca)?,
            self.slice_channels(OP, x, dims, ca, c - ca)?,
        ))
    }

    fn dropout_mask(&self, shape: &[usize], p: f32, rng: RngStream) -> Result<GpuTensor> {
        const OP: &str = "dropout_mask";
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Invalid(format!(
                "dropout probability {p} must lie in [0, 1)"
            )));
        }
        let out = self.tensor(OP, shape)?;
        let n = elems(OP, &out)?;
        // The same f32 expression as the CPU backend, so kept values match bit for bit.
        let keep: f32 = 1.0 / (1.0 - p);
        let params = DropoutParams {
            n,
            p,
            scale: keep,
            key: rng_key(rng),
            ..Default::default()
        };
        self.launch_1d(
            kernels::DROPOUT_MASK,
            &params,
            &[Bind::Storage(&out.buf)],
            (n as u64).div_ceil(4),
        )?;
        Ok(out)
    }

    fn sum_batch(&self, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "sum_batch";
        let Some((&b, rest)) = x.shape.split_first() else {
            return Err(Error::shape(OP, "a scalar has no batch axis"));
        };
        elems(OP, x)?;
        let out = self.tensor(OP, rest)?;
        let d = elems(OP, &out)?;
        let params = ReduceParams {
            rows: d,
            nb: u32_of(OP, "batch", b)?,
            ..Default::default()
        };
        self.launch_1d(
            kernels::SUM_BATCH,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            d as u64,
        )?;
        Ok(out)
    }

    fn pair_distance(&self, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "pair_distance";
        let (n, c, s) = pair_dims(OP, &x.shape)?;
        let out = self.tensor(OP, &[n, x.shape[2], x.shape[3]])?;
        elems(OP, x)?;
        let params = PairDistanceParams {
            n: u32_of(OP, "pairs", n)?,
            c: u32_of(OP, "channels", c)?,
            s: u32_of(OP, "pixels", s)?,
            ..Default::default()
        };
        self.launch_1d(
            kernels::PAIR_DISTANCE,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            (n * s) as u64,
        )?;
        Ok(out)
    }
}
