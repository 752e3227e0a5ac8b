//! conv2d on the CPU: per image and block of output rows, im2col then one GEMM
//! `W[Cout, Cin·k²] × col[Cin·k², rows·Wo]` onto an output prefilled with the
//! epilogue; stride-1 "same" convs instead as one GEMM per kernel row over a
//! column-shifted copy of the input (k copies, not k²). Images run in
//! parallel (one GEMM thread each) when the batch can feed every core; a
//! lone image lets the GEMM crate split its work instead.
//! The backward: dWᵀ from the same im2col blocks; dx as a conv of dy where the
//! conv keeps the size, else a GEMM and col2im.

use super::im2col::{
    at_least, col2im_channel, column_shifts, im2col, im2col_channel, row_blocks, row_blocks_of,
    transpose, with_scratch, RowBlock, COL_BLOCK_FLOATS,
};
use super::par::*;

use super::gemm::{sgemm, sgemm_ld, MatRef};
use super::math::plane_sums;
use super::{alloc_output, alloc_zeros, tensor, CpuTensor};
use crate::backend::{Conv2dGrads, ConvGeometry};
use crate::error::Result;

/// What the forward adds to `W∗x`, for the whole batch (see
/// [`crate::backend::ConvEpilogue`]): `out = scale·(W∗x + bias + sample_bias + residual)`.
#[derive(Clone, Copy)]
pub(super) struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// `[B, Cout]`.
    pub sample_bias: Option<&'a [f32]>,
    /// Shaped like the output.
    pub residual: Option<&'a [f32]>,
    pub scale: f32,
}

impl<'a> Epilogue<'a> {
    pub fn bias(bias: Option<&'a [f32]>) -> Self {
        Epilogue {
            bias,
            sample_bias: None,
            residual: None,
            scale: 1.0,
        }
    }
    fn adds_anything(&self) -> bool {
        self.bias.is_some() || self.sample_bias.is_some() || self.residual.is_some()
    }
    /// Writes `scale·(bias + sample_bias + residual)` over image `i`'s output
    /// (rows of `n` positions): the GEMM then accumulates `scale·W∗x` onto it.
    fn prefill(&self, g: &ConvGeometry, i: usize, out: &mut [f32]) {
        let n = g.h_out * g.w_out;
        let res = self.residual.map(|r| &r[i * g.c_out * n..][..g.c_out * n]);
        for (co, row) in out.chunks_mut(n).enumerate() {
            let b = self.bias.map_or(0.0, |b| b[co])
                + self.sample_bias.map_or(0.0, |sb| sb[i * g.c_out + co]);
            match res {
                Some(r) => {
                    let r = &r[co * n..][..n];
                    for (o, &r) in row.iter_mut().zip(r) {
                        *o = self.scale * (b + r);
                    }
                }
                None => row.fill(self.scale * b),
            }
        }
    }
}

/// The weights of a stride-1 "same" conv (k > 1) split by kernel row, for
/// [`conv_by_kernel_rows`]: `[ky][co][ci, kx]`. `None` for other convs.
fn weights_by_kernel_row(g: &ConvGeometry, w: &[f32]) -> Option<Vec<f32>> {
    let same = g.stride == 1 && g.h_out == g.h && g.w_out == g.w && g.k == 2 * g.padding + 1;
    if !same || g.k == 1 {
        return None;
    }
    let (k, kk) = (g.k, g.k * g.k);
    let per_row = w.len() / k;
    let mut wk = vec![0.0; w.len()];
    // Element by element: a copy call per k floats cost more than the loop.
    for (j, taps) in w.chunks_exact(kk).enumerate() {
        for ky in 0..k {
            for kx in 0..k {
                wk[ky * per_row + j * k + kx] = taps[ky * k + kx];
            }
        }
    }
    Some(wk)
}

