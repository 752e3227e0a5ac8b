//! [`ModuleKernels`] on the GPU: conv2d (`conv.rs`), GroupNorm
//! (`group_norm*.wgsl`), softmax (`softmax*.wgsl`), biases
//! (`elementwise.wgsl`, `reduce.wgsl`), resampling (`resample.wgsl`,
//! `fir.wgsl`) and dropout (`dropout.wgsl`). Pointwise and resampling
//! kernels run one invocation per output element on `grid_1d`; reductions
//! run one 64-invocation workgroup per output (or per normalisation group)
//! with a tree reduction in workgroup memory, since WGSL has no float atomics.
//!
//! Kernels index with u32, so every tensor an op touches must have fewer than
//! 2³² elements (else `Error::Shape`); outputs are always fresh buffers.

use super::context::Bind;
use super::kernels::{self, Kernel};
use super::launch::{elems, grid_1d, grid_rows, rng_key, u32_of};
use super::params::*;
use super::{GpuBackend, GpuTensor};
use crate::backend::plan::{
    self, ChannelDims, ConvGeometry, DropoutPlan, GroupNormPlan, NormAct, Resample, ResamplePlan,
    RowsPlan,
};
use crate::backend::{Conv2dGrads, ConvEpilogue, GroupNormGrads, GroupNormOut, ModuleKernels};
use crate::error::Result;
use crate::rng::RngStream;

/// Rows up to this long run one invocation per row on every device.
const SHORT_ROW: usize = 128;

impl ModuleKernels for GpuBackend {
    fn conv2d_planned(
        &self,
        g: &ConvGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        self.conv2d_forward(g, x, w, bias)
    }

