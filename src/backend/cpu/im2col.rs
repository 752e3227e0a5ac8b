//! The data movement around the CPU convolution's GEMMs: im2col (and its
//! transpose, col2im) over blocks of output rows, a blocked transpose, and
//! each worker's scratch buffer.

use super::simd::vectorized;
use crate::backend::ConvGeometry;

thread_local! {
    /// Each worker's im2col buffer, kept between calls: allocating (and zeroing)
    /// a fresh one per conv cost ~15 % of a U-net forward.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of `len` floats (contents undefined:
/// `f` must overwrite what it reads).
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| f(at_least(&mut s.borrow_mut(), len)))
}

/// The first `len` floats of a scratch `v`, grown if needed (old contents
/// kept: callers overwrite what they read).
pub(super) fn at_least(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// Output rows `oy0..oy1` of an image, the unit conv work is blocked in.
#[derive(Clone, Copy)]
pub(super) struct RowBlock {
    pub oy0: usize,
    pub oy1: usize,
}

impl RowBlock {
    pub(super) fn whole(g: &ConvGeometry) -> Self {
        RowBlock {
            oy0: 0,
            oy1: g.h_out,
        }
    }
    /// Output positions in the block: the im2col block's row length.
    pub(super) fn len(&self, g: &ConvGeometry) -> usize {
        (self.oy1 - self.oy0) * g.w_out
    }
}

/// Splits the output rows into blocks whose im2col matrix (`kd × positions`)
/// stays near `COL_BLOCK_FLOATS`, so it is written and then read by the GEMM
/// from the core's L2 cache instead of memory (a whole 64×64 image's is 4.7 MB).
pub(super) fn row_blocks(g: &ConvGeometry) -> impl Iterator<Item = RowBlock> {
    row_blocks_of(g, g.c_in * g.k * g.k * g.w_out, COL_BLOCK_FLOATS)
}

/// The L2-sized scratch budget of one block, in floats (512 KiB).
pub(super) const COL_BLOCK_FLOATS: usize = 1 << 17;

/// Blocks of output rows, each with about `budget / floats_per_row` rows.
pub(super) fn row_blocks_of(
    g: &ConvGeometry,
    floats_per_row: usize,
    budget: usize,
) -> impl Iterator<Item = RowBlock> {
    let rows = (budget / floats_per_row.max(1)).clamp(1, g.h_out.max(1));
    let h = g.h_out;
    (0..h).step_by(rows).map(move |oy0| RowBlock {
        oy0,
        oy1: (oy0 + rows).min(h),
    })
}

/// Writes the im2col matrix of one image's output rows `blk`: row (ci, ky, kx),
/// column (oy − oy0, ox).
pub(super) fn im2col(g: &ConvGeometry, x: &[f32], blk: RowBlock, col: &mut [f32]) {
    let plane = g.h * g.w;
    let rows = g.k * g.k * blk.len(g);
    for (xc, cc) in x.chunks(plane).zip(col.chunks_mut(rows)).take(g.c_in) {
        im2col_channel(g, xc, blk, cc);
    }
}

/// The im2col rows (ky, kx) of one input channel's `h × w` plane, for the
/// output rows `blk`.
pub(super) fn im2col_channel(g: &ConvGeometry, plane: &[f32], blk: RowBlock, col: &mut [f32]) {
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

/// The operand of a stride-1 "same" conv computed one kernel row at a time
/// (see `conv::conv_by_kernel_rows`): row (ci, kx), column (r, ox) holds input
/// pixel (oy0 − p + r, ox + kx − p), zero outside the plane, for the block's
/// rows and the k − 1 rows of halo below them. Kernel row ky then reads the
/// same matrix shifted by ky image rows, so this is k copies of the input
/// where im2col makes k².
pub(super) fn column_shifts(g: &ConvGeometry, x: &[f32], blk: RowBlock, xs: &mut [f32]) {
    let with_halo = RowBlock {
        oy0: blk.oy0,
        oy1: blk.oy1 + g.k - 1,
    };
    let (len, p) = (with_halo.len(g), g.padding as isize);
    let chunks = xs.chunks_mut(g.k * len);
    for (plane, cc) in x.chunks(g.h * g.w).zip(chunks).take(g.c_in) {
        for kx in 0..g.k {
            let shift = (-p, kx as isize - p);
            im2col_same_row(g, plane, with_halo, shift, &mut cc[kx * len..][..len]);
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

/// Adds one input channel's rows of an im2col-layout gradient (rows (ky, kx),
/// columns (oy, ox)) into that channel's `h × w` plane: the transpose of im2col.
pub(super) fn col2im_channel(g: &ConvGeometry, dcol: &[f32], blk: RowBlock, plane: &mut [f32]) {
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
