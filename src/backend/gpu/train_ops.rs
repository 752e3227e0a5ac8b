//! [`TrainKernels`] on the GPU, with no readback: the loss and the squared
//! gradient norm stay on the device as `[1]` tensors, the clipping scale and
//! the non-finite skip are computed inside `adam_step`.
//!
//! Kernels: `shaders/sum_squares.wgsl` (two-level reduction: G ≤ 4096
//! workgroups of grid-strided register sums + a workgroup tree each, then one
//! workgroup adds the G partials), `shaders/dsm_loss.wgsl` (the loss's first
//! level fused with the gradient write; second level as above),
//! `shaders/optim.wgsl` (Adam) and `shaders/ema.wgsl`, the last two one
//! invocation per element on `grid_1d`.

use super::context::Bind;
use super::kernels;
use super::launch::{grid_1d, u32_of, WG};
use super::params::*;
use super::{GpuBackend, GpuBuf, GpuTensor};
use crate::backend::plan::{AdamPlan, DsmPlan};
use crate::backend::{AdamStep, TrainKernels};
use crate::error::Result;

/// Most first-level workgroups of a reduction (each writes one f32 partial).
const MAX_PARTIALS: u64 = 4096;
/// Values each invocation sums in a register before the tree, while the
/// partials cap allows.
const PER_THREAD: u64 = 16;

/// Number of first-level workgroups for `n` elements (≥ 1).
fn partial_groups(n: u64) -> u32 {
    n.div_ceil(WG as u64 * PER_THREAD).clamp(1, MAX_PARTIALS) as u32
}

impl GpuBackend {
    /// `adam_step`, or with `ema` (the average and its rate) `adam_ema_step`:
    /// Adam, then the EMA toward the updated param, in one dispatch.
    #[allow(clippy::too_many_arguments)]
    fn adam_dispatch(
        &self,
        plan: &AdamPlan,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        hp: &AdamStep,
        grad_sq_total: &GpuTensor,
        mut ema: Option<(&mut GpuTensor, f32)>,
    ) -> Result<()> {
        let op = if ema.is_some() {
            "adam_ema_step"
        } else {
            "adam_step"
        };
        let n = u32_of(op, "elements", plan.n)?;
        if n == 0 {
            return Ok(());
        }
        // Exclusive buffers: no binding below aliases a written one.
        self.make_unique(op, param)?;
        self.make_unique(op, m)?;
        self.make_unique(op, v)?;
        if let Some((e, _)) = ema.as_mut() {
            self.make_unique(op, e)?;
        }
        let mut binds = vec![
            Bind::Storage(&param.buf),
            Bind::Storage(&m.buf),
            Bind::Storage(&v.buf),
            Bind::Storage(&grad.buf),
            Bind::Storage(&grad_sq_total.buf),
        ];
        let (kernel, ema_rate) = match &ema {
            Some((e, rate)) => {
                binds.push(Bind::Storage(&e.buf));
                (kernels::ADAM_EMA_STEP, *rate)
            }
            None => (kernels::ADAM_STEP, 0.0),
        };
        let params = AdamParams {
            n,
            clip: hp.clips() as u32,
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.eps,
            bc1: plan.bc1,
            bc2: plan.bc2,
            max_norm: hp.max_norm,
            ema_rate,
            ..Default::default()
        };
        self.ctx.dispatch(
            kernel,
            &[],
            &params,
            &binds,
            grid_1d(n as u64, self.max_groups()),
        )
    }

    /// First level: `groups` partial sums of x² (x holds `n` elements) into
    /// `partials[offset…]`.
    fn partial_sums(
        &self,
        partials: &GpuBuf,
        offset: u32,
        n: u32,
        x: &GpuTensor,
        groups: u32,
    ) -> Result<()> {
        let params = SumSquaresParams {
            n,
            offset,
            ..Default::default()
        };
        self.ctx.dispatch(
            kernels::SUM_SQUARES_PARTIAL,
            &[],
            &params,
            &[Bind::Storage(partials), Bind::Storage(&x.buf)],
            (groups, 1, 1),
        )
    }

    /// Second level: `[1]` = Σ partials (+ acc[0]).
    fn finish_sum(
        &self,
        op: &'static str,
        partials: &GpuBuf,
        count: u32,
        acc: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        let out = self.tensor_output(op, &[1])?;
        let params = SumSquaresParams {
            n: count,
            accumulate: acc.is_some() as u32,
            ..Default::default()
        };
        // Without an accumulator, bind the partials again (read-only, unread).
        let acc_buf = acc.map(|a| &*a.buf).unwrap_or(partials);
        self.ctx.dispatch(
            kernels::SUM_PARTIALS,
            &[],
            &params,
            &[
                Bind::Storage(&out.buf),
                Bind::Storage(partials),
                Bind::Storage(acc_buf),
            ],
            (1, 1, 1),
        )?;
        Ok(out)
    }
}

