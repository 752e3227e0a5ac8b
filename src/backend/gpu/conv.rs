//! conv2d and its gradients on the GPU. The forward: the register-blocked
//! kernels of `conv2d.wgsl` (1×1 and 3×3, stride 1 or 2), their subgroup
//! form `conv2d_subgroup.wgsl` (stride 1, where it fits) or the tiled
//! `conv2d_tiled.wgsl`, as the tuner picks, on weights packed k-major. The backward: dx of a stride-1 conv is the forward kernel on dy
//! with flipped, transposed weights; stride 2 has its own kernel; dw is one
//! GEMM per tap with the reduction split for parallelism (or its subgroup
//! form, as the tuner picks); db a row sum.
//! Operands are packed (transposed, zero-padded to 8) by `strided_pack.wgsl`,
//! an O(n) pass next to the kernels' O(n^1.5) work.

use super::context::Bind;
use super::kernels;
use super::launch::{grid_1d, grid_2d, grid_3d, grid_rows, pad8, u32_of, PackView, WG};
use super::params::*;
use super::tune::{self, Variant};
use super::{GpuBackend, GpuBuf, GpuTensor};
use crate::backend::{numel, Conv2dGrads, ConvGeometry};
use crate::error::{Error, Result};

/// Invocations the conv weight-gradient kernel aims for (by splitting its
/// reduction) so the device has enough independent work.
const DW_TARGET_INVOCATIONS: usize = 16_384;
/// …but each split reduces at least this many (b, oy, ox) positions.
const DW_MIN_PER_SPLIT: usize = 256;

/// The GPU kernels' supported geometries, else a shape error.
fn check_kernel_size(op: &'static str, g: &ConvGeometry) -> Result<()> {
    if !matches!((g.k, g.stride), (1 | 3, 1 | 2)) {
        return Err(Error::shape(
            op,
            format!(
                "the GPU kernels handle 1×1 and 3×3 kernels at stride 1 or 2, got {}×{} at stride {}",
                g.k, g.k, g.stride
            ),
        ));
    }
    Ok(())
}

/// One conv forward launch for [`GpuBackend::launch_conv`].
struct ConvLaunch {
    op: &'static str,
    /// The tuner's shape class.
    class: String,
    /// The register-blocked entry point for this kernel size and stride.
    kernel: kernels::Kernel<Conv2dParams>,
    k: usize,
    stride: usize,
    /// Output channels (the kernel's `c_out`).
    c_out: usize,
    /// 8-wide output tiles (batch × rows × tiles per row).
    tiles: usize,
    /// 8-wide tiles of output row pairs (batch × ⌈rows / 2⌉ × tiles per
    /// row), for the two-row subgroup kernel.
    tiles_rows2: usize,
    /// The same for groups of 4 rows, for the four-row subgroup kernel.
    tiles_rows4: usize,
    /// Output positions (batch × rows × columns).
    positions: usize,
    /// Whether `conv2d_subgroup.wgsl` fits (3×3 with padding 1 or 1×1
    /// with padding 0, stride 1, input width % 4 == 0, subgroups of 8 or
    /// more).
    subgroup: bool,
}

impl GpuBackend {
    /// Whether the subgroup conv kernel serves a forward-kernel launch with
    /// this kernel size, stride, padding and input width.
    pub fn subgroup_conv_fits(&self, k: usize, stride: usize, padding: i64, w: usize) -> bool {
        let tap_fits = matches!((k, padding), (3, 1) | (1, 0));
        self.ctx.subgroups8 && tap_fits && stride == 1 && w.is_multiple_of(4)
    }
}

impl GpuBackend {
    pub(super) fn conv2d_forward(
        &self,
        g: &ConvGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        self.conv2d_forward_fused(g, x, w, bias, None, None, None)
    }

