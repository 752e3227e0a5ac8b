//! The ×2 resampling ops on the CPU: nearest-neighbour upsampling, 2×2
//! average pooling, and NCSN++'s separable FIR [1,3,3,1] filters with their
//! adjoints, each a loop over whole planes in parallel.
//!
//! Per axis, the up filter (zero insertion, k = [1,3,3,1]/8 with gain 2 per
//! axis, pads (2, 1)) gives out[2m] = x[m−1]/4 + 3x[m]/4 and
//! out[2m+1] = 3x[m]/4 + x[m+1]/4; the down filter (pads (1, 1), every
//! second output) gives out[m] = (x[2m−1] + 3x[2m] + 3x[2m+1] + x[2m+2])/8.
//! Their transposes are the same two stencils: fir_up's adjoint is 4·fir_down
//! and fir_down's adjoint is fir_up/4 (scalings by powers of two are exact).

use super::math::par_planes;
use super::{alloc_zeros, tensor, CpuTensor};
use crate::backend::plan::{Resample, ResamplePlan};
use crate::error::Result;

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

/// `p.op` over every plane of `x`.
pub(super) fn resample(p: &ResamplePlan, x: &CpuTensor) -> Result<CpuTensor> {
    let mut out = alloc_zeros(p.op.name(), &p.out)?;
    let (h, w) = (p.h, p.w);
    // Line taps: (a, b) of the up stencil, (c0, c1) of the down one.
    let fir = |up: bool, t0: f32, t1: f32| {
        move |tmp: &mut Vec<f32>, _: usize, xp: &[f32], o: &mut [f32]| {
            if up {
                up_plane(xp, h, w, o, tmp, t0, t1)
            } else {
                down_plane(xp, h, w, o, tmp, t0, t1)
            }
        }
    };
    let (inp, outp) = (h * w, p.ho * p.wo);
    match p.op {
        Resample::Upsample2x => {
            par_planes(&x.data, inp, &mut out, outp, Vec::new, upsample_plane(w))
        }
        Resample::Avgpool2x => par_planes(&x.data, inp, &mut out, outp, Vec::new, avgpool_plane(w)),
        Resample::FirUp => par_planes(
            &x.data,
            inp,
            &mut out,
            outp,
            Vec::new,
            fir(true, 0.75, 0.25),
        ),
        Resample::FirDown => par_planes(
            &x.data,
            inp,
            &mut out,
            outp,
            Vec::new,
            fir(false, 0.125, 0.375),
        ),
        Resample::FirUpBackward => par_planes(
            &x.data,
            inp,
            &mut out,
            outp,
            Vec::new,
            fir(false, 0.25, 0.75),
        ),
        Resample::FirDownBackward => par_planes(
            &x.data,
            inp,
            &mut out,
            outp,
            Vec::new,
            fir(true, 0.375, 0.125),
        ),
    }
    Ok(tensor(out, &p.out))
}

/// Nearest-neighbour ×2 of one `h × w` plane.
fn upsample_plane(w: usize) -> impl Fn(&mut Vec<f32>, usize, &[f32], &mut [f32]) + Sync + Send {
    move |_, _, xp, o| {
        for (src, dst) in xp.chunks(w).zip(o.chunks_mut(4 * w)) {
            let (even, odd) = dst.split_at_mut(2 * w);
            for (pair, &v) in even.chunks_mut(2).zip(src) {
                pair[0] = v;
                pair[1] = v;
            }
            odd.copy_from_slice(even);
        }
    }
}

/// 2×2 mean of one `h × w` plane (both even).
fn avgpool_plane(w: usize) -> impl Fn(&mut Vec<f32>, usize, &[f32], &mut [f32]) + Sync + Send {
    move |_, _, xp, o| {
        for (src, dst) in xp.chunks(2 * w).zip(o.chunks_mut(w / 2)) {
            let (r0, r1) = src.split_at(w);
            for ((d, a), b) in dst.iter_mut().zip(r0.chunks(2)).zip(r1.chunks(2)) {
                *d = 0.25 * ((a[0] + a[1]) + (b[0] + b[1]));
            }
        }
    }
}