impl TrainKernels for GpuBackend {
    fn dsm_loss_planned(
        &self,
        p: &DsmPlan,
        out: &GpuTensor,
        z: &GpuTensor,
        sign: f32,
    ) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "dsm_loss";
        let n = u32_of(OP, "elements", out.numel())?;
        let factor_buf = self.upload_pod(OP, &p.factors)?;
        let dout = self.tensor_output(OP, &out.shape)?;
        let groups = partial_groups(n as u64);
        let partials = self.ctx.storage_output(OP, groups as u64 * 4)?;
        let params = DsmLossParams {
            n,
            d: p.d as u32,
            sign,
            ..Default::default()
        };
        self.ctx.dispatch(
            kernels::DSM_LOSS_PARTIAL,
            &[],
            &params,
            &[
                Bind::Storage(&partials),
                Bind::Storage(&dout.buf),
                Bind::Storage(&out.buf),
                Bind::Storage(&z.buf),
                Bind::Storage(&factor_buf),
            ],
            (groups, 1, 1),
        )?;
        let loss = self.finish_sum(OP, &partials, groups, None)?;
        Ok((loss, dout))
    }

    fn sum_squares_planned(
        &self,
        n: usize,
        acc: Option<&GpuTensor>,
        x: &GpuTensor,
    ) -> Result<GpuTensor> {
        let op = if acc.is_some() {
            "add_sum_squares"
        } else {
            "sum_squares"
        };
        let n = u32_of(op, "elements", n)?;
        let groups = partial_groups(n as u64);
        // Each first-level workgroup writes its partial; with n = 0 none runs
        // and the zeroed partials sum to 0.
        let partials = if n > 0 {
            self.ctx.storage_output(op, groups as u64 * 4)?
        } else {
            self.ctx.storage_zeroed(op, groups as u64 * 4)?
        };
        if n > 0 {
            self.partial_sums(&partials, 0, n, x, groups)?;
        }
        self.finish_sum(op, &partials, groups, acc)
    }

    fn adam_step_planned(
        &self,
        plan: &AdamPlan,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        hp: &AdamStep,
        grad_sq_total: &GpuTensor,
    ) -> Result<()> {
        self.adam_dispatch(plan, param, grad, m, v, hp, grad_sq_total, None)
    }

    /// Every tensor's first-level partial sums into one buffer (each at its
    /// offset), then one second level over all of them: n + 1 dispatches
    /// instead of the 2n of chained accumulating sums.
    fn sum_squares_all_planned(&self, ns: &[usize], xs: &[&GpuTensor]) -> Result<GpuTensor> {
        const OP: &str = "sum_squares_all";
        let groups = ns
            .iter()
            .map(|&n| {
                Ok(if n == 0 {
                    0
                } else {
                    partial_groups(u32_of(OP, "elements", n)? as u64)
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        let total: u64 = groups.iter().map(|&g| g as u64).sum();
        if total == 0 {
            let zero = self.ctx.storage_zeroed(OP, 4)?;
            return self.finish_sum(OP, &zero, 1, None);
        }
        let count = u32_of(OP, "partial sums", total as usize)?;
        let partials = self.ctx.storage_output(OP, total * 4)?;
        let mut offset = 0u32;
        for ((&n, x), &g) in ns.iter().zip(xs).zip(&groups) {
            if g == 0 {
                continue;
            }
            self.partial_sums(&partials, offset, n as u32, x, g)?;
            offset += g;
        }
        self.finish_sum(OP, &partials, count, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn adam_ema_step_planned(
        &self,
        plan: &AdamPlan,
        param: &mut GpuTensor,
        grad: &GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        hp: &AdamStep,
        grad_sq_total: &GpuTensor,
        ema: &mut GpuTensor,
        rate: f32,
    ) -> Result<()> {
        self.adam_dispatch(
            plan,
            param,
            grad,
            m,
            v,
            hp,
            grad_sq_total,
            Some((ema, rate)),
        )
    }

    fn ema_update_planned(
        &self,
        n: usize,
        ema: &mut GpuTensor,
        param: &GpuTensor,
        rate: f32,
    ) -> Result<()> {
        const OP: &str = "ema_update";
        let n = u32_of(OP, "elements", n)?;
        if n == 0 {
            return Ok(());
        }
        self.make_unique(OP, ema)?;
        let params = EmaParams {
            n,
            rate,
            ..Default::default()
        };
        self.ctx.dispatch(
            kernels::EMA_UPDATE,
            &[],
            &params,
            &[Bind::Storage(&ema.buf), Bind::Storage(&param.buf)],
            grid_1d(n as u64, self.max_groups()),
        )
    }
}