    /// The conv with the fused epilogue of [`crate::backend::ConvEpilogue`]:
    /// `scale·(W∗x + bias + sample_bias + residual)`, each part optional,
    /// written by the conv kernels' own stores.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_forward_fused(
        &self,
        g: &ConvGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        sample_bias: Option<&GpuTensor>,
        residual: Option<&GpuTensor>,
        scale: Option<f32>,
    ) -> Result<GpuTensor> {
        const OP: &str = "conv2d";
        check_kernel_size(OP, g)?;
        let kernel = match (g.k, g.stride) {
            (1, 1) => kernels::CONV2D_K1S1,
            (1, _) => kernels::CONV2D_K1S2,
            (_, 1) => kernels::CONV2D_K3S1,
            _ => kernels::CONV2D_K3S2,
        };
        let out = self.tensor_output(OP, &g.out_shape())?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let c_out_pad = pad8(g.c_out);
        let rows = g.c_in * g.k * g.k;
        let packed = self.ctx.storage_output(OP, (rows * c_out_pad * 4) as u64)?;
        let pack_params = ConvWeightPackParams {
            c_out: u32_of(OP, "Cout", g.c_out)?,
            c_in: u32_of(OP, "Cin", g.c_in)?,
            kk: (g.k * g.k) as u32,
            c_out_pad: c_out_pad as u32,
        };
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        self.ctx.dispatch(
            kernels::CONV_WEIGHT_PACK,
            &[],
            &pack_params,
            &[Bind::Storage(&w.buf), Bind::Storage(&packed)],
            grid_1d((rows * c_out_pad) as u64, max),
        )?;
        let tiles_x = g.w_out.div_ceil(8);
        let params = Conv2dParams {
            batch: u32_of(OP, "batch", g.batch)?,
            c_in: u32_of(OP, "Cin", g.c_in)?,
            h: u32_of(OP, "H", g.h)?,
            w: u32_of(OP, "W", g.w)?,
            c_out: g.c_out as u32,
            c_out_pad: c_out_pad as u32,
            h_out: u32_of(OP, "Ho", g.h_out)?,
            w_out: u32_of(OP, "Wo", g.w_out)?,
            padding: u32_of(OP, "padding", g.padding)?,
            tiles_x: tiles_x as u32,
            has_bias: bias.is_some() as u32,
            has_sample_bias: sample_bias.is_some() as u32,
            has_residual: residual.is_some() as u32,
            has_scale: scale.is_some() as u32,
            scale: scale.unwrap_or(1.0),
            ..Default::default()
        };
        numel(OP, &[g.batch, g.c_in, g.h, g.w]).and_then(|n| u32_of(OP, "input elements", n))?;
        numel(OP, &g.out_shape()).and_then(|n| u32_of(OP, "output elements", n))?;
        // A bound buffer may not be both read and written: an absent operand
        // binds a dummy (never read: its flag is 0).
        let or_dummy = |t: Option<&GpuTensor>| match t {
            Some(t) => Ok(t.buf.clone()),
            None => self.ctx.placeholder(),
        };
        let (bias_buf, sb_buf, res_buf) =
            (or_dummy(bias)?, or_dummy(sample_bias)?, or_dummy(residual)?);
        let binds = [
            Bind::Storage(&x.buf),
            Bind::Storage(&packed),
            Bind::Storage(&bias_buf),
            Bind::Storage(&out.buf),
            Bind::Storage(&sb_buf),
            Bind::Storage(&res_buf),
        ];
        let positions = g.batch * g.h_out * g.w_out;
        let subgroup = self.subgroup_conv_fits(g.k, g.stride, g.padding as i64, g.w);
        let launch = ConvLaunch {
            op: OP,
            class: tune::with_subgroup(
                tune::conv_class(g.k, g.stride, g.c_in, g.c_out, positions),
                subgroup,
            ),
            kernel,
            k: g.k,
            stride: g.stride,
            c_out: g.c_out,
            tiles: g.batch * g.h_out * tiles_x,
            tiles_rows2: g.batch * g.h_out.div_ceil(2) * tiles_x,
            tiles_rows4: g.batch * g.h_out.div_ceil(4) * tiles_x,
            positions,
            subgroup,
        };
        let what = || format!("input {:?}", x.shape);
        self.launch_conv(&launch, &params, &binds, &out.buf, &what)?;
        Ok(out)
    }

    /// Runs a conv forward kernel, any family as the tuner picks: the
    /// register-blocked one (or its subgroup form, where it fits) over
    /// 8-wide tiles × 8 channels, or the tiled one over 64 positions × 64
    /// channels. The forward and the stride-1 input
    /// gradient (the forward kernel on dy) both launch through here.
    fn launch_conv(
        &self,
        l: &ConvLaunch,
        params: &Conv2dParams,
        binds: &[Bind],
        out: &GpuBuf,
        what: &dyn Fn() -> String,
    ) -> Result<()> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        use Variant::*;
        let candidates = tune::conv_forward_candidates(l.subgroup, l.k);
        self.run_tuned(&l.class, candidates, out, &|v| match v {
            // The kernel-row ones are weight-gradient variants, never
            // candidates here.
            RegisterBlocked | Subgroup | SubgroupRows2 | SubgroupRows4 | KernelRow
            | KernelRowSubgroup => {
                // All: 8-wide tiles (of one row or a group of rows) along x, blocks of
                // 8 channels along y.
                let (kernel, tiles) = match (v, l.k) {
                    (Variant::Subgroup, 1) => (kernels::CONV2D_K1S1_SUBGROUP, l.tiles),
                    (Variant::Subgroup, _) => (kernels::CONV2D_K3S1_SUBGROUP, l.tiles),
                    (Variant::SubgroupRows2, _) => {
                        (kernels::CONV2D_K3S1_SUBGROUP_ROWS2, l.tiles_rows2)
                    }
                    (Variant::SubgroupRows4, _) => {
                        (kernels::CONV2D_K3S1_SUBGROUP_ROWS4, l.tiles_rows4)
                    }
                    _ => (l.kernel, l.tiles),
                };
                let gx = (tiles as u64).div_ceil(WG as u64);
                let groups = grid_2d(l.op, gx, l.c_out.div_ceil(8) as u64, max, what)?;
                self.ctx.dispatch(kernel, &[], params, binds, groups)
            }
            Tiled => {
                let gx = l.positions.div_ceil(64) as u64;
                let groups = grid_2d(l.op, gx, l.c_out.div_ceil(64) as u64, max, what)?;
                let constants = [("KSIZE", l.k as u32), ("STRIDE", l.stride as u32)];
                self.ctx
                    .dispatch(kernels::CONV2D_TILED, &constants, params, binds, groups)
            }
        })
    }

    pub(super) fn conv2d_grads(
        &self,
        g: &ConvGeometry,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<Conv2dGrads<GpuTensor>> {
        const OP: &str = "conv2d_backward";
        check_kernel_size(OP, g)?;
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
        // Without dy or x no kernel writes the gradients: zeros, what a
        // missing batch, channel or plane contributes (e.g. a 1×1 conv with
        // padding 1 of an empty image still has a dy and a dw). Otherwise
        // the kernels below write every element of all three.
        if dy.numel() == 0 || x.numel() == 0 {
            return Ok(Conv2dGrads {
                dx: self.tensor_zeroed(OP, &x.shape)?,
                dw: self.tensor_zeroed(OP, &w.shape)?,
                db: if dy.numel() == 0 {
                    self.tensor_zeroed(OP, &[g.c_out])?
                } else {
                    self.conv_db(g, dy)?
                },
            });
        }
        let dx = self.tensor_output(OP, &x.shape)?;
        let dw = self.tensor_output(OP, &w.shape)?;
        let db = self.conv_db(g, dy)?;
        if g.stride == 1 {
            self.conv_dx_stride1(g, w, dy, &dx)?;
        } else {
            self.conv_dx_stride2(g, w, dy, &dx)?;
        }
        self.conv_dw(g, x, dy, &dw)?;
        Ok(Conv2dGrads { dx, dw, db })
    }

    /// db: one workgroup per output channel sums dy over batch and plane.
    fn conv_db(&self, g: &ConvGeometry, dy: &GpuTensor) -> Result<GpuTensor> {
        let db = self.tensor_output("conv2d_backward", &[g.c_out])?;
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
            grid_rows(g.c_out, self.max_groups()),
        )?;
        Ok(db)
    }

    /// The weights `[Cout, Cin, k, k]` packed for an input-gradient kernel:
    /// per output channel, k² rows of Cin (padded to 8) — the taps in reverse
    /// order when `flipped` (the stride-1 dx runs the forward kernel on dy).
    fn pack_for_dx(&self, g: &ConvGeometry, w: &GpuTensor, flipped: bool) -> Result<super::GpuBuf> {
        let kk = g.k * g.k;
        let (base, s_row) = if flipped { (kk as i64 - 1, -1) } else { (0, 1) };
        self.pack(
            "conv2d_backward",
            &w.buf,
            w.numel(),
            PackView {
                batch: g.c_out,
                rows: kk,
                cols: g.c_in,
                cols_pad: pad8(g.c_in),
                base,
                s_batch: (g.c_in * kk) as i64,
                s_row,
                s_col: kk as i64,
            },
        )
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
        let cin_pad = pad8(g.c_in);
        let packed = self.pack_for_dx(g, w, true)?;
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
        let kernel = if g.k == 1 {
            kernels::CONV2D_K1S1
        } else {
            kernels::CONV2D_K3S1
        };
        // The forward kernel binds a bias and the epilogue's operands; with
        // their flags at 0 they are never read.
        let none = self.ctx.placeholder()?;
        let binds = [
            Bind::Storage(&dy.buf),
            Bind::Storage(&packed),
            Bind::Storage(&none),
            Bind::Storage(&dx.buf),
            Bind::Storage(&none),
            Bind::Storage(&none),
        ];
        // Either forward family serves: the tiled one reads the (possibly
        // negative) padding as i32 too.
        let positions = g.batch * g.h * g.w;
        // The forward kernel's input here is dy: its width and this padding.
        let subgroup = self.subgroup_conv_fits(g.k, 1, pad, g.w_out);
        let launch = ConvLaunch {
            op: OP,
            class: tune::with_subgroup(
                format!(
                    "dx-{}",
                    tune::conv_class(g.k, 1, g.c_out, g.c_in, positions)
                ),
                subgroup,
            ),
            kernel,
            k: g.k,
            stride: 1,
            c_out: g.c_in,
            tiles,
            tiles_rows2: g.batch * g.h.div_ceil(2) * tiles_x,
            tiles_rows4: g.batch * g.h.div_ceil(4) * tiles_x,
            positions,
            subgroup,
        };
        let what = || format!("input gradient {:?}", dx.shape);
        self.launch_conv(&launch, &params, &binds, &dx.buf, &what)
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
        let cin_pad = pad8(g.c_in);
        let packed = self.pack_for_dx(g, w, false)?;
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
        let what = || format!("weight gradient {:?}", dw.shape);
        let groups = grid_3d(OP, [lanes.div_ceil(WG as usize), kk, splits], max, &what)?;
        // The kernel-row variant: lanes of 8 output × 4 input channels, one
        // kernel row each.
        let lanes_row = nco8 * g.c_in.div_ceil(4);
        let groups_row = grid_3d(
            OP,
            [lanes_row.div_ceil(WG as usize), g.k, splits],
            max,
            &what,
        )?;
        let part = if splits > 1 {
            Some(self.ctx.storage_output(OP, (n * splits) as u64 * 4)?)
        } else {
            None
        };
        let binds = [
            Bind::Storage(&dyt),
            Bind::Storage(&xt),
            Bind::Storage(part.as_ref().unwrap_or(&dw.buf)),
        ];
        let out = part.as_ref().unwrap_or(&dw.buf);
        self.dispatch_dw(g, &params, &binds, out, [groups, groups_row])?;
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

    /// The weight-gradient kernel, as the tuner picks among those that fit:
    /// the register-blocked one; its subgroup form where every subgroup lies
    /// in one Cout block (ceil(Cin / 8) a multiple of the subgroup size); the
    /// kernel-row one for 3×3 at stride 1, and its subgroup form where
    /// ceil(Cin / 4) is a multiple of the subgroup size. `groups`: the one-tap kernels'
    /// grid, then the kernel-row kernel's.
    fn dispatch_dw(
        &self,
        g: &ConvGeometry,
        params: &Conv2dBackwardWeightParams,
        binds: &[Bind],
        out: &GpuBuf,
        groups: [(u32, u32, u32); 2],
    ) -> Result<()> {
        let sg = self.ctx.subgroup_max as usize;
        let mut candidates = vec![Variant::RegisterBlocked];
        if self.ctx.subgroups8 && (params.nci8 as usize).is_multiple_of(sg) {
            candidates.push(Variant::Subgroup);
        }
        if g.k == 3 && g.stride == 1 {
            candidates.push(Variant::KernelRow);
            if self.ctx.subgroups8 && g.c_in.div_ceil(4).is_multiple_of(sg) {
                candidates.push(Variant::KernelRowSubgroup);
            }
        }
        let run = |v: Variant| {
            let (kernel, groups) = match v {
                Variant::Subgroup => (kernels::CONV2D_BACKWARD_WEIGHT_SUBGROUP, groups[0]),
                Variant::KernelRow => (kernels::CONV2D_BACKWARD_WEIGHT_ROW3, groups[1]),
                Variant::KernelRowSubgroup => {
                    (kernels::CONV2D_BACKWARD_WEIGHT_ROW3_SUBGROUP, groups[1])
                }
                _ => (kernels::CONV2D_BACKWARD_WEIGHT, groups[0]),
            };
            self.ctx.dispatch(kernel, &[], params, binds, groups)
        };
        if candidates.len() == 1 {
            return run(Variant::RegisterBlocked);
        }
        let positions = g.batch * g.h_out * g.w_out;
        let class = format!(
            "dw-{}",
            tune::conv_class(g.k, g.stride, g.c_in, g.c_out, positions)
        );
        self.run_tuned(&class, &candidates, out, &run)
    }
}
