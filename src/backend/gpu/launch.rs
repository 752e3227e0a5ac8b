//! Dispatch helpers shared by the GPU kernels: workgroup grids, the device's
//! 32-bit indexing limit, Philox keys, and the strided gather that packs
//! operands for the register-blocked kernels.

use super::context::Bind;
use super::kernels::{self, Kernel};
use super::params::{KernelParams, StridedPackParams};
use super::{GpuBackend, GpuBuf, GpuTensor};
use crate::backend::numel;
use crate::error::{Error, Result};
use crate::rng::RngStream;

/// Threads per workgroup of the 1-D kernels (must match the WGSL).
pub(super) const WG: u32 = 64;

/// Workgroup grid for `threads` invocations of a 1-D kernel: spills into y when
/// x would pass the per-dimension limit (the kernels linearise with num_workgroups).
pub(super) fn grid_1d(threads: u64, max_dim: u32) -> (u32, u32, u32) {
    let groups = threads.div_ceil(WG as u64);
    if groups <= max_dim as u64 {
        (groups as u32, 1, 1)
    } else {
        let y = groups.div_ceil(max_dim as u64);
        (max_dim, y.min(u32::MAX as u64) as u32, 1)
    }
}

/// A 2-D workgroup grid, refused with a shape error past the device's limit.
pub(super) fn grid_2d(
    op: &'static str,
    gx: u64,
    gy: u64,
    max: u32,
    what: &dyn Fn() -> String,
) -> Result<(u32, u32, u32)> {
    if gx > max as u64 || gy > max as u64 {
        return Err(Error::shape(
            op,
            format!("{} needs more workgroups than the device allows", what()),
        ));
    }
    Ok((gx as u32, gy as u32, 1))
}

/// A 3-D workgroup grid, refused with a shape error past the device's limit.
pub(super) fn grid_3d(
    op: &'static str,
    g: [usize; 3],
    max: u32,
    what: &dyn Fn() -> String,
) -> Result<(u32, u32, u32)> {
    if g.iter().any(|&v| v > max as usize) {
        return Err(Error::shape(
            op,
            format!("{} needs more workgroups than the device allows", what()),
        ));
    }
    Ok((g[0] as u32, g[1] as u32, g[2] as u32))
}

/// One workgroup per row for the row-reduction kernels, spilling into y past
/// the per-dimension limit (the kernels linearise with num_workgroups).
pub(super) fn grid_rows(rows: usize, max: u32) -> (u32, u32, u32) {
    let max = max as usize;
    if rows <= max {
        (rows as u32, 1, 1)
    } else {
        (
            max as u32,
            rows.div_ceil(max).min(u32::MAX as usize) as u32,
            1,
        )
    }
}

/// `v` as the kernels' u32 index, or a shape error naming the quantity.
pub(super) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::shape(
            op,
            format!("{what} = {v} exceeds the GPU kernels' 32-bit indexing"),
        )
    })
}

/// Element count of `t` as the kernels index it.
pub(super) fn elems(op: &'static str, t: &GpuTensor) -> Result<u32> {
    u32_of(op, "elements", t.numel())
}

/// A Philox key as the WGSL kernels read it: (seed lo, seed hi, stream lo, stream hi).
pub(super) fn rng_key(rng: RngStream) -> [u32; 4] {
    [
        rng.seed as u32,
        (rng.seed >> 32) as u32,
        rng.stream as u32,
        (rng.stream >> 32) as u32,
    ]
}

/// Per-sample random key: [`rng_key`] of the sample's derived stream.
pub(super) fn sample_key(rng: RngStream, stream: u64) -> [u32; 4] {
    rng_key(rng.derive(stream))
}

/// `n` rounded up to a multiple of 8.
pub(super) fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// A strided 3-D view of a buffer, gathered by `strided_pack` into a dense
/// `[batch][rows][cols_pad]` array (columns past `cols` zero). Strides and
/// `base` are in elements and may be negative (a flip): the kernel does
/// wrapping 32-bit arithmetic, exact as long as every index read is in range.
pub(super) struct PackView {
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub cols_pad: usize,
    pub base: i64,
    pub s_batch: i64,
    pub s_row: i64,
    pub s_col: i64,
}

impl GpuBackend {
    pub(super) fn max_groups(&self) -> u32 {
        self.ctx.limits.max_compute_workgroups_per_dimension
    }

    /// `threads` invocations of a 1-D kernel (64 per workgroup).
    pub(super) fn launch_1d<P: KernelParams>(
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
    pub(super) fn launch_per_workgroup<P: KernelParams>(
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

    /// Records a `strided_pack` of `src` (holding `src_len` elements) into a new buffer.
    pub(super) fn pack(
        &self,
        op: &'static str,
        src: &GpuBuf,
        src_len: usize,
        v: PackView,
    ) -> Result<GpuBuf> {
        // strided_pack.wgsl writes 4 columns at a time.
        if !v.cols_pad.is_multiple_of(4) || v.cols_pad < v.cols {
            return Err(Error::shape(
                op,
                format!(
                    "packed rows of {} columns padded to {}: not a multiple of 4",
                    v.cols, v.cols_pad
                ),
            ));
        }
        let total = numel(op, &[v.batch, v.rows, v.cols_pad])?;
        u32_of(op, "packed operand elements", total)?;
        u32_of(op, "operand elements", src_len)?;
        let dst = self.ctx.storage_output(op, total as u64 * 4)?;
        if total == 0 {
            return Ok(dst);
        }
        // Wrapping: a negative stride becomes its two's complement.
        let params = StridedPackParams {
            batch: v.batch as u32,
            rows: v.rows as u32,
            cols: v.cols as u32,
            cols_pad: v.cols_pad as u32,
            base: v.base as u32,
            s_batch: v.s_batch as u32,
            s_row: v.s_row as u32,
            s_col: v.s_col as u32,
        };
        // Contiguous, aligned rows: 4 × 4 blocks moved as vec4.
        let aligned = [v.base, v.s_batch, v.s_col, v.rows as i64]
            .iter()
            .all(|&x| x >= 0 && x % 4 == 0);
        let (kernel, invocations) = if v.s_row == 1 && aligned && src_len.is_multiple_of(4) {
            (kernels::STRIDED_PACK_ROWS4, total as u64 / 16)
        } else {
            (kernels::STRIDED_PACK, total as u64 / 4)
        };
        self.launch_1d(
            kernel,
            &params,
            &[Bind::Storage(src), Bind::Storage(&dst)],
            invocations,
        )?;
        Ok(dst)
    }
}
