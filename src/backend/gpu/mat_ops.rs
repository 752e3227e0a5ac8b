//! [`MatOps`] on the GPU: conv2d gradients, batched matmul and softmax, as WGSL
//! kernels from `shaders/`. Every op only records dispatches into the context's
//! batched encoder: no host round trips, intermediates stay on the device.
//!
//! Most kernels are the register-blocked, unrolled kind `shaders/gen_unrolled.py`
//! writes; they read operands packed (transposed, zero-padded to 8) by one
//! general gather kernel, `strided_pack.wgsl`, an O(n) pass next to their
//! O(n^1.5) work.

use std::sync::Arc;

use super::context::Bind;
use super::params::*;
use super::{grid_1d, grid_2d, kernels, u32_of, GpuBackend, GpuTensor, WG};
use crate::backend::{numel, Conv2dGrads, Conv2dSpec, ConvGeometry, MatOps};
use crate::error::{Error, Result};

/// A strided 3-D view of a buffer, gathered by `strided_pack` into a dense
/// `[batch][rows][cols_pad]` array (columns past `cols` zero). Strides and
/// `base` are in elements and may be negative (a flip): the kernel does
/// wrapping 32-bit arithmetic, exact as long as every index read is in range.
struct PackView {
    batch: usize,
    rows: usize,
    cols: usize,
    cols_pad: usize,
    base: i64,
    s_batch: i64,
    s_row: i64,
    s_col: i64,
}

/// Invocations the conv weight-gradient kernel aims for (by splitting its
/// reduction) so the device has enough independent work.
const DW_TARGET_INVOCATIONS: usize = 16_384;
/// …but each split reduces at least this many (b, oy, ox) positions.
const DW_MIN_PER_SPLIT: usize = 256;

