//! [`MatOps`] on the CPU: conv2d gradients as GEMMs on im2col matrices,
//! batched matmul on strided views, row softmax.

use super::par::*;

use super::conv::im2row;
use super::gemm::{sgemm, MatRef};
use super::layer_ops::{exp_f32, plane_sums, tensor, CHUNK};
use super::{alloc_zeros, CpuBackend, CpuTensor};
use crate::backend::nn_ops::{Conv2dGrads, MatOps};
use crate::backend::{Conv2dSpec, ConvGeometry};
use crate::error::{Error, Result};

/// Adds one input channel's rows of an im2col-layout gradient (rows (ky, kx),
/// columns (oy, ox)) into that channel's `h × w` plane: the transpose of im2col.
fn col2im_channel(g: &ConvGeometry, dcol: &[f32], plane: &mut [f32]) {
    let (k, s, p) = (g.k, g.stride, g.padding as isize);
    let n = g.h_out * g.w_out;
    for ky in 0..k {
        for kx in 0..k {
            let row = &dcol[(ky * k + kx) * n..][..n];
            for oy in 0..g.h_out {
                let iy = (oy * s + ky) as isize - p;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                let src = &row[oy * g.w_out..(oy + 1) * g.w_out];
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

/// Scratch of one worker: im2col of the image and its gradient.
struct ConvScratch {
    col: Vec<f32>,
    dcol: Vec<f32>,
}

/// Gradients of one image: `dw += dy·colᵀ`, `dx = col2im(Wᵀ·dy)` (`dx` zeroed
/// on entry). `threads > 1` parallelises the GEMMs and the per-channel loops.
#[allow(clippy::too_many_arguments)]
fn backward_image(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    sc: &mut ConvScratch,
    threads: usize,
) {
    let n = g.h_out * g.w_out;
    let kd = g.c_in * g.k * g.k;
    let dy_m = MatRef::new(dy, g.c_out, n);
    let w_t = MatRef::new(w, g.c_out, kd).t();
    if g.k == 1 && g.stride == 1 && g.padding == 0 {
        // The im2col matrix is the input itself.
        sgemm(dy_m, MatRef::new(x, kd, n).t(), dw, true, threads);
        sgemm(w_t, dy_m, dx, false, threads);
        return;
    }
    let plane = g.h * g.w;
    let rows = g.k * g.k * n;
    // colᵀ (n × kd), contiguous: see `im2row`.
    sc.col.resize(kd * n, 0.0);
    sc.dcol.resize(kd * n, 0.0);
    let line = g.w_out * kd;
    if threads > 1 {
        sc.col
            .par_chunks_mut(line)
            .enumerate()
            .for_each(|(oy, r)| im2row(g, x, oy, r));
    } else {
        im2row(g, x, 0, &mut sc.col);
    }
    sgemm(dy_m, MatRef::new(&sc.col, n, kd), dw, true, threads);
    sgemm(w_t, dy_m, &mut sc.dcol, false, threads);
    if threads > 1 {
        dx.par_chunks_mut(plane)
            .zip(sc.dcol.par_chunks(rows))
            .for_each(|(p, d)| col2im_channel(g, d, p));
    } else {
        for (p, d) in dx.chunks_mut(plane).zip(sc.dcol.chunks(rows)) {
            col2im_channel(g, d, p);
        }
    }
}

/// `[B, R, C]` or `[R, C]` → (batch if any, R, C).
fn bmm_operand(what: &str, shape: &[usize]) -> Result<(Option<usize>, usize, usize)> {
    match *shape {
        [r, c] => Ok((None, r, c)),
        [b, r, c] => Ok((Some(b), r, c)),
        _ => Err(Error::shape(
            "bmm",
            format!("{what} {shape:?} must be [B, rows, cols] or [rows, cols]"),
        )),
    }
}

/// Matrix `i` of a bmm operand (`len` elements each; an unbatched operand is
/// the same matrix for every i), transposed as a strided view when `t`.
fn bmm_view(d: &[f32], batched: bool, i: usize, rows: usize, cols: usize, t: bool) -> MatRef<'_> {
    let len = rows * cols;
    let v = MatRef::new(
        if batched {
            &d[i * len..(i + 1) * len]
        } else {
            d
        },
        rows,
        cols,
    );
    if t {
        v.t()
    } else {
        v
    }
}

/// Rows per parallel softmax task: about [`CHUNK`] elements each.
fn rows_per_task(n: usize) -> usize {
    (CHUNK / n.max(1)).max(1)
}

impl MatOps for CpuBackend {
    fn conv2d_backward(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        dy: &CpuTensor,
        spec: Conv2dSpec,
    ) -> Result<Conv2dGrads<CpuTensor>> {
        const OP: &str = "conv2d_backward";
        let g = ConvGeometry::new(&x.shape, &w.shape, None, spec).map_err(|e| match e {
            Error::Shape { detail, .. } => Error::shape(OP, detail),
            e => e,
        })?;
        if dy.shape != g.out_shape() {
            return Err(Error::shape(
                OP,
                format!(
                    "dy {:?} is not the conv output shape {:?}",
                    dy.shape,
                    g.out_shape()
                ),
            ));
        }
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

        let mut dx = alloc_zeros(OP, &x.shape)?;
        let mut dw = alloc_zeros(OP, &w.shape)?;
        if g.batch > 0 && in_len > 0 && out_len > 0 {
            let scratch = || ConvScratch {
                col: Vec::new(),
                dcol: Vec::new(),
            };
            let threads = self.threads;
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
                        let (mut sc, mut dwp) = (scratch(), vec![0.0f32; g.c_out * kd]);
                        for ((dxi, xi), dyi) in dxr
                            .chunks_mut(in_len)
                            .zip(xr.chunks(in_len))
                            .zip(dyr.chunks(out_len))
                        {
                            backward_image(&g, xi, &w.data, dyi, dxi, &mut dwp, &mut sc, 1);
                        }
                        dwp
                    })
                    .collect();
                for p in partial {
                    dw.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
                }
            } else {
                let mut sc = scratch();
                for ((dxi, xi), dyi) in dx
                    .chunks_mut(in_len)
                    .zip(x.data.chunks(in_len))
                    .zip(dy.data.chunks(out_len))
                {
                    backward_image(&g, xi, &w.data, dyi, dxi, &mut dw, &mut sc, threads);
                }
            }
        }
        Ok(Conv2dGrads {
            dx: tensor(dx, &x.shape),
            dw: tensor(dw, &w.shape),
            db: tensor(db, &[g.c_out]),
        })
    }

    fn bmm(&self, a: &CpuTensor, b: &CpuTensor, ta: bool, tb: bool) -> Result<CpuTensor> {
        const OP: &str = "bmm";
        let (ab, ar, ac) = bmm_operand("a", &a.shape)?;
        let (bb, br, bc) = bmm_operand("b", &b.shape)?;
        let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if tb { (bc, br) } else { (br, bc) };
        if k != k2 {
            return Err(Error::shape(
                OP,
                format!(
                    "{:?}{} × {:?}{}: inner dimensions {k} and {k2} differ",
                    a.shape,
                    if ta { "ᵀ" } else { "" },
                    b.shape,
                    if tb { "ᵀ" } else { "" }
                ),
            ));
        }
        let batch = match (ab, bb) {
            (Some(x), Some(y)) if x != y => {
                return Err(Error::shape(
                    OP,
                    format!("batches differ: {:?} vs {:?}", a.shape, b.shape),
                ))
            }
            (Some(x), _) | (None, Some(x)) => Some(x),
            (None, None) => None,
        };
        let shape = match batch {
            Some(nb) => vec![nb, m, n],
            None => vec![m, n],
        };
        let mut c = alloc_zeros(OP, &shape)?;
        let nb = batch.unwrap_or(1);
        if c.is_empty() {
            return Ok(tensor(c, &shape));
        }
        // The i-th operand matrices, transposes as strided views.
        let a_i = |i| bmm_view(&a.data, ab.is_some(), i, ar, ac, ta);
        let b_i = |i| bmm_view(&b.data, bb.is_some(), i, br, bc, tb);
        let threads = self.threads;
        if ab.is_some() && bb.is_none() && !ta {
            // A batch of row-major A against one B: a single [B·M, K] GEMM.
            sgemm(
                MatRef::new(&a.data, nb * m, k),
                b_i(0),
                &mut c,
                false,
                threads,
            );
        } else if nb >= threads && threads > 1 {
            c.par_chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, ci)| sgemm(a_i(i), b_i(i), ci, false, 1));
        } else {
            for (i, ci) in c.chunks_mut(m * n).enumerate() {
                sgemm(a_i(i), b_i(i), ci, false, threads);
            }
        }
        Ok(tensor(c, &shape))
    }

    fn softmax(&self, x: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "softmax";
        let Some(&n) = x.shape.last() else {
            return Err(Error::shape(OP, "a scalar has no axis to normalise"));
        };
        let mut y = alloc_zeros(OP, &x.shape)?;
        if n > 0 {
            let rpt = rows_per_task(n);
            y.par_chunks_mut(rpt * n)
                .zip(x.data.par_chunks(rpt * n))
                .for_each(|(ys, xs)| {
                    for (y, x) in ys.chunks_mut(n).zip(xs.chunks(n)) {
                        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let mut sum = 0.0f32;
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = exp_f32(x - max);
                            sum += *y;
                        }
                        let inv = 1.0 / sum;
                        y.iter_mut().for_each(|y| *y *= inv);
                    }
                });
        }
        Ok(tensor(y, &x.shape))
    }

    fn softmax_backward(&self, y: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "softmax_backward";
        if y.shape != dy.shape {
            return Err(Error::shape(
                OP,
                format!("y {:?} and dy {:?} differ", y.shape, dy.shape),
            ));
        }
        let Some(&n) = y.shape.last() else {
            return Err(Error::shape(OP, "a scalar has no axis to normalise"));
        };
        let mut dx = alloc_zeros(OP, &y.shape)?;
        if n > 0 {
            let rpt = rows_per_task(n);
            dx.par_chunks_mut(rpt * n)
                .zip(y.data.par_chunks(rpt * n))
                .zip(dy.data.par_chunks(rpt * n))
                .for_each(|((dxs, ys), dys)| {
                    for ((dx, y), dy) in dxs.chunks_mut(n).zip(ys.chunks(n)).zip(dys.chunks(n)) {
                        let dot: f32 = y.iter().zip(dy).map(|(&y, &d)| y * d).sum();
                        for ((dx, &y), &d) in dx.iter_mut().zip(y).zip(dy) {
                            *dx = y * (d - dot);
                        }
                    }
                });
        }
        Ok(tensor(dx, &y.shape))
    }
}