/// A stride-1 "same" conv as k GEMMs of depth Cin·k, one per kernel row ky,
/// all reading one column-shifted copy of the input ([`column_shifts`]) at
/// an offset of ky rows: k copies of the input instead of im2col's k², whose
/// copying was an eighth of a forward.
#[allow(clippy::too_many_arguments)]
fn conv_by_kernel_rows(
    g: &ConvGeometry,
    x: &[f32],
    wk: &[f32],
    (scale, acc): (f32, bool),
    out: &mut [f32],
    budget: usize,
    threads: usize,
) {
    let (k, w, n) = (g.k, g.w, g.h_out * g.w_out);
    let depth = g.c_in * k;
    let per_row = depth * w;
    let whole = std::iter::once(RowBlock::whole(g));
    // One image over several threads: one block gives the GEMMs most work.
    let blocks: Box<dyn Iterator<Item = RowBlock>> = if threads > 1 {
        Box::new(whole)
    } else {
        Box::new(row_blocks_of(g, per_row, budget))
    };
    for blk in blocks {
        let ld = (blk.oy1 - blk.oy0 + k - 1) * w;
        with_scratch(depth * ld, |xs| {
            column_shifts(g, x, blk, xs);
            for (ky, wrow) in wk.chunks(g.c_out * depth).enumerate() {
                let a = MatRef::new(wrow, g.c_out, depth);
                let b = MatRef {
                    data: &xs[ky * w..],
                    rows: depth,
                    cols: blk.len(g),
                    ld,
                    cs: 1,
                };
                let dst = &mut out[blk.oy0 * w..];
                sgemm_ld(a, b, dst, n, acc || ky > 0, scale, threads);
            }
        });
    }
}

/// Image `i` of the batch: `out = epilogue(W∗x)`. `wk`: the weights split by
/// kernel row when the conv is computed that way ([`weights_by_kernel_row`]).
fn conv_one_image(
    g: &ConvGeometry,
    (i, x): (usize, &[f32]),
    (w, wk): (&[f32], Option<&[f32]>),
    ep: &Epilogue,
    out: &mut [f32],
    threads: usize,
) {
    let n = g.h_out * g.w_out;
    let kdim = g.c_in * g.k * g.k;
    let acc = ep.adds_anything();
    if acc {
        ep.prefill(g, i, out);
    }
    if let Some(wk) = wk {
        let budget = COL_BLOCK_FLOATS;
        return conv_by_kernel_rows(g, x, wk, (ep.scale, acc), out, budget, threads);
    }
    let wmat = MatRef::new(w, g.c_out, kdim);
    // A 1×1, stride-1, unpadded conv is already a GEMM on the input planes.
    if g.k == 1 && g.stride == 1 && g.padding == 0 {
        let xmat = MatRef::new(x, kdim, n);
        sgemm_ld(wmat, xmat, out, n, acc, ep.scale, threads);
        return;
    }
    if threads > 1 {
        // One image, the GEMM split over threads: one big block feeds them best.
        return with_scratch(kdim * n, |col| {
            im2col(g, x, RowBlock::whole(g), col);
            let cols = MatRef::new(col, kdim, n);
            sgemm_ld(wmat, cols, out, n, acc, ep.scale, threads);
        });
    }
    for blk in row_blocks(g) {
        let nb = blk.len(g);
        with_scratch(kdim * nb, |col| {
            im2col(g, x, blk, col);
            let cols = MatRef::new(col, kdim, nb);
            let dst = &mut out[blk.oy0 * g.w_out..];
            sgemm_ld(wmat, cols, dst, n, acc, ep.scale, 1);
        });
    }
}

pub(super) fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    ep: &Epilogue,
    out: &mut [f32],
    threads: usize,
) {
    let in_len = g.c_in * g.h * g.w;
    let out_len = g.c_out * g.h_out * g.w_out;
    if out_len == 0 {
        return;
    }
    if in_len == 0 {
        // No input channels: the epilogue alone (`out` may hold old values).
        for (i, o) in out.chunks_mut(out_len).enumerate() {
            ep.prefill(g, i, o);
        }
        return;
    }
    // Whole rounds of images run one per thread; the images left over (a
    // batch of 5 on 2 threads) each get every thread, through the GEMM's own
    // split, rather than leaving threads idle while the last ones finish.
    let wk = weights_by_kernel_row(g, w);
    let w = (w, wk.as_deref());
    let split = g.batch - g.batch % threads;
    let (out_rounds, out_rest) = out.split_at_mut(split * out_len);
    let (x_rounds, x_rest) = x.split_at(split * in_len);
    out_rounds
        .par_chunks_mut(out_len)
        .zip(x_rounds.par_chunks(in_len))
        .enumerate()
        .for_each(|(i, (o, xi))| conv_one_image(g, (i, xi), w, ep, o, 1));
    let rest = out_rest.chunks_mut(out_len).zip(x_rest.chunks(in_len));
    for (j, (o, xi)) in rest.enumerate() {
        conv_one_image(g, (split + j, xi), w, ep, o, threads);
    }
}

