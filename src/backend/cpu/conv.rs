//! conv2d on the CPU: im2col per image, then one GEMM `W[Cout, Cin·k²] × col[Cin·k², Ho·Wo]`.
//! Images run in parallel (one GEMM thread each) when the batch can feed every
//! core; a lone image lets the GEMM crate split its work instead. The
//! backward: GEMMs on the same im2col matrices, and col2im for dx.

use super::par::*;
use super::simd::vectorized;

use super::gemm::{sgemm, sgemm_ld, MatRef};
use super::math::plane_sums;
use super::{alloc_output, alloc_zeros, tensor, CpuTensor};
use crate::backend::{Conv2dGrads, ConvGeometry};
use crate::error::Result;

thread_local! {
    /// Each worker's im2col buffer, kept between calls: allocating (and zeroing)
    /// a fresh one per conv cost ~15 % of a U-net forward.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of `len` floats (contents undefined:
/// `f` must overwrite what it reads).
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut v = s.borrow_mut();
        if v.len() < len {
            v.resize(len, 0.0);
        }
        f(&mut v[..len])
    })
}

/// Output rows `oy0..oy1` of an image, the unit conv work is blocked in.
#[derive(Clone, Copy)]
struct RowBlock {
    oy0: usize,
    oy1: usize,
}

impl RowBlock {
    fn whole(g: &ConvGeometry) -> Self {
        RowBlock {
            oy0: 0,
            oy1: g.h_out,
        }
    }
    /// Output positions in the block: the im2col block's row length.
    fn len(&self, g: &ConvGeometry) -> usize {
        (self.oy1 - self.oy0) * g.w_out
    }
}

/// Splits the output rows into blocks whose im2col matrix (`kd × positions`)
/// stays near `COL_BLOCK_FLOATS`, so it is written and then read by the GEMM
/// from the core's L2 cache instead of memory (a whole 64×64 image's is 4.7 MB).
fn row_blocks(g: &ConvGeometry) -> impl Iterator<Item = RowBlock> {
    const COL_BLOCK_FLOATS: usize = 1 << 17;
    let kd = g.c_in * g.k * g.k;
    let rows = (COL_BLOCK_FLOATS / (kd * g.w_out).max(1)).clamp(1, g.h_out.max(1));
    let h = g.h_out;
    (0..h).step_by(rows).map(move |oy0| RowBlock {
        oy0,
        oy1: (oy0 + rows).min(h),
    })
}

/// Writes the im2col matrix of one image's output rows `blk`: row (ci, ky, kx),
/// column (oy − oy0, ox).
fn im2col(g: &ConvGeometry, x: &[f32], blk: RowBlock, col: &mut [f32]) {
    let plane = g.h * g.w;
    let rows = g.k * g.k * blk.len(g);
    for (xc, cc) in x.chunks(plane).zip(col.chunks_mut(rows)).take(g.c_in) {
        im2col_channel(g, xc, blk, cc);
    }
}

