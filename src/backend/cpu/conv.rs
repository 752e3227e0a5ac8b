//! conv2d on the CPU: im2col per image, then one GEMM `W[Cout, Cin·k²] × col[Cin·k², Ho·Wo]`.
//! Images run in parallel (one GEMM thread each) when the batch can feed every
//! core; a lone image lets the GEMM crate split its work instead.

use super::par::*;

use super::gemm::{sgemm, MatRef};
use crate::backend::ConvGeometry;

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

/// Writes the im2col matrix of one image TRANSPOSED ("im2row"): row (oy, ox),
/// column (ci, ky, kx). The weight gradient dW = dY·colᵀ needs colᵀ; the GEMM
/// crate packs a strided transpose element by element, which cost more than the
/// multiplication, so it gets a contiguous one. `out_rows` output rows (oy)
/// starting at `oy0`, for splitting the work.
pub(super) fn im2row(g: &ConvGeometry, x: &[f32], oy0: usize, rows: &mut [f32]) {
    let (k, s, p) = (g.k, g.stride, g.padding as isize);
    let kd = g.c_in * k * k;
    for (r, row) in rows.chunks_mut(kd).enumerate() {
        let (oy, ox) = (oy0 + r / g.w_out, r % g.w_out);
        for ci in 0..g.c_in {
            let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            for ky in 0..k {
                let iy = (oy * s + ky) as isize - p;
                let dst = &mut row[(ci * k + ky) * k..][..k];
                if iy < 0 || iy >= g.h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[iy as usize * g.w..][..g.w];
                for (kx, d) in dst.iter_mut().enumerate() {
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

/// Writes the im2col matrix of one image: row (ci, ky, kx), column (oy, ox).
pub(super) fn im2col(g: &ConvGeometry, x: &[f32], col: &mut [f32]) {
    let (k, s, p) = (g.k, g.stride, g.padding as isize);
    let n = g.h_out * g.w_out;
    for ci in 0..g.c_in {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * n..][..n];
                for oy in 0..g.h_out {
                    let iy = (oy * s + ky) as isize - p;
                    let dst = &mut row[oy * g.w_out..(oy + 1) * g.w_out];
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if s == 1 {
                        // Stride 1: the row is one shifted slice of the input row.
                        let shift = kx as isize - p;
                        let lo = (-shift).clamp(0, g.w_out as isize) as usize;
                        let hi =
                            (g.w as isize - shift).clamp(lo as isize, g.w_out as isize) as usize;
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
}

fn conv_one_image(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: usize,
) {
    let n = g.h_out * g.w_out;
    let kdim = g.c_in * g.k * g.k;
    if let Some(b) = bias {
        for (co, row) in out.chunks_mut(n).enumerate() {
            row.fill(b[co]);
        }
    }
    let wmat = MatRef::new(w, g.c_out, kdim);
    // A 1×1, stride-1, unpadded conv is already a GEMM on the input planes.
    if g.k == 1 && g.stride == 1 && g.padding == 0 {
        sgemm(wmat, MatRef::new(x, kdim, n), out, bias.is_some(), threads);
        return;
    }
    with_scratch(kdim * n, |col| {
        im2col(g, x, col);
        sgemm(
            wmat,
            MatRef::new(col, kdim, n),
            out,
            bias.is_some(),
            threads,
        );
    });
}

pub fn conv2d_forward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    threads: usize,
) {
    let in_len = g.c_in * g.h * g.w;
    let out_len = g.c_out * g.h_out * g.w_out;
    if in_len == 0 || out_len == 0 {
        return;
    }
    if g.batch >= threads {
        out.par_chunks_mut(out_len)
            .zip(x.par_chunks(in_len))
            .for_each(|(o, xi)| conv_one_image(g, xi, w, bias, o, 1));
    } else {
        for (o, xi) in out.chunks_mut(out_len).zip(x.chunks(in_len)) {
            conv_one_image(g, xi, w, bias, o, threads);
        }
    }
}