thread_local! {
    /// Each worker's backward scratch, kept between calls like [`SCRATCH`].
    static BACKWARD_SCRATCH: std::cell::RefCell<ConvScratch> =
        const { std::cell::RefCell::new(ConvScratch { col: Vec::new(), dcol: Vec::new(), dyt: Vec::new() }) };
}

/// Scratch of one worker: im2col of the image, its gradient and dyᵀ.
struct ConvScratch {
    col: Vec<f32>,
    dcol: Vec<f32>,
    dyt: Vec<f32>,
}

/// Gradients of one image: `dwᵀ += col·dyᵀ`, `dx = col2im(Wᵀ·dy)` (`dx` zeroed
/// on entry). The weight gradient is accumulated TRANSPOSED (`kd × c_out`):
/// then both GEMM operands are plain row-major matrices (im2col and a
/// transposed dy, which is small), where `dw = dy·colᵀ` needed colᵀ, whose
/// element-by-element gather cost more than the multiplication.
/// `threads > 1` parallelises the GEMMs and the per-channel loops.
#[allow(clippy::too_many_arguments)]
fn backward_image(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    dwt: &mut [f32],
    sc: &mut ConvScratch,
    threads: usize,
) {
    let n = g.h_out * g.w_out;
    let kd = g.c_in * g.k * g.k;
    let dy_m = MatRef::new(dy, g.c_out, n);
    let w_t = MatRef::new(w, g.c_out, kd).t();
    let ConvScratch { col, dcol, dyt } = sc;
    let dyt = at_least(dyt, n * g.c_out);
    transpose(dy, g.c_out, n, dyt);
    let dyt = MatRef::new(dyt, n, g.c_out);
    if g.k == 1 && g.stride == 1 && g.padding == 0 {
        // The im2col matrix is the input itself.
        sgemm(MatRef::new(x, kd, n), dyt, dwt, true, threads);
        if let Some(dx) = dx {
            sgemm(w_t, dy_m, dx, false, threads);
        }
        return;
    }
    if threads > 1 {
        return backward_image_parallel(g, x, w_t, dy_m, dyt, dx, dwt, (col, dcol), threads);
    }
    // Blocks of output rows, as in the forward: each block's im2col matrix
    // and its gradient stay in L2.
    let plane = g.h * g.w;
    for blk in row_blocks(g) {
        let nb = blk.len(g);
        let col = at_least(col, kd * nb);
        im2col(g, x, blk, col);
        let dyt_b = MatRef::new(&dyt.data[blk.oy0 * g.w_out * g.c_out..], nb, g.c_out);
        sgemm(MatRef::new(col, kd, nb), dyt_b, dwt, true, 1);
        let Some(dx) = dx.as_deref_mut() else {
            continue;
        };
        let dy_b = MatRef {
            data: &dy[blk.oy0 * g.w_out..],
            cols: nb,
            ..dy_m
        };
        let dcol = at_least(dcol, kd * nb);
        sgemm(w_t, dy_b, dcol, false, 1);
        let rows = g.k * g.k * nb;
        for (p, d) in dx.chunks_mut(plane).zip(dcol.chunks(rows)) {
            col2im_channel(g, d, blk, p);
        }
    }
}

/// [`backward_image`] of a lone image: whole-image matrices, the GEMMs and
/// the per-channel loops split over `threads`.
#[allow(clippy::too_many_arguments)]
fn backward_image_parallel(
    g: &ConvGeometry,
    x: &[f32],
    w_t: MatRef,
    dy_m: MatRef,
    dyt: MatRef,
    dx: Option<&mut [f32]>,
    dwt: &mut [f32],
    (col, dcol): (&mut Vec<f32>, &mut Vec<f32>),
    threads: usize,
) {
    let (n, kd) = (g.h_out * g.w_out, g.c_in * g.k * g.k);
    let (plane, rows, whole) = (g.h * g.w, g.k * g.k * n, RowBlock::whole(g));
    let col = at_least(col, kd * n);
    col.par_chunks_mut(rows)
        .zip(x.par_chunks(plane))
        .for_each(|(c, xc)| im2col_channel(g, xc, whole, c));
    sgemm(MatRef::new(col, kd, n), dyt, dwt, true, threads);
    let Some(dx) = dx else {
        return;
    };
    let dcol = at_least(dcol, kd * n);
    sgemm(w_t, dy_m, dcol, false, threads);
    dx.par_chunks_mut(plane)
        .zip(dcol.par_chunks(rows))
        .for_each(|(p, d)| col2im_channel(g, d, whole, p));
}

