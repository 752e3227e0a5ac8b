//! [`LayerOps`] on the CPU: pointwise ops, GroupNorm, biases, resampling and
//! shape ops, parallel with rayon over fixed-size chunks or whole channel planes.

use std::sync::Arc;

use super::par::*;

use super::{alloc_zeros, CpuBackend, CpuTensor};
use crate::backend::nn_ops::{GroupNormGrads, GroupNormOut, LayerOps};
use crate::backend::numel;
use crate::backend::shape_check::{channel_dims, group_size, image_dims, pair_dims, same_shape};
use crate::error::{Error, Result};
use crate::rng::RngStream;

/// Elements per parallel task for pointwise work (a multiple of 4, so RNG
/// chunks start on Philox block boundaries).
pub(super) const CHUNK: usize = 1 << 14;

/// A tensor owning `data` with `shape` (the caller guarantees the element count).
pub(super) fn tensor(data: Vec<f32>, shape: &[usize]) -> CpuTensor {
    debug_assert_eq!(
        Some(data.len()),
        shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    );
    CpuTensor {
        data: Arc::new(data),
        shape: shape.to_vec(),
    }
}

/// e^x for x in [−87, 87] (arguments outside are clamped, NaN stays NaN),
/// within ~2 ulp: Cephes `expf`, written with selects and integer bit tricks
/// so that loops over it vectorise (libm's `expf` is a call per element).
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n from n's bits: |n| ≤ 126, so the biased exponent stays in 1..=253.
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits());
    p * f32::from_bits(ni.wrapping_add(127) << 23)
}

/// Σ v in f64, eight independent lanes so the loop vectorises.
pub(super) fn sum_f64(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| x as f64).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Σ (v − m)² in f64.
fn centered_sq_f64(v: &[f32], m: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| (x as f64 - m) * (x as f64 - m))
        .sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            let d = x as f64 - m;
            *a += d * d;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Σ d·(v − m) in f64.
