//! Numeric helpers shared by the CPU kernels: a vectorisable `exp`, f64
//! sums, and the plane-parallel driver.

use super::par::*;
use super::CHUNK;

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
#[inline(always)]
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
#[inline(always)]
pub(super) fn centered_sq_f64(v: &[f32], m: f64) -> f64 {
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
#[inline(always)]
pub(super) fn centered_dot_f64(d: &[f32], v: &[f32], m: f64) -> f64 {
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
pub(super) fn reduce_batch(v: &[f64], c: usize) -> Vec<f32> {
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

/// Runs `f(scratch, plane index, input plane, output plane)` over matching
/// planes of `x` (length `in_plane`) and `out` (length `out_plane`), grouping
/// small planes so each task has about [`CHUNK`] elements.
pub(super) fn par_planes<T: Send>(
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