/// The conv whose forward is the input gradient of `g`, when `g` has stride 1
/// and keeps the size ("same" padding, k = 2p + 1): dx = conv(dy, W flipped
/// in space, in/out channels swapped), padding p again. A forward conv (a
/// contiguous im2col and one GEMM straight into dx) costs less than the GEMM
/// into an im2col-shaped gradient and its scatter-add back (col2im). 1×1 convs
/// keep their single GEMM.
fn dx_as_conv(g: &ConvGeometry) -> Option<ConvGeometry> {
    let same = g.stride == 1 && g.h_out == g.h && g.w_out == g.w && g.k == 2 * g.padding + 1;
    (same && g.k > 1).then_some(ConvGeometry {
        c_in: g.c_out,
        c_out: g.c_in,
        h: g.h_out,
        w: g.w_out,
        ..*g
    })
}

/// `W[co, ci, ky, kx]` as `W'[ci, co, k−1−ky, k−1−kx]`: the weights of [`dx_as_conv`].
fn flipped_transposed(g: &ConvGeometry, w: &[f32]) -> Vec<f32> {
    let kk = g.k * g.k;
    let mut wf = vec![0.0; w.len()];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            let src = &w[(co * g.c_in + ci) * kk..][..kk];
            let dst = &mut wf[(ci * g.c_out + co) * kk..][..kk];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    wf
}

/// dx, dw and db of a conv2d. Images run in parallel, each run of images
/// summing its own weight gradient, when the batch can feed every thread.
/// Σ of dy over batch and space, per output channel.
fn bias_grad(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    let n = g.h_out * g.w_out;
    let mut db = vec![0.0f64; g.c_out];
    if n > 0 {
        for row in plane_sums(dy, n).chunks(g.c_out.max(1)) {
            db.iter_mut().zip(row).for_each(|(d, s)| *d += s);
        }
    }
    db.into_iter().map(|v| v as f32).collect()
}

/// dx, dw and db of a conv2d.
pub(super) fn conv2d_backward(
    g: &ConvGeometry,
    x: &CpuTensor,
    w: &CpuTensor,
    dy: &CpuTensor,
    threads: usize,
) -> Result<Conv2dGrads<CpuTensor>> {
    const OP: &str = "conv2d_backward";
    // dx of a stride-1 "same" conv is itself such a conv of dy (below);
    // otherwise col2im adds into a zeroed dx.
    let dx_conv = dx_as_conv(g);
    let mut dx = match dx_conv {
        Some(_) => alloc_output(OP, &x.shape)?,
        None => alloc_zeros(OP, &x.shape)?,
    };
    // dwᵀ, kd × c_out: see `backward_image`.
    let mut dwt = alloc_zeros(OP, &w.shape)?;
    let want_dx = dx_conv.is_none();
    per_image_grads(
        g,
        (&x.data, &w.data, &dy.data),
        &mut dx,
        &mut dwt,
        want_dx,
        threads,
    );
    if let Some(gx) = dx_conv {
        let wf = flipped_transposed(g, &w.data);
        conv2d_forward(&gx, &dy.data, &wf, &Epilogue::bias(None), &mut dx, threads);
    }
    let mut dw = alloc_output(OP, &w.shape)?;
    transpose(&dwt, g.c_in * g.k * g.k, g.c_out, &mut dw);
    Ok(Conv2dGrads {
        dx: tensor(dx, &x.shape),
        dw: tensor(dw, &w.shape),
        db: tensor(bias_grad(g, &dy.data), &[g.c_out]),
    })
}