fn centered_dot_f64(d: &[f32], v: &[f32], m: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let (dc, vc) = (d.chunks_exact(8), v.chunks_exact(8));
    let tail: f64 = dc
        .remainder()
        .iter()
        .zip(vc.remainder())
        .map(|(&d, &x)| d as f64 * (x as f64 - m))
        .sum();
    for (dd, vv) in dc.zip(vc) {
        for ((a, &d), &x) in acc.iter_mut().zip(dd).zip(vv) {
            *a += d as f64 * (x as f64 - m);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Planes per parallel task, so each task gets about [`CHUNK`] elements.
fn planes_per_task(plane: usize) -> usize {
    (CHUNK / plane.max(1)).max(1)
}

/// Σ of each plane of length `plane` (f64), in parallel.
pub(super) fn plane_sums(x: &[f32], plane: usize) -> Vec<f64> {
    if plane == 0 {
        return Vec::new();
    }
    let mut sums = vec![0.0f64; x.len() / plane];
    let ppt = planes_per_task(plane);
    sums.par_chunks_mut(ppt)
        .zip(x.par_chunks(ppt * plane))
        .for_each(|(s, xs)| {
            for (s, p) in s.iter_mut().zip(xs.chunks(plane)) {
                *s = sum_f64(p);
            }
        });
    sums
}

/// Σ over the batch of per-(b, c) values: `[B·C]` → `[C]`.
fn reduce_batch(v: &[f64], c: usize) -> Vec<f32> {
    let mut out = vec![0.0f64; c];
    if c > 0 {
        for row in v.chunks(c) {
            for (o, &x) in out.iter_mut().zip(row) {
                *o += x;
            }
        }
    }
    out.into_iter().map(|x| x as f32).collect()
}

/// out = f(a) elementwise, in parallel. (Plain loops over slices: they
/// vectorise reliably, where rayon's collect depends on inlining luck.)
fn map1(op: &'static str, a: &CpuTensor, f: impl Fn(f32) -> f32 + Sync) -> Result<CpuTensor> {
    let mut out = alloc_zeros(op, &a.shape)?;
    out.par_chunks_mut(CHUNK)
        .zip(a.data.par_chunks(CHUNK))
        .for_each(|(o, a)| {
            for (o, &a) in o.iter_mut().zip(a) {
                *o = f(a);
            }
        });
    Ok(tensor(out, &a.shape))
}

/// out = f(a, b) elementwise over two same-shaped tensors, in parallel.
fn map2(
    op: &'static str,
    a: &CpuTensor,
    b: &CpuTensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<CpuTensor> {
    same_shape(op, "operands differ", &a.shape, &b.shape)?;
    let mut out = alloc_zeros(op, &a.shape)?;
    out.par_chunks_mut(CHUNK)
        .zip(a.data.par_chunks(CHUNK))
        .zip(b.data.par_chunks(CHUNK))
        .for_each(|((o, a), b)| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
    Ok(tensor(out, &a.shape))
}

/// Runs `f(scratch, plane index, input plane, output plane)` over matching
/// planes of `x` (length `in_plane`) and `out` (length `out_plane`), grouping
/// small planes so each task has about [`CHUNK`] elements.
fn par_planes<T: Send>(
    x: &[f32],
    in_plane: usize,
    out: &mut [f32],
    out_plane: usize,
    init: impl Fn() -> T + Sync + Send,
    f: impl Fn(&mut T, usize, &[f32], &mut [f32]) + Sync + Send,
) {
    if in_plane == 0 || out_plane == 0 {
        return;
    }
    let ppt = planes_per_task(in_plane.max(out_plane));
    out.par_chunks_mut(ppt * out_plane)
        .zip(x.par_chunks(ppt * in_plane))
        .enumerate()
        .for_each_init(init, |scratch, (t, (o, xs))| {
            for (j, (o, xp)) in o.chunks_mut(out_plane).zip(xs.chunks(in_plane)).enumerate() {
                f(scratch, t * ppt + j, xp, o);
            }
        });
}

/// 1-D FIR ×2 upsampling of one line: out[2m] = b·x[m−1] + a·x[m],
/// out[2m+1] = a·x[m] + b·x[m+1], zeros outside.
fn up_line(x: &[f32], out: &mut [f32], a: f32, b: f32) {
    let n = x.len();
    if n == 0 {
        return;
    }
    if n == 1 {
        out[0] = a * x[0];
        out[1] = a * x[0];
        return;
    }
    out[0] = a * x[0];
    out[1] = a * x[0] + b * x[1];
    // Interior without bounds tests: x[m − 1], x[m], x[m + 1] as three slices.
    for (o, ((&l, &c), &r)) in out[2..2 * n - 2]
        .chunks_exact_mut(2)
        .zip(x[..n - 2].iter().zip(&x[1..n - 1]).zip(&x[2..]))
    {
        o[0] = b * l + a * c;
        o[1] = a * c + b * r;
    }
    out[2 * n - 2] = b * x[n - 2] + a * x[n - 1];
    out[2 * n - 1] = a * x[n - 1];
}

/// 1-D FIR ×2 downsampling of one line (even length):
/// out[m] = c0·x[2m−1] + c1·x[2m] + c1·x[2m+1] + c0·x[2m+2], zeros outside.
fn down_line(x: &[f32], out: &mut [f32], c0: f32, c1: f32) {
    let n = out.len();
    if n == 0 {
        return;
    }
    // Pairs (x[2m], x[2m+1]) plus the neighbours x[2m−1] and x[2m+2].
    for (o, p) in out.iter_mut().zip(x.chunks_exact(2)) {
        *o = c1 * (p[0] + p[1]);
    }
    for (o, w) in out[1..].iter_mut().zip(x[1..].chunks_exact(2)) {
        *o += c0 * w[0];
    }
    for (o, w) in out[..n - 1].iter_mut().zip(x[2..].chunks_exact(2)) {
        *o += c0 * w[0];
    }
}

/// Separable FIR ×2 upsampling of an `h × w` plane into `2h × 2w`: the line
/// filter along rows into `tmp` (`h × 2w`), then along columns.
fn up_plane(x: &[f32], h: usize, w: usize, out: &mut [f32], tmp: &mut Vec<f32>, a: f32, b: f32) {
    let w2 = 2 * w;
    tmp.resize(h * w2, 0.0);
    for (src, dst) in x.chunks(w).zip(tmp.chunks_mut(w2)) {
        up_line(src, dst, a, b);
    }
    for m in 0..h {
        let cur = &tmp[m * w2..(m + 1) * w2];
        let (even, odd) = out[2 * m * w2..(2 * m + 2) * w2].split_at_mut(w2);
        match m.checked_sub(1) {
            Some(p) => {
                let prev = &tmp[p * w2..(p + 1) * w2];
                for ((o, &c), &p) in even.iter_mut().zip(cur).zip(prev) {
                    *o = b * p + a * c;
                }
            }
            None => even.iter_mut().zip(cur).for_each(|(o, &c)| *o = a * c),
        }
        if m + 1 < h {
            let next = &tmp[(m + 1) * w2..(m + 2) * w2];
            for ((o, &c), &n) in odd.iter_mut().zip(cur).zip(next) {
                *o = a * c + b * n;
            }
        } else {
            odd.iter_mut().zip(cur).for_each(|(o, &c)| *o = a * c);
        }
    }
}

/// Separable FIR ×2 downsampling of an `h × w` plane (both even) into `h/2 × w/2`.
fn down_plane(
    x: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
    tmp: &mut Vec<f32>,
    c0: f32,
    c1: f32,
) {
    let wh = w / 2;
    tmp.resize(h * wh, 0.0);
    for (src, dst) in x.chunks(w).zip(tmp.chunks_mut(wh)) {
        down_line(src, dst, c0, c1);
    }
    let row = |i: usize| &tmp[i * wh..(i + 1) * wh];
    for (m, o) in out.chunks_mut(wh).enumerate() {
        let i = 2 * m;
        let (r1, r2) = (row(i), row(i + 1));
        for ((o, &p), &q) in o.iter_mut().zip(r1).zip(r2) {
            *o = c1 * (p + q);
        }
        if i > 0 {
            for (o, &p) in o.iter_mut().zip(row(i - 1)) {
                *o += c0 * p;
            }
        }
        if i + 2 < h {
            for (o, &p) in o.iter_mut().zip(row(i + 2)) {
                *o += c0 * p;
            }
        }
    }
}

/// Shared driver of the four FIR ops: `up` maps `[B, C, H, W]` → `[B, C, 2H, 2W]`
/// with line taps (a, b); otherwise `[B, C, H, W]` (even) → `[B, C, H/2, W/2]`
/// with taps (c0, c1).
fn fir(op: &'static str, x: &CpuTensor, up: bool, t0: f32, t1: f32) -> Result<CpuTensor> {
    let (_, h, w) = image_dims(op, &x.shape)?;
    let (ho, wo) = if up {
        let ho = h
            .checked_mul(2)
            .ok_or_else(|| Error::shape(op, "height overflows"))?;
        let wo = w
            .checked_mul(2)
            .ok_or_else(|| Error::shape(op, "width overflows"))?;
        (ho, wo)
    } else {
        if h % 2 != 0 || w % 2 != 0 {
            return Err(Error::shape(
                op,
                format!("{:?}: height and width must be even", x.shape),
            ));
        }
        (h / 2, w / 2)
    };
    let shape = [x.shape[0], x.shape[1], ho, wo];
    let mut out = alloc_zeros(op, &shape)?;
    par_planes(
        &x.data,
        h * w,
        &mut out,
        ho * wo,
        Vec::new,
        |tmp, _, xp, o| {
            if up {
                up_plane(xp, h, w, o, tmp, t0, t1)
            } else {
                down_plane(xp, h, w, o, tmp, t0, t1)
            }
        },
    );
    Ok(tensor(out, &shape))
}

impl LayerOps for CpuBackend {
    fn reshape(&self, x: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        let n = numel("reshape", shape)?;
        if n != x.data.len() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "{:?} ({} elements) to {shape:?} ({n})",
                    x.shape,
                    x.data.len()
                ),
            ));
        }
        Ok(CpuTensor {
            data: Arc::clone(&x.data),
            shape: shape.to_vec(),
        })
    }

    fn axpby(&self, alpha: f32, a: &CpuTensor, beta: f32, b: &CpuTensor) -> Result<CpuTensor> {
        map2("axpby", a, b, |a, b| alpha * a + beta * b)
    }

    fn mul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        map2("mul", a, b, |a, b| a * b)
    }

    fn silu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        // x / (1 + e^−x); e^−x is clamped at e^87, so far left the result is
        // a tiny negative number (|·| < 1e-35 for x < −87) rather than −0.
        map1("silu", x, |x| x / (1.0 + exp_f32(-x)))
    }

    fn silu_backward(&self, x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        map2("silu_backward", x, dy, |x, dy| {
            let s = 1.0 / (1.0 + exp_f32(-x));
            dy * s * (1.0 + x * (1.0 - s))
        })
    }

    fn group_norm(
        &self,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        groups: usize,
        eps: f32,
    ) -> Result<GroupNormOut<CpuTensor>> {
        const OP: &str = "group_norm";
        let (b, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "gamma must be [C]", &gamma.shape, &[c])?;
        same_shape(OP, "beta must be [C]", &beta.shape, &[c])?;
        let cg = group_size(OP, c, groups)?;
        let glen = cg * s;
        let mut y = alloc_zeros(OP, &x.shape)?;
        let mut stats = alloc_zeros(OP, &[b, groups, 2])?;
        let (gamma, beta) = (&gamma.data[..], &beta.data[..]);
        if glen == 0 {
            // Empty groups: mean 0, variance 0.
            stats
                .chunks_mut(2)
                .for_each(|st| st[1] = 1.0 / (eps as f64).sqrt() as f32);
        } else {
            y.par_chunks_mut(glen)
                .zip(x.data.par_chunks(glen))
                .zip(stats.par_chunks_mut(2))
                .enumerate()
                .for_each(|(i, ((yg, xg), st))| {
                    let n = glen as f64;
                    let mean = sum_f64(xg) / n;
                    let var = centered_sq_f64(xg, mean) / n;
                    let rstd = 1.0 / (var + eps as f64).sqrt();
                    let (mean, rstd) = (mean as f32, rstd as f32);
                    st[0] = mean;
                    st[1] = rstd;
                    let c0 = (i % groups) * cg;
                    for (j, (yc, xc)) in yg.chunks_mut(s).zip(xg.chunks(s)).enumerate() {
                        let (a, bb) = (rstd * gamma[c0 + j], beta[c0 + j]);
                        for (y, &x) in yc.iter_mut().zip(xc) {
                            *y = (x - mean) * a + bb;
                        }
                    }
                });
        }
        Ok(GroupNormOut {
            y: tensor(y, &x.shape),
            stats: tensor(stats, &[b, groups, 2]),
        })
    }

    fn group_norm_backward(
        &self,
        x: &CpuTensor,
        gamma: &CpuTensor,
        stats: &CpuTensor,
        dy: &CpuTensor,
        groups: usize,
    ) -> Result<GroupNormGrads<CpuTensor>> {
        const OP: &str = "group_norm_backward";
        let (b, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "gamma must be [C]", &gamma.shape, &[c])?;
        same_shape(OP, "dy must have x's shape", &dy.shape, &x.shape)?;
        let cg = group_size(OP, c, groups)?;
        same_shape(
            OP,
            "stats must be [B, groups, 2]",
            &stats.shape,
            &[b, groups, 2],
        )?;
        let glen = cg * s;
        let mut dx = alloc_zeros(OP, &x.shape)?;
        // Per (sample, channel): Σ dy and Σ dy·x̂ over space.
        let mut s1 = vec![0.0f64; b * c];
        let mut s2 = vec![0.0f64; b * c];
        let gamma = &gamma.data[..];
        if glen > 0 {
            dx.par_chunks_mut(glen)
                .zip(x.data.par_chunks(glen))
                .zip(dy.data.par_chunks(glen))
                .zip(stats.data.par_chunks(2))
                .zip(s1.par_chunks_mut(cg))
                .zip(s2.par_chunks_mut(cg))
                .enumerate()
                .for_each(|(i, (((((dxg, xg), dyg), st), s1), s2))| {
                    let (mean, rstd) = (st[0] as f64, st[1] as f64);
                    let c0 = (i % groups) * cg;
                    let (mut ga, mut gb) = (0.0f64, 0.0f64);
                    for (j, (xc, dyc)) in xg.chunks(s).zip(dyg.chunks(s)).enumerate() {
                        s1[j] = sum_f64(dyc);
                        s2[j] = centered_dot_f64(dyc, xc, mean) * rstd;
                        ga += gamma[c0 + j] as f64 * s1[j];
                        gb += gamma[c0 + j] as f64 * s2[j];
                    }
                    // dx = rstd·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂))
                    let n = glen as f64;
                    let k2 = (rstd * ga / n) as f32;
                    let k3 = (rstd * rstd * gb / n) as f32;
                    let mean = mean as f32;
                    for (j, ((dxc, xc), dyc)) in dxg
                        .chunks_mut(s)
                        .zip(xg.chunks(s))
                        .zip(dyg.chunks(s))
                        .enumerate()
                    {
                        let k1 = (rstd * gamma[c0 + j] as f64) as f32;
                        for ((dx, &x), &dy) in dxc.iter_mut().zip(xc).zip(dyc) {
                            *dx = k1 * dy - k2 - (x - mean) * k3;
                        }
                    }
                });
        }
        Ok(GroupNormGrads {
            dx: tensor(dx, &x.shape),
            dgamma: tensor(reduce_batch(&s2, c), &[c]),
            dbeta: tensor(reduce_batch(&s1, c), &[c]),
        })
    }

    fn add_bias(&self, x: &CpuTensor, bias: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "add_bias";
        let (_, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "bias must be [C]", &bias.shape, &[c])?;
        let mut out = alloc_zeros(OP, &x.shape)?;
        par_planes(
            &x.data,
            s,
            &mut out,
            s,
            || (),
            |_, p, xp, o| {
                let v = bias.data[p % c];
                o.iter_mut().zip(xp).for_each(|(o, &x)| *o = x + v);
            },
        );
        Ok(tensor(out, &x.shape))
    }

    fn bias_grad(&self, dy: &CpuTensor) -> Result<CpuTensor> {
        let (_, c, s) = channel_dims("bias_grad", &dy.shape)?;
        let sums = plane_sums(&dy.data, s);
        Ok(tensor(reduce_batch(&sums, c), &[c]))
    }

    fn add_sample_bias(&self, x: &CpuTensor, t: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "add_sample_bias";
        let (b, c, s) = channel_dims(OP, &x.shape)?;
        same_shape(OP, "t must be [B, C]", &t.shape, &[b, c])?;
        let mut out = alloc_zeros(OP, &x.shape)?;
        par_planes(
            &x.data,
            s,
            &mut out,
            s,
            || (),
            |_, p, xp, o| {
                let v = t.data[p];
                o.iter_mut().zip(xp).for_each(|(o, &x)| *o = x + v);
            },
        );
        Ok(tensor(out, &x.shape))
    }

    fn sample_bias_grad(&self, dy: &CpuTensor) -> Result<CpuTensor> {
        let (b, c, s) = channel_dims("sample_bias_grad", &dy.shape)?;
        let sums = if s == 0 {
            vec![0.0; b * c]
        } else {
            plane_sums(&dy.data, s)
        };
        Ok(tensor(
            sums.into_iter().map(|x| x as f32).collect(),
            &[b, c],
        ))
    }

    fn upsample2x(&self, x: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "upsample2x";
        let (_, h, w) = image_dims(OP, &x.shape)?;
        let shape = [x.shape[0], x.shape[1], 2 * h, 2 * w];
        let mut out = alloc_zeros(OP, &shape)?;
        par_planes(
            &x.data,
            h * w,
            &mut out,
            4 * h * w,
            || (),
            |_, _, xp, o| {
                for (src, dst) in xp.chunks(w).zip(o.chunks_mut(4 * w)) {
                    let (even, odd) = dst.split_at_mut(2 * w);
                    for (pair, &v) in even.chunks_mut(2).zip(src) {
                        pair[0] = v;
                        pair[1] = v;
                    }
                    odd.copy_from_slice(even);
                }
            },
        );
        Ok(tensor(out, &shape))
    }

    fn avgpool2x(&self, x: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "avgpool2x";
        let (_, h, w) = image_dims(OP, &x.shape)?;
        if h % 2 != 0 || w % 2 != 0 {
            return Err(Error::shape(
                OP,
                format!("{:?}: height and width must be even", x.shape),
            ));
        }
        let shape = [x.shape[0], x.shape[1], h / 2, w / 2];
        let mut out = alloc_zeros(OP, &shape)?;
        par_planes(
            &x.data,
            h * w,
            &mut out,
            h * w / 4,
            || (),
            |_, _, xp, o| {
                for (src, dst) in xp.chunks(2 * w).zip(o.chunks_mut(w / 2)) {
                    let (r0, r1) = src.split_at(w);
                    for ((d, a), b) in dst.iter_mut().zip(r0.chunks(2)).zip(r1.chunks(2)) {
                        *d = 0.25 * ((a[0] + a[1]) + (b[0] + b[1]));
                    }
                }
            },
        );
        Ok(tensor(out, &shape))
    }

    // Per axis, the up filter (zero insertion, k = [1,3,3,1]/8 with gain 2 per
    // axis, pads (2, 1)) gives out[2m] = x[m−1]/4 + 3x[m]/4 and
    // out[2m+1] = 3x[m]/4 + x[m+1]/4; the down filter (pads (1, 1), every
    // second output) gives out[m] = (x[2m−1] + 3x[2m] + 3x[2m+1] + x[2m+2])/8.
    // Their transposes are the same two stencils: fir_up's adjoint is 4·fir_down
    // and fir_down's adjoint is fir_up/4 (scalings by powers of two are exact).

    fn fir_up(&self, x: &CpuTensor) -> Result<CpuTensor> {
        fir("fir_up", x, true, 0.75, 0.25)
    }

    fn fir_down(&self, x: &CpuTensor) -> Result<CpuTensor> {
        fir("fir_down", x, false, 0.125, 0.375)
    }

    fn fir_up_backward(&self, dy: &CpuTensor) -> Result<CpuTensor> {
        fir("fir_up_backward", dy, false, 0.25, 0.75)
    }

    fn fir_down_backward(&self, dy: &CpuTensor) -> Result<CpuTensor> {
        fir("fir_down_backward", dy, true, 0.375, 0.125)
    }

    fn concat_channels(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "concat_channels";
        let (ba, ca, s) = channel_dims(OP, &a.shape)?;
        let (bb, cb, _) = channel_dims(OP, &b.shape)?;
        if ba != bb || a.shape[2..] != b.shape[2..] {
            return Err(Error::shape(
                OP,
                format!(
                    "{:?} and {:?} differ outside the channel axis",
                    a.shape, b.shape
                ),
            ));
        }
        let mut shape = a.shape.clone();
        shape[1] = ca
            .checked_add(cb)
            .ok_or_else(|| Error::shape(OP, "channel count overflows"))?;
        let mut out = alloc_zeros(OP, &shape)?;
        let (la, lb) = (ca * s, cb * s);
        if la + lb > 0 {
            out.par_chunks_mut(la + lb).enumerate().for_each(|(i, o)| {
                o[..la].copy_from_slice(&a.data[i * la..(i + 1) * la]);
                o[la..].copy_from_slice(&b.data[i * lb..(i + 1) * lb]);
            });
        }
        Ok(tensor(out, &shape))
    }

    fn split_channels(&self, x: &CpuTensor, ca: usize) -> Result<(CpuTensor, CpuTensor)> {
        const OP: &str = "split_channels";
        let (_, c, s) = channel_dims(OP, &x.shape)?;
        if ca > c {
            return Err(Error::shape(
                OP,
                format!("cannot split {ca} channels off {:?}", x.shape),
            ));
        }
        let (mut sa, mut sb) = (x.shape.clone(), x.shape.clone());
        sa[1] = ca;
        sb[1] = c - ca;
        let (mut a, mut b) = (alloc_zeros(OP, &sa)?, alloc_zeros(OP, &sb)?);
        let (la, lb) = (ca * s, (c - ca) * s);
        if la > 0 {
            a.par_chunks_mut(la)
                .enumerate()
                .for_each(|(i, o)| o.copy_from_slice(&x.data[i * (la + lb)..][..la]));
        }
        if lb > 0 {
            b.par_chunks_mut(lb)
                .enumerate()
                .for_each(|(i, o)| o.copy_from_slice(&x.data[i * (la + lb) + la..][..lb]));
        }
        Ok((tensor(a, &sa), tensor(b, &sb)))
    }

    fn dropout_mask(&self, shape: &[usize], p: f32, rng: RngStream) -> Result<CpuTensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Invalid(format!(
                "dropout probability {p} must lie in [0, 1)"
            )));
        }
        let mut m = alloc_zeros("dropout_mask", shape)?;
        let keep = 1.0 / (1.0 - p);
        m.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            rng.fill_uniform((i * CHUNK) as u64, c);
            for v in c.iter_mut() {
                *v = if *v >= p { keep } else { 0.0 };
            }
        });
        Ok(tensor(m, shape))
    }

    fn sum_batch(&self, x: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "sum_batch";
        let Some((&b, rest)) = x.shape.split_first() else {
            return Err(Error::shape(OP, "a scalar has no batch axis"));
        };
        let mut out = alloc_zeros(OP, rest)?;
        let d = out.len();
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
            let off = i * CHUNK;
            for j in 0..b {
                let src = &x.data[j * d + off..][..o.len()];
                o.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
            }
        });
        Ok(tensor(out, rest))
    }

    fn pair_distance(&self, x: &CpuTensor) -> Result<CpuTensor> {
        const OP: &str = "pair_distance";
        let (n, c, s) = pair_dims(OP, &x.shape)?;
        let shape = [n, x.shape[2], x.shape[3]];
        let mut out = alloc_zeros(OP, &shape)?;
        if s > 0 {
            out.par_chunks_mut(s).enumerate().for_each(|(i, o)| {
                let (a, b) = (&x.data[i * c * s..], &x.data[(n + i) * c * s..]);
                for ch in 0..c {
                    let (a, b) = (&a[ch * s..][..s], &b[ch * s..][..s]);
                    for ((o, &u), &v) in o.iter_mut().zip(a).zip(b) {
                        *o += (u - v) * (u - v);
                    }
                }
                o.iter_mut().for_each(|v| *v = v.sqrt());
            });
        }
        Ok(tensor(out, &shape))
    }
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_within_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 87.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max((got - want).abs() / want);
            x += 0.000_731;
        }
        // 2 ulp of f32 is 2.4e-7 relative.
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
        assert!(exp_f32(1000.0).is_finite());
    }
}