/// The im2col rows (ky, kx) of one input channel's `h × w` plane, for the
/// output rows `blk`.
fn im2col_channel(g: &ConvGeometry, plane: &[f32], blk: RowBlock, col: &mut [f32]) {
    let (k, s, p) = (g.k, g.stride, g.padding as isize);
    let n = blk.len(g);
    if s == 1 && g.h_out == g.h && g.w_out == g.w {
        for ky in 0..k {
            for kx in 0..k {
                let (dy, dx) = (ky as isize - p, kx as isize - p);
                im2col_same_row(g, plane, blk, (dy, dx), &mut col[(ky * k + kx) * n..][..n]);
            }
        }
        return;
    }
    for ky in 0..k {
        for kx in 0..k {
            let row = &mut col[(ky * k + kx) * n..][..n];
            for oy in blk.oy0..blk.oy1 {
                let iy = (oy * s + ky) as isize - p;
                let o = oy - blk.oy0;
                let dst = &mut row[o * g.w_out..(o + 1) * g.w_out];
                if iy < 0 || iy >= g.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                if s == 1 {
                    // Stride 1: the row is one shifted slice of the input row.
                    let shift = kx as isize - p;
                    let lo = (-shift).clamp(0, g.w_out as isize) as usize;
                    let hi = (g.w as isize - shift).clamp(lo as isize, g.w_out as isize) as usize;
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    let from = (lo as isize + shift) as usize;
                    dst[lo..hi].copy_from_slice(&src[from..from + hi - lo]);
                    continue;
                }
                for (ox, d) in dst.iter_mut().enumerate() {
                    let ix = (ox * s + kx) as isize - p;
                    *d = if ix >= 0 && ix < g.w as isize {
                        src[ix as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// One im2col row of a stride-1 "same" conv (output size = input size):
/// the input plane shifted by (dy, dx). Over the block's valid rows that is
/// ONE contiguous copy of the plane; only the `|dx|` columns at each row's
/// edge, which the copy filled from the neighbouring row, are then zeroed —
/// instead of a short copy and two fills per output row.
fn im2col_same_row(
    g: &ConvGeometry,
    plane: &[f32],
    blk: RowBlock,
    (dy, dx): (isize, isize),
    row: &mut [f32],
) {
    let (h, w) = (g.h as isize, g.w);
    // Output rows whose input row oy + dy exists.
    let lo = (-dy).clamp(blk.oy0 as isize, blk.oy1 as isize) as usize;
    let hi = (h - dy).clamp(lo as isize, blk.oy1 as isize) as usize;
    row[..(lo - blk.oy0) * w].fill(0.0);
    row[(hi - blk.oy0) * w..].fill(0.0);
    if lo == hi {
        return;
    }
    let dst = &mut row[(lo - blk.oy0) * w..(hi - blk.oy0) * w];
    // Source start, possibly one |dx| before the plane or running past its
    // end: those elements are edge columns, zeroed below anyway.
    let start = (lo as isize + dy) * w as isize + dx;
    let skip_front = (-start).max(0) as usize;
    let end = start + dst.len() as isize;
    let skip_back = (end - plane.len() as isize).max(0) as usize;
    let len = dst.len();
    dst[skip_front..len - skip_back].copy_from_slice(
        &plane[(start + skip_front as isize) as usize..(end - skip_back as isize) as usize],
    );
    let edge = dx.unsigned_abs().min(w);
    for r in dst.chunks_exact_mut(w) {
        // Plain stores: `fill` would be a memset call per row for one value.
        let r = if dx < 0 {
            &mut r[..edge]
        } else {
            &mut r[w - edge..]
        };
        for v in r {
            *v = 0.0;
        }
    }
}

/// `dst[c × r] = src[r × c]ᵀ`, both row-major, in cache-sized blocks.
pub(super) fn transpose(src: &[f32], r: usize, c: usize, dst: &mut [f32]) {
    const B: usize = 16;
    for i0 in (0..r).step_by(B) {
        for j0 in (0..c).step_by(B) {
            for i in i0..(i0 + B).min(r) {
                for j in j0..(j0 + B).min(c) {
                    dst[j * r + i] = src[i * c + j];
                }
            }
        }
    }
}

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

/// Image `i` of the batch: `out = epilogue(W∗x)`.
fn conv_one_image(
    g: &ConvGeometry,
    (i, x): (usize, &[f32]),
    w: &[f32],
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

/// Adds one input channel's rows of an im2col-layout gradient (rows (ky, kx),
/// columns (oy, ox)) into that channel's `h × w` plane: the transpose of im2col.
fn col2im_channel(g: &ConvGeometry, dcol: &[f32], blk: RowBlock, plane: &mut [f32]) {
    vectorized(
        #[inline(always)]
        || col2im_channel_body(g, dcol, blk, plane),
    )
}

#[inline(always)]
fn col2im_channel_body(g: &ConvGeometry, dcol: &[f32], blk: RowBlock, plane: &mut [f32]) {
    let (k, s, p) = (g.k, g.stride, g.padding as isize);
    let n = blk.len(g);
    for ky in 0..k {
        for kx in 0..k {
            let row = &dcol[(ky * k + kx) * n..][..n];
            for oy in blk.oy0..blk.oy1 {
                let iy = (oy * s + ky) as isize - p;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                let o = oy - blk.oy0;
                let src = &row[o * g.w_out..(o + 1) * g.w_out];
                if s == 1 {
                    // Output column ox reads input column ox + shift (as in im2col).
                    let shift = kx as isize - p;
                    let lo = (-shift).clamp(0, g.w_out as isize) as usize;
                    let hi = (g.w as isize - shift).clamp(lo as isize, g.w_out as isize) as usize;
                    let from = (lo as isize + shift) as usize;
                    for (d, &v) in dst[from..from + hi - lo].iter_mut().zip(&src[lo..hi]) {
                        *d += v;
                    }
                    continue;
                }
                for (ox, &v) in src.iter().enumerate() {
                    let ix = (ox * s + kx) as isize - p;
                    if ix >= 0 && ix < g.w as isize {
                        dst[ix as usize] += v;
                    }
                }
            }
        }
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

/// Grows `v` to at least `len` (old contents kept: callers overwrite what they read).
fn at_least(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
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
pub(super) fn conv2d_backward(
    g: &ConvGeometry,
    x: &CpuTensor,
    w: &CpuTensor,
    dy: &CpuTensor,
    threads: usize,
) -> Result<Conv2dGrads<CpuTensor>> {
    const OP: &str = "conv2d_backward";
    let n = g.h_out * g.w_out;
    let kd = g.c_in * g.k * g.k;
    let (in_len, out_len) = (g.c_in * g.h * g.w, g.c_out * n);

    // Bias: Σ over batch and space.
    let mut db = vec![0.0f64; g.c_out];
    if n > 0 {
        for row in plane_sums(&dy.data, n).chunks(g.c_out.max(1)) {
            db.iter_mut().zip(row).for_each(|(d, s)| *d += s);
        }
    }
    let db: Vec<f32> = db.into_iter().map(|v| v as f32).collect();

    // dx of a stride-1 "same" conv is itself such a conv of dy (below);
    // otherwise col2im adds into a zeroed dx.
    let dx_conv = dx_as_conv(g);
    let mut dx = match dx_conv {
        Some(_) => alloc_output(OP, &x.shape)?,
        None => alloc_zeros(OP, &x.shape)?,
    };
    let want_dx = dx_conv.is_none();
    // dwᵀ, kd × c_out: see `backward_image`.
    let mut dwt = alloc_zeros(OP, &w.shape)?;
    let with_sc =
        |f: &mut dyn FnMut(&mut ConvScratch)| BACKWARD_SCRATCH.with(|s| f(&mut s.borrow_mut()));
    if g.batch > 0 && in_len > 0 && out_len > 0 {
        if g.batch >= threads && threads > 1 {
            // Contiguous runs of images, one per thread, each summing its own
            // weight gradient; the partial sums are then added in run order,
            // so the result is the same on every run (resumed training is
            // bit-exact) — rayon's fold/reduce grouping would vary.
            let per = g.batch.div_ceil(threads);
            let partial: Vec<Vec<f32>> = dx
                .par_chunks_mut(in_len * per)
                .zip(x.data.par_chunks(in_len * per))
                .zip(dy.data.par_chunks(out_len * per))
                .map(|((dxr, xr), dyr)| {
                    let mut dwp = vec![0.0f32; g.c_out * kd];
                    with_sc(&mut |sc| {
                        for ((dxi, xi), dyi) in dxr
                            .chunks_mut(in_len)
                            .zip(xr.chunks(in_len))
                            .zip(dyr.chunks(out_len))
                        {
                            let dxi = want_dx.then_some(dxi);
                            backward_image(g, xi, &w.data, dyi, dxi, &mut dwp, sc, 1);
                        }
                    });
                    dwp
                })
                .collect();
            for p in partial {
                dwt.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
            }
        } else {
            with_sc(&mut |sc| {
                for ((dxi, xi), dyi) in dx
                    .chunks_mut(in_len)
                    .zip(x.data.chunks(in_len))
                    .zip(dy.data.chunks(out_len))
                {
                    let dxi = want_dx.then_some(dxi);
                    backward_image(g, xi, &w.data, dyi, dxi, &mut dwt, sc, threads);
                }
            });
        }
    }
    if let Some(gx) = dx_conv {
        let wf = flipped_transposed(g, &w.data);
        conv2d_forward(&gx, &dy.data, &wf, &Epilogue::bias(None), &mut dx, threads);
    }
    let mut dw = alloc_output(OP, &w.shape)?;
    transpose(&dwt, kd, g.c_out, &mut dw);
    Ok(Conv2dGrads {
        dx: tensor(dx, &x.shape),
        dw: tensor(dw, &w.shape),
        db: tensor(db, &[g.c_out]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col by its definition: row (ci, ky, kx), column (oy, ox).
    fn naive_im2col(g: &ConvGeometry, x: &[f32], blk: RowBlock) -> Vec<f32> {
        let (k, p) = (g.k as isize, g.padding as isize);
        let mut out = Vec::new();
        for ci in 0..g.c_in {
            for ky in 0..k {
                for kx in 0..k {
                    for oy in blk.oy0..blk.oy1 {
                        for ox in 0..g.w_out {
                            let iy = (oy * g.stride) as isize + ky - p;
                            let ix = (ox * g.stride) as isize + kx - p;
                            let inside =
                                (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix);
                            out.push(if inside {
                                x[ci * g.h * g.w + iy as usize * g.w + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// The "same"-conv fast path and the general path against the definition,
    /// on odd sizes, narrow planes (w ≤ padding) and every row block.
    #[test]
    fn im2col_matches_its_definition() {
        for (h, w, k, stride, padding) in [
            (5, 7, 3, 1, 1),
            (1, 1, 3, 1, 1),
            (2, 1, 3, 1, 1),
            (3, 2, 5, 1, 2),
            (6, 4, 1, 1, 0),
            (7, 5, 3, 2, 1),
            (4, 3, 3, 1, 0),
            (9, 9, 3, 1, 1),
        ] {
            let h_out = (h + 2 * padding - k) / stride + 1;
            let w_out = (w + 2 * padding - k) / stride + 1;
            let g = ConvGeometry {
                batch: 1,
                c_in: 2,
                h,
                w,
                c_out: 1,
                k,
                stride,
                padding,
                h_out,
                w_out,
            };
            let x: Vec<f32> = (0..2 * h * w).map(|i| 1.0 + i as f32).collect();
            for rows in 1..=h_out {
                for oy0 in (0..h_out).step_by(rows) {
                    let blk = RowBlock {
                        oy0,
                        oy1: (oy0 + rows).min(h_out),
                    };
                    let mut col = vec![f32::NAN; 2 * k * k * blk.len(&g)];
                    im2col(&g, &x, blk, &mut col);
                    assert_eq!(
                        col,
                        naive_im2col(&g, &x, blk),
                        "{h}×{w} k{k} s{stride} p{padding} rows {oy0}..{}",
                        blk.oy1
                    );
                }
            }
        }
    }
}