/// [`backward_image`] over the batch: dWᵀ summed into `dwt`, dx (when
/// `want_dx`) into `dx`. Images run in parallel when the batch can feed
/// every thread, each contiguous run of them summing its own dWᵀ; the
/// partial sums are then added in run order, so the result is the same on
/// every run (resumed training is bit-exact) — rayon's fold/reduce grouping
/// would vary.
fn per_image_grads(
    g: &ConvGeometry,
    (x, w, dy): (&[f32], &[f32], &[f32]),
    dx: &mut [f32],
    dwt: &mut [f32],
    want_dx: bool,
    threads: usize,
) {
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * g.h_out * g.w_out);
    if g.batch == 0 || in_len == 0 || out_len == 0 {
        return;
    }
    let with_sc =
        |f: &mut dyn FnMut(&mut ConvScratch)| BACKWARD_SCRATCH.with(|s| f(&mut s.borrow_mut()));
    // A run of consecutive images, summing into `dw`.
    let run = |dxr: &mut [f32], xr: &[f32], dyr: &[f32], dw: &mut [f32], threads: usize| {
        with_sc(&mut |sc| {
            let images = dxr
                .chunks_mut(in_len)
                .zip(xr.chunks(in_len))
                .zip(dyr.chunks(out_len));
            for ((dxi, xi), dyi) in images {
                let dxi = want_dx.then_some(dxi);
                backward_image(g, xi, w, dyi, dxi, dw, sc, threads);
            }
        })
    };
    if g.batch >= threads && threads > 1 {
        let per = g.batch.div_ceil(threads);
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(in_len * per)
            .zip(x.par_chunks(in_len * per))
            .zip(dy.par_chunks(out_len * per))
            .map(|((dxr, xr), dyr)| {
                let mut dwp = vec![0.0f32; dwt.len()];
                run(dxr, xr, dyr, &mut dwp, 1);
                dwp
            })
            .collect();
        for p in partial {
            dwt.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
    } else {
        run(dx, x, dy, dwt, threads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "same" conv by its definition, no bias.
    fn naive_same_conv(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (k, p) = (g.k as isize, g.padding as isize);
        let mut out = vec![0.0f32; g.c_out * g.h * g.w];
        for co in 0..g.c_out {
            for oy in 0..g.h as isize {
                for ox in 0..g.w as isize {
                    let mut acc = 0.0f64;
                    for ci in 0..g.c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (oy + ky - p, ox + kx - p);
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let wv =
                                    w[((co * g.c_in + ci) * g.k + ky as usize) * g.k + kx as usize];
                                let xv = x[(ci * g.h + iy as usize) * g.w + ix as usize];
                                acc += (wv * xv) as f64;
                            }
                        }
                    }
                    out[(co * g.h + oy as usize) * g.w + ox as usize] = acc as f32;
                }
            }
        }
        out
    }

    /// The kernel-row conv against the definition for every block height
    /// (down to one row, where the halo is most of the block), 3×3 and 5×5,
    /// one thread and two, narrow planes included.
    #[test]
    fn the_conv_by_kernel_rows_matches_the_definition_for_every_block() {
        for (c_in, c_out, h, w, k) in [(3, 4, 7, 5, 3), (2, 3, 6, 9, 5), (1, 2, 4, 1, 3)] {
            let g = ConvGeometry {
                batch: 1,
                c_in,
                h,
                w,
                c_out,
                k,
                stride: 1,
                padding: k / 2,
                h_out: h,
                w_out: w,
            };
            let x: Vec<f32> = (0..c_in * h * w)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let wt: Vec<f32> = (0..c_out * c_in * k * k)
                .map(|i| ((i * 5) % 13) as f32 * 0.1 - 0.6)
                .collect();
            let want = naive_same_conv(&g, &x, &wt);
            let wk = weights_by_kernel_row(&g, &wt).expect("a same conv");
            for rows in 1..=h {
                for threads in [1, 2] {
                    let mut out = vec![f32::NAN; want.len()];
                    let budget = rows * c_in * k * w;
                    conv_by_kernel_rows(&g, &x, &wk, (1.0, false), &mut out, budget, threads);
                    for (j, (a, b)) in out.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                            "{c_in}→{c_out} {h}×{w} k{k}, {rows}-row blocks, {threads} threads: [{j}] {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// Only stride-1 convs that keep the size (k > 1) take the kernel-row path.
    #[test]
    fn only_same_convs_are_split_by_kernel_row() {
        let g = |k, stride, padding, h_out| ConvGeometry {
            batch: 1,
            c_in: 1,
            h: 8,
            w: 8,
            c_out: 1,
            k,
            stride,
            padding,
            h_out,
            w_out: h_out,
        };
        let w = vec![0.0; 9];
        assert!(weights_by_kernel_row(&g(3, 1, 1, 8), &w).is_some());
        assert!(weights_by_kernel_row(&g(3, 2, 1, 4), &w).is_none());
        assert!(weights_by_kernel_row(&g(3, 1, 0, 6), &w).is_none());
        assert!(weights_by_kernel_row(&g(1, 1, 0, 8), &w[..1]).is_none());
    }
}