/// `n` rounded up to a multiple of 8.
fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// One workgroup per row for the row-reduction kernels, spilling into y past
/// the per-dimension limit (the kernels linearise with num_workgroups).
fn grid_rows(rows: usize, max: u32) -> (u32, u32, u32) {
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

/// A 3-D workgroup grid, refused with a shape error past the device's limit.
fn grid_3d(
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

/// Validated operands of a [`MatOps::bmm`].
struct BmmDims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a_batched: bool,
    b_batched: bool,
    out: Vec<usize>,
}

fn bmm_dims(a: &[usize], b: &[usize], ta: bool, tb: bool) -> Result<BmmDims> {
    const OP: &str = "bmm";
    let bad = |why: &str| {
        Error::shape(
            OP,
            format!(
                "{a:?}{} × {b:?}{}: {why}",
                if ta { "ᵀ" } else { "" },
                if tb { "ᵀ" } else { "" }
            ),
        )
    };
    let rank_ok = |s: &[usize]| s.len() == 2 || s.len() == 3;
    if !rank_ok(a) || !rank_ok(b) {
        return Err(bad("operands must be [B, rows, cols] or 2-D [rows, cols]"));
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
    Ok(BmmDims {
        batch: batch.unwrap_or(1),
        m,
        k: ka,
        n,
        a_batched,
        b_batched,
        out,
    })
}

/// `(rows, row length)` of a softmax operand: the last axis is the row.
fn softmax_rows(op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    let len = *shape
        .last()
        .ok_or_else(|| Error::shape(op, "a scalar has no axis to normalise over"))?;
    let n = numel(op, shape)?;
    u32_of(op, "elements", n)?;
    Ok((n.checked_div(len).unwrap_or(0), len))
}

impl GpuBackend {
    /// Records a `strided_pack` of `src` (holding `src_len` elements) into a new buffer.
    fn pack(
        &self,
        op: &'static str,
        src: &wgpu::Buffer,
        src_len: usize,
        v: PackView,
    ) -> Result<wgpu::Buffer> {
        let total = numel(op, &[v.batch, v.rows, v.cols_pad])?;
        u32_of(op, "packed operand elements", total)?;
        u32_of(op, "operand elements", src_len)?;
        let dst = self.ctx.storage(op, total as u64 * 4)?;
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
        self.ctx.dispatch(
            kernels::STRIDED_PACK,
            &[],
            &params,
            &[Bind::Storage(src), Bind::Storage(&dst)],
            grid_1d(
                total as u64,
                self.ctx.limits.max_compute_workgroups_per_dimension,
            ),
        )?;
        Ok(dst)
    }

    /// dx of a stride-1 conv: the forward kernel on dy with the weights
    /// transposed (in ↔ out) and flipped, padding K − 1 − P (negative when
    /// P > K − 1: the forward kernel reads its padding as i32, and the
    /// out-of-range taps it then skips are exactly the cropped ones).
    fn conv_dx_stride1(
        &self,
        g: &ConvGeometry,
        w: &GpuTensor,
        dy: &GpuTensor,
        dx: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "conv2d_backward";
        let kk = g.k * g.k;
        let cin_pad = pad8(g.c_in);
        let packed = self.pack(
            OP,
            &w.buf,
            w.numel(),
            PackView {
                batch: g.c_out,
                rows: kk,
                cols: g.c_in,
                cols_pad: cin_pad,
                base: kk as i64 - 1,
                s_batch: (g.c_in * kk) as i64,
                s_row: -1,
                s_col: kk as i64,
            },
        )?;
        let pad = g.k as i64 - 1 - g.padding as i64;
        let tiles_x = g.w.div_ceil(8);
        // The forward kernel with dy as its input and dx as its output.
        let params = Conv2dParams {
            batch: g.batch as u32,
            c_in: g.c_out as u32,
            h: g.h_out as u32,
            w: g.w_out as u32,
            c_out: g.c_in as u32,
            c_out_pad: cin_pad as u32,
            h_out: g.h as u32,
            w_out: g.w as u32,
            padding: pad as i32 as u32,
            tiles_x: tiles_x as u32,
            has_bias: 0,
            ..Default::default()
        };
        let tiles = numel(OP, &[g.batch, g.h, tiles_x])?;
        u32_of(OP, "input-gradient tiles", tiles)?;
        let groups = grid_2d(
            OP,
            (tiles as u64).div_ceil(WG as u64),
            g.c_in.div_ceil(8) as u64,
            self.ctx.limits.max_compute_workgroups_per_dimension,
            &|| format!("input gradient {:?}", dx.shape),
        )?;
        let kernel = if g.k == 1 {
            kernels::CONV2D_K1S1
        } else {
            kernels::CONV2D_K3S1
        };
        // The forward kernel binds a bias; with has_bias = 0 it is never read.
        let no_bias = self.ctx.placeholder()?;
        self.ctx.dispatch(
            kernel,
            &[],
            &params,
            &[
                Bind::Storage(&dy.buf),
                Bind::Storage(&packed),
                Bind::Storage(&no_bias),
                Bind::Storage(&dx.buf),
            ],
            groups,
        )
    }

    /// dx of a stride-2 conv: the dedicated kernel of conv2d_backward_input.wgsl.
    fn conv_dx_stride2(
        &self,
        g: &ConvGeometry,
        w: &GpuTensor,
        dy: &GpuTensor,
        dx: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "conv2d_backward";
        let kk = g.k * g.k;
        let cin_pad = pad8(g.c_in);
        let packed = self.pack(
            OP,
            &w.buf,
            w.numel(),
            PackView {
                batch: g.c_out,
                rows: kk,
                cols: g.c_in,
                cols_pad: cin_pad,
                base: 0,
                s_batch: (g.c_in * kk) as i64,
                s_row: 1,
                s_col: kk as i64,
            },
        )?;
        let tiles_x = (g.w + g.padding).div_ceil(8);
        u32_of(OP, "W + padding", tiles_x * 8)?;
        let params = Conv2dBackwardInputParams {
            batch: g.batch as u32,
            c_dy: g.c_out as u32,
            ho: g.h_out as u32,
            wo: g.w_out as u32,
            c_x: g.c_in as u32,
            c_x_pad: cin_pad as u32,
            h: g.h as u32,
            w: g.w as u32,
            padding: g.padding as u32,
            tiles_x: tiles_x as u32,
            ..Default::default()
        };
        let tiles = numel(OP, &[g.batch, g.h, tiles_x])?;
        u32_of(OP, "input-gradient tiles", tiles)?;
        let groups = grid_2d(
            OP,
            (tiles as u64).div_ceil(WG as u64),
            g.c_in.div_ceil(8) as u64,
            self.ctx.limits.max_compute_workgroups_per_dimension,
            &|| format!("input gradient {:?}", dx.shape),
        )?;
        let kernel = if g.k == 1 {
            kernels::CONV2D_BACKWARD_INPUT_K1S2
        } else {
            kernels::CONV2D_BACKWARD_INPUT_K3S2
        };
        self.ctx.dispatch(
            kernel,
            &[],
            &params,
            &[
                Bind::Storage(&dy.buf),
                Bind::Storage(&packed),
                Bind::Storage(&dx.buf),
            ],
            groups,
        )
    }

    /// dw: channels-last dy and x, one register-blocked GEMM per tap with the
    /// reduction over (b, oy) rows split for parallelism, then the splits summed.
    fn conv_dw(
        &self,
        g: &ConvGeometry,
        x: &GpuTensor,
        dy: &GpuTensor,
        dw: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "conv2d_backward";
        let (cin_pad, cout_pad) = (pad8(g.c_in), pad8(g.c_out));
        let (hw, howo) = (g.h * g.w, g.h_out * g.w_out);
        let dyt = self.pack(
            OP,
            &dy.buf,
            dy.numel(),
            PackView {
                batch: g.batch,
                rows: howo,
                cols: g.c_out,
                cols_pad: cout_pad,
                base: 0,
                s_batch: (g.c_out * howo) as i64,
                s_row: 1,
                s_col: howo as i64,
            },
        )?;
        let xt = self.pack(
            OP,
            &x.buf,
            x.numel(),
            PackView {
                batch: g.batch,
                rows: hw,
                cols: g.c_in,
                cols_pad: cin_pad,
                base: 0,
                s_batch: (g.c_in * hw) as i64,
                s_row: 1,
                s_col: hw as i64,
            },
        )?;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        let kk = g.k * g.k;
        let (nci8, nco8) = (g.c_in.div_ceil(8), g.c_out.div_ceil(8));
        let lanes = nci8 * nco8;
        let rows = g.batch * g.h_out;
        let reduction = rows * g.w_out;
        let splits = (DW_TARGET_INVOCATIONS.div_ceil(lanes * kk))
            .min((reduction / DW_MIN_PER_SPLIT).max(1))
            .min(rows)
            .min(max as usize)
            .max(1);
        let rows_per_split = rows.div_ceil(splits);
        let splits = rows.div_ceil(rows_per_split);
        let n = dw.numel();
        u32_of(OP, "split weight-gradient elements", n * splits)?;
        let params = Conv2dBackwardWeightParams {
            c_in: g.c_in as u32,
            c_out: g.c_out as u32,
            k: g.k as u32,
            kk: kk as u32,
            h: g.h as u32,
            w: g.w as u32,
            ho: g.h_out as u32,
            wo: g.w_out as u32,
            stride: g.stride as u32,
            padding: g.padding as u32,
            cip4: (cin_pad / 4) as u32,
            cop4: (cout_pad / 4) as u32,
            nci8: nci8 as u32,
            nco8: nco8 as u32,
            rows: u32_of(OP, "batch × output rows", rows)?,
            rows_per_split: rows_per_split as u32,
        };
        let groups = grid_3d(OP, [lanes.div_ceil(WG as usize), kk, splits], max, &|| {
            format!("weight gradient {:?}", dw.shape)
        })?;
        let part = if splits > 1 {
            Some(self.ctx.storage(OP, (n * splits) as u64 * 4)?)
        } else {
            None
        };
        self.ctx.dispatch(
            kernels::CONV2D_BACKWARD_WEIGHT,
            &[],
            &params,
            &[
                Bind::Storage(&dyt),
                Bind::Storage(&xt),
                Bind::Storage(part.as_ref().unwrap_or(&dw.buf)),
            ],
            groups,
        )?;
        if let Some(part) = part {
            let params = Conv2dBackwardReduceParams {
                n: n as u32,
                splits: splits as u32,
                ..Default::default()
            };
            self.ctx.dispatch(
                kernels::CONV2D_BACKWARD_REDUCE,
                &[],
                &params,
                &[Bind::Storage(&part), Bind::Storage(&dw.buf)],
                grid_1d(n as u64, max),
            )?;
        }
        Ok(())
    }
}

impl MatOps for GpuBackend {
    fn conv2d_backward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
        spec: Conv2dSpec,
    ) -> Result<Conv2dGrads<GpuTensor>> {
        const OP: &str = "conv2d_backward";
        let g = ConvGeometry::new(&x.shape, &w.shape, None, spec).map_err(|e| match e {
            Error::Shape { detail, .. } => Error::shape(OP, detail),
            e => e,
        })?;
        if dy.shape != g.out_shape() {
            return Err(Error::shape(
                OP,
                format!(
                    "upstream gradient {:?} is not the conv's output shape {:?}",
                    dy.shape,
                    g.out_shape()
                ),
            ));
        }
        if !matches!((g.k, g.stride), (1 | 3, 1 | 2)) {
            return Err(Error::shape(
                OP,
                format!(
                    "the GPU kernels handle 1×1 and 3×3 kernels at stride 1 or 2, got {}×{} at stride {}",
                    g.k, g.k, g.stride
                ),
            ));
        }
        for (what, v) in [
            ("input elements", x.numel()),
            ("weight elements", w.numel()),
            ("output elements", dy.numel()),
            ("padded width", g.w + 2 * g.padding),
            ("padded height", g.h + 2 * g.padding),
        ] {
            u32_of(OP, what, v)?;
        }
        if i32::try_from(g.w + 2 * g.padding + 8).is_err()
            || i32::try_from(g.h + 2 * g.padding).is_err()
        {
            return Err(Error::shape(
                OP,
                format!(
                    "padded input {}×{} exceeds the kernels' signed 32-bit indexing",
                    g.h, g.w
                ),
            ));
        }
        // New buffers are zero: what a missing batch, channel or plane contributes.
        let dx = self.tensor(OP, &x.shape)?;
        let dw = self.tensor(OP, &w.shape)?;
        let db = self.tensor(OP, &[g.c_out])?;
        if dy.numel() == 0 {
            return Ok(Conv2dGrads { dx, dw, db });
        }
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        let params = Conv2dBackwardBiasParams {
            batch: g.batch as u32,
            c_out: g.c_out as u32,
            plane: (g.h_out * g.w_out) as u32,
            ..Default::default()
        };
        self.ctx.dispatch(
            kernels::CONV2D_BACKWARD_BIAS,
            &[],
            &params,
            &[Bind::Storage(&dy.buf), Bind::Storage(&db.buf)],
            grid_rows(g.c_out, max),
        )?;
        if x.numel() > 0 {
            if g.stride == 1 {
                self.conv_dx_stride1(&g, w, dy, &dx)?;
            } else {
                self.conv_dx_stride2(&g, w, dy, &dx)?;
            }
            self.conv_dw(&g, x, dy, &dw)?;
        }
        Ok(Conv2dGrads { dx, dw, db })
    }

    fn bmm(&self, a: &GpuTensor, b: &GpuTensor, ta: bool, tb: bool) -> Result<GpuTensor> {
        const OP: &str = "bmm";
        let d = bmm_dims(&a.shape, &b.shape, ta, tb)?;
        let c = self.tensor(OP, &d.out)?;
        if c.numel() == 0 || d.k == 0 {
            return Ok(c);
        }
        u32_of(OP, "output elements", c.numel())?;
        let (m_pad, n_pad) = (pad8(d.m), pad8(d.n));
        let a_batch = if d.a_batched { d.batch } else { 1 };
        let b_batch = if d.b_batched { d.batch } else { 1 };
        // A k-major ([K][M]) with M % 8 == 0 is already what the kernel reads.
        let at: Arc<wgpu::Buffer> = if ta && d.m % 8 == 0 {
            u32_of(OP, "A elements", a.numel())?;
            a.buf.clone()
        } else {
            let (s_row, s_col) = if ta { (d.m, 1) } else { (1, d.k) };
            Arc::new(self.pack(
                OP,
                &a.buf,
                a.numel(),
                PackView {
                    batch: a_batch,
                    rows: d.k,
                    cols: d.m,
                    cols_pad: m_pad,
                    base: 0,
                    s_batch: (d.m * d.k) as i64,
                    s_row: s_row as i64,
                    s_col: s_col as i64,
                },
            )?)
        };
        let bp: Arc<wgpu::Buffer> = if !tb && d.n % 8 == 0 {
            u32_of(OP, "B elements", b.numel())?;
            b.buf.clone()
        } else {
            let (s_row, s_col) = if tb { (1, d.k) } else { (d.n, 1) };
            Arc::new(self.pack(
                OP,
                &b.buf,
                b.numel(),
                PackView {
                    batch: b_batch,
                    rows: d.k,
                    cols: d.n,
                    cols_pad: n_pad,
                    base: 0,
                    s_batch: (d.k * d.n) as i64,
                    s_row: s_row as i64,
                    s_col: s_col as i64,
                },
            )?)
        };
        let (m_blocks, n_blocks) = (d.m.div_ceil(8), d.n.div_ceil(8));
        let blocks = m_blocks * n_blocks;
        let params = BmmParams {
            m: d.m as u32,
            n: d.n as u32,
            k: d.k as u32,
            m4: (m_pad / 4) as u32,
            n4: (n_pad / 4) as u32,
            a_batch4: if d.a_batched {
                (d.k * m_pad / 4) as u32
            } else {
                0
            },
            b_batch4: if d.b_batched {
                (d.k * n_pad / 4) as u32
            } else {
                0
            },
            n_blocks: n_blocks as u32,
            blocks: u32_of(OP, "8×8 output blocks", blocks)?,
            ..Default::default()
        };
        let groups = grid_3d(
            OP,
            [blocks.div_ceil(WG as usize), d.batch, 1],
            self.ctx.limits.max_compute_workgroups_per_dimension,
            &|| format!("{:?} × {:?}", a.shape, b.shape),
        )?;
        self.ctx.dispatch(
            kernels::BMM,
            &[],
            &params,
            &[
                Bind::Storage(&at),
                Bind::Storage(&bp),
                Bind::Storage(&c.buf),
            ],
            groups,
        )?;
        Ok(c)
    }

    fn softmax(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.softmax_mapped(x, self.rows_per_workgroup(x.shape.last().copied()))
    }

    fn softmax_backward(&self, y: &GpuTensor, dy: &GpuTensor) -> Result<GpuTensor> {
        self.softmax_backward_mapped(y, dy, self.rows_per_workgroup(y.shape.last().copied()))
    }
}

/// Rows up to this long run one invocation per row on every device.
const SHORT_ROW: usize = 128;

impl GpuBackend {
    /// Whether the row kernels (softmax and its backward) give each row a
    /// workgroup: for long rows on GPUs. Short rows, and every row on a
    /// CPU-emulated device (lavapipe: barriers are costly there, and a few
    /// threads are busy anyway), get one invocation each.
    fn rows_per_workgroup(&self, len: Option<usize>) -> bool {
        self.ctx.info.device_type != wgpu::DeviceType::Cpu && len.unwrap_or(0) > SHORT_ROW
    }

    /// Records a row kernel over `rows` rows of `len`.
    fn dispatch_rows(
        &self,
        per_workgroup: bool,
        kernels: [kernels::Kernel<SoftmaxParams>; 2],
        rows: usize,
        len: usize,
        binds: &[Bind],
    ) -> Result<()> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        let params = SoftmaxParams {
            rows: rows as u32,
            len: len as u32,
            ..Default::default()
        };
        let (kernel, groups) = if per_workgroup {
            (kernels[0], grid_rows(rows, max))
        } else {
            (kernels[1], grid_1d(rows as u64, max))
        };
        self.ctx.dispatch(kernel, &[], &params, binds, groups)
    }

    /// [`MatOps::softmax`] with the row mapping chosen by the caller: one
    /// workgroup per row, or one invocation per row (so tests can run both
    /// kernels on any device).
    #[doc(hidden)]
    pub fn softmax_mapped(&self, x: &GpuTensor, per_workgroup: bool) -> Result<GpuTensor> {
        const OP: &str = "softmax";
        let (rows, len) = softmax_rows(OP, &x.shape)?;
        let y = self.tensor(OP, &x.shape)?;
        if y.numel() == 0 {
            return Ok(y);
        }
        self.dispatch_rows(
            per_workgroup,
            [kernels::SOFTMAX, kernels::SOFTMAX_ROW],
            rows,
            len,
            &[Bind::Storage(&x.buf), Bind::Storage(&y.buf)],
        )?;
        Ok(y)
    }

    /// [`MatOps::softmax_backward`] with the row mapping chosen by the caller.
    #[doc(hidden)]
    pub fn softmax_backward_mapped(
        &self,
        y: &GpuTensor,
        dy: &GpuTensor,
        per_workgroup: bool,
    ) -> Result<GpuTensor> {
        const OP: &str = "softmax_backward";
        if y.shape != dy.shape {
            return Err(Error::shape(
                OP,
                format!(
                    "gradient {:?} differs from softmax output {:?}",
                    dy.shape, y.shape
                ),
            ));
        }
        let (rows, len) = softmax_rows(OP, &y.shape)?;
        let dx = self.tensor(OP, &y.shape)?;
        if dx.numel() == 0 {
            return Ok(dx);
        }
        self.dispatch_rows(
            per_workgroup,
            [kernels::SOFTMAX_BACKWARD, kernels::SOFTMAX_BACKWARD_ROW],
            rows,
            len,
            &[
                Bind::Storage(&y.buf),
                Bind::Storage(&dy.buf),
                Bind::Storage(&dx.buf),
            ],
        )?;
        Ok(dx)
    }
}