    fn conv2d_backward_planned(
        &self,
        g: &ConvGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<Conv2dGrads<GpuTensor>> {
        self.conv2d_grads(g, x, w, dy)
    }

    fn conv2d_fused_planned(
        &self,
        g: &ConvGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        e: ConvEpilogue<'_, GpuTensor>,
    ) -> Result<GpuTensor> {
        let scale = (e.scale != 1.0).then_some(e.scale);
        self.conv2d_forward_fused(g, x, w, Some(e.bias), e.sample_bias, e.residual, scale)
    }

    fn group_norm_planned(
        &self,
        p: &GroupNormPlan,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f32,
    ) -> Result<GroupNormOut<GpuTensor>> {
        const OP: &str = "group_norm";
        elems(OP, x)?;
        let y = self.tensor_output(OP, &x.shape)?;
        let stats = self.tensor_output(OP, &p.stats_shape())?;
        let bg = elems(OP, &stats)? / 2;
        let params = GroupNormParams {
            bg,
            groups: u32_of(OP, "groups", p.groups)?,
            cg: u32_of(OP, "channels per group", p.cg)?,
            s: u32_of(OP, "elements per channel", p.s)?,
            eps,
            act: match p.act {
                NormAct::Identity => 0,
                NormAct::Silu => 1,
            },
            ..Default::default()
        };
        // Channel planes of whole vec4: the kernel that takes 4 at a time.
        let vec4 = p.s.is_multiple_of(4);
        self.launch_per_workgroup(
            OP,
            if vec4 {
                kernels::GROUP_NORM_VEC4
            } else {
                kernels::GROUP_NORM
            },
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

    fn group_norm_backward_planned(
        &self,
        p: &GroupNormPlan,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: Option<&GpuTensor>,
        stats: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<GroupNormGrads<GpuTensor>> {
        const OP: &str = "group_norm_backward";
        elems(OP, x)?;
        let bg = elems(OP, stats)? / 2;
        // Fused SiLU: the gradient at the norm's output first, then the plain backward.
        let dh;
        let dy = match beta {
            Some(beta) => {
                dh = self.group_norm_silu_grad(p, x, gamma, beta, stats, dy, bg)?;
                &dh
            }
            None => dy,
        };
        let dx = self.tensor_output(OP, &x.shape)?;
        let dgamma = self.tensor_output(OP, &[p.c])?;
        let dbeta = self.tensor_output(OP, &[p.c])?;
        let (groups, cg, s) = (
            u32_of(OP, "groups", p.groups)?,
            u32_of(OP, "channels per group", p.cg)?,
            u32_of(OP, "elements per channel", p.s)?,
        );
        let params = GroupNormBackwardParams { bg, groups, cg, s };
        // Channel planes of whole vec4: the kernels that take 4 at a time.
        let vec4 = p.s.is_multiple_of(4);
        self.launch_per_workgroup(
            OP,
            if vec4 {
                kernels::GROUP_NORM_BACKWARD_DX_VEC4
            } else {
                kernels::GROUP_NORM_BACKWARD_DX
            },
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
            c: u32_of(OP, "channels", p.c)?,
            batch: u32_of(OP, "batch", p.batch)?,
            cg,
            s,
        };
        self.launch_per_workgroup(
            OP,
            if vec4 {
                kernels::GROUP_NORM_PARAM_GRAD_VEC4
            } else {
                kernels::GROUP_NORM_PARAM_GRAD
            },
            &params,
            &[
                Bind::Storage(&dgamma.buf),
                Bind::Storage(&dbeta.buf),
                Bind::Storage(&x.buf),
                Bind::Storage(&stats.buf),
                Bind::Storage(&dy.buf),
            ],
            p.c,
        )?;
        Ok(GroupNormGrads { dx, dgamma, dbeta })
    }

    fn softmax_planned(&self, p: &RowsPlan, x: &GpuTensor) -> Result<GpuTensor> {
        self.softmax_rows(p, x, self.rows_per_workgroup(p.len))
    }

    fn softmax_backward_planned(
        &self,
        p: &RowsPlan,
        y: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<GpuTensor> {
        self.softmax_backward_rows(p, y, dy, self.rows_per_workgroup(p.len))
    }

    fn add_bias_planned(
        &self,
        p: &ChannelDims,
        x: &GpuTensor,
        bias: &GpuTensor,
    ) -> Result<GpuTensor> {
        self.broadcast_add("add_bias", kernels::ADD_BIAS, p, x, bias)
    }

    fn bias_grad_planned(&self, p: &ChannelDims, dy: &GpuTensor) -> Result<GpuTensor> {
        let &ChannelDims { batch, c, s } = p;
        self.reduce_rows("bias_grad", dy, &[c], batch, s, c * s)
    }

    fn add_sample_bias_planned(
        &self,
        p: &ChannelDims,
        x: &GpuTensor,
        t: &GpuTensor,
    ) -> Result<GpuTensor> {
        self.broadcast_add("add_sample_bias", kernels::ADD_SAMPLE_BIAS, p, x, t)
    }

    fn sample_bias_grad_planned(&self, p: &ChannelDims, dy: &GpuTensor) -> Result<GpuTensor> {
        self.reduce_rows("sample_bias_grad", dy, &[p.batch, p.c], 1, p.s, 0)
    }

    fn resample_planned(&self, p: &ResamplePlan, x: &GpuTensor) -> Result<GpuTensor> {
        let op = p.op.name();
        elems(op, x)?;
        let out = self.tensor_output(op, &p.out)?;
        let n = elems(op, &out)?;
        let (h, w) = (u32_of(op, "height", p.h)?, u32_of(op, "width", p.w)?);
        let binds = [Bind::Storage(&out.buf), Bind::Storage(&x.buf)];
        let plane = ResampleParams {
            n,
            h,
            w,
            ..Default::default()
        };
        // fir_up's adjoint is 4·fir_down (its per-axis taps are twice
        // fir_down's); fir_down's adjoint is fir_up/4.
        let fir = |scale| FirParams { n, h, w, scale };
        let (n, binds) = (n as u64, &binds[..]);
        match p.op {
            // Rows of whole vec4 (the output's too): 16 or 4 outputs per invocation.
            Resample::Upsample2x if w.is_multiple_of(4) => {
                self.launch_1d(kernels::UPSAMPLE2X_VEC4, &plane, binds, n / 16)
            }
            Resample::Avgpool2x if w.is_multiple_of(8) => {
                self.launch_1d(kernels::AVGPOOL2X_VEC4, &plane, binds, n / 4)
            }
            Resample::Upsample2x => self.launch_1d(kernels::UPSAMPLE2X, &plane, binds, n),
            Resample::Avgpool2x => self.launch_1d(kernels::AVGPOOL2X, &plane, binds, n),
            Resample::FirUp => self.launch_1d(kernels::FIR_UP, &fir(1.0), binds, n),
            Resample::FirDown => self.launch_1d(kernels::FIR_DOWN, &fir(1.0), binds, n),
            Resample::FirUpBackward => self.launch_1d(kernels::FIR_DOWN, &fir(4.0), binds, n),
            Resample::FirDownBackward => self.launch_1d(kernels::FIR_UP, &fir(0.25), binds, n),
        }?;
        Ok(out)
    }

    fn dropout_mask_planned(&self, p: &DropoutPlan, rng: RngStream) -> Result<GpuTensor> {
        const OP: &str = "dropout_mask";
        let out = self.tensor_output(OP, &p.shape)?;
        let n = elems(OP, &out)?;
        let params = DropoutParams {
            n,
            p: p.p,
            scale: p.keep,
            key: rng_key(rng),
            ..Default::default()
        };
        // Four values per invocation (one Philox block).
        self.launch_1d(
            kernels::DROPOUT_MASK,
            &params,
            &[Bind::Storage(&out.buf)],
            (n as u64).div_ceil(4),
        )?;
        Ok(out)
    }
}

impl GpuBackend {
    /// dy·silu'(x̂·γ + β) for [`NormAct::Silu`]'s backward (`group_norm.wgsl`).
    #[allow(clippy::too_many_arguments)]
    fn group_norm_silu_grad(
        &self,
        p: &GroupNormPlan,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        stats: &GpuTensor,
        dy: &GpuTensor,
        bg: u32,
    ) -> Result<GpuTensor> {
        const OP: &str = "group_norm_silu_backward";
        let out = self.tensor_output(OP, &x.shape)?;
        let params = GroupNormParams {
            bg,
            groups: u32_of(OP, "groups", p.groups)?,
            cg: u32_of(OP, "channels per group", p.cg)?,
            s: u32_of(OP, "elements per channel", p.s)?,
            ..Default::default()
        };
        let (kernel, threads) = if p.s.is_multiple_of(4) {
            (kernels::GROUP_NORM_SILU_GRAD_VEC4, x.numel() / 4)
        } else {
            (kernels::GROUP_NORM_SILU_GRAD, x.numel())
        };
        self.launch_1d(
            kernel,
            &params,
            &[
                Bind::Storage(&out.buf),
                Bind::Storage(&stats.buf),
                Bind::Storage(&x.buf),
                Bind::Storage(&gamma.buf),
                Bind::Storage(&beta.buf),
                Bind::Storage(&dy.buf),
            ],
            threads as u64,
        )?;
        Ok(out)
    }

    /// `x: [B, C, S] + v[…]` by a kernel of `elementwise.wgsl` that indexes
    /// `v` from the element's (sample, channel).
    fn broadcast_add(
        &self,
        op: &'static str,
        kernel: Kernel<ElementwiseParams>,
        p: &ChannelDims,
        x: &GpuTensor,
        v: &GpuTensor,
    ) -> Result<GpuTensor> {
        let n = elems(op, x)?;
        let out = self.tensor_output(op, &x.shape)?;
        let params = ElementwiseParams {
            n,
            c: u32_of(op, "channels", p.c)?,
            inner: u32_of(op, "elements per channel", p.s)?,
            ..Default::default()
        };
        self.launch_1d(
            kernel,
            &params,
            &[
                Bind::Storage(&out.buf),
                Bind::Storage(&x.buf),
                Bind::Storage(&v.buf),
            ],
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
        let out = self.tensor_output(op, out_shape)?;
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

    /// Whether the row kernels (softmax and its backward) give each row a
    /// workgroup: for long rows on GPUs. Short rows, and every row on a
    /// CPU-emulated device (lavapipe: barriers are costly there, and a few
    /// threads are busy anyway), get one invocation each.
    fn rows_per_workgroup(&self, len: usize) -> bool {
        self.ctx.info.device_type != wgpu::DeviceType::Cpu && len > SHORT_ROW
    }

    /// Records a row kernel over the plan's rows.
    fn dispatch_rows(
        &self,
        per_workgroup: bool,
        kernels: [Kernel<SoftmaxParams>; 2],
        p: &RowsPlan,
        binds: &[Bind],
    ) -> Result<()> {
        let op = kernels[0].info.entry;
        let max = self.max_groups();
        let params = SoftmaxParams {
            rows: u32_of(op, "rows", p.rows)?,
            len: u32_of(op, "row length", p.len)?,
            ..Default::default()
        };
        let (kernel, groups) = if per_workgroup {
            (kernels[0], grid_rows(p.rows, max))
        } else {
            (kernels[1], grid_1d(p.rows as u64, max))
        };
        self.ctx.dispatch(kernel, &[], &params, binds, groups)
    }

    fn softmax_rows(&self, p: &RowsPlan, x: &GpuTensor, per_workgroup: bool) -> Result<GpuTensor> {
        const OP: &str = "softmax";
        u32_of(OP, "elements", p.n)?;
        let y = self.tensor_output(OP, &x.shape)?;
        if p.n == 0 {
            return Ok(y);
        }
        self.dispatch_rows(
            per_workgroup,
            [kernels::SOFTMAX, kernels::SOFTMAX_ROW],
            p,
            &[Bind::Storage(&x.buf), Bind::Storage(&y.buf)],
        )?;
        Ok(y)
    }

    fn softmax_backward_rows(
        &self,
        p: &RowsPlan,
        y: &GpuTensor,
        dy: &GpuTensor,
        per_workgroup: bool,
    ) -> Result<GpuTensor> {
        const OP: &str = "softmax_backward";
        u32_of(OP, "elements", p.n)?;
        let dx = self.tensor_output(OP, &y.shape)?;
        if p.n == 0 {
            return Ok(dx);
        }
        self.dispatch_rows(
            per_workgroup,
            [kernels::SOFTMAX_BACKWARD, kernels::SOFTMAX_BACKWARD_ROW],
            p,
            &[
                Bind::Storage(&y.buf),
                Bind::Storage(&dy.buf),
                Bind::Storage(&dx.buf),
            ],
        )?;
        Ok(dx)
    }

    /// [`ModuleOps::softmax`](crate::backend::ModuleOps::softmax) with the row
    /// mapping chosen by the caller: one workgroup per row, or one invocation
    /// per row (so tests can run both kernels on any device).
    #[doc(hidden)]
    pub fn softmax_mapped(&self, x: &GpuTensor, per_workgroup: bool) -> Result<GpuTensor> {
        let p = plan::softmax(&x.shape)?;
        self.softmax_rows(&p, x, per_workgroup)
    }

    /// [`ModuleOps::softmax_backward`](crate::backend::ModuleOps::softmax_backward)
    /// with the row mapping chosen by the caller.
    #[doc(hidden)]
    pub fn softmax_backward_mapped(
        &self,
        y: &GpuTensor,
        dy: &GpuTensor,
        per_workgroup: bool,
    ) -> Result<GpuTensor> {
        let p = plan::softmax_backward(&y.shape, &dy.shape)?;
        self.softmax_backward_rows(&p, y, dy, per_workgroup)
    }
}
