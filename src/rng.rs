//! Counter-based random numbers: Philox4x32-10, mirrored bit for bit in
//! `shaders/philox.wgsl` so the CPU and GPU backends draw the same numbers.
//!
//! # Layout
//!
//! A stream is `(seed, stream)`, two `u64`s. Block `n` of a stream is one
//! Philox call:
//!
//! ```text
//! key     = (seed as u32, (seed >> 32) as u32)
//! counter = (n as u32, (n >> 32) as u32, stream as u32, (stream >> 32) as u32)
//! block   = philox4x32_10(counter, key)          // four u32 lanes
//! ```
//!
//! Element `i` of a stream is lane `i % 4` of block `i / 4`, for uniforms and
//! Gaussians alike. So a GPU thread that owns elements `4t..4t+4` makes one
//! Philox call (`rng_block(seed, stream, t, 0)` in WGSL) and gets exactly what
//! [`RngStream::fill_normal`] gives on the CPU.
//!
//! Uniforms keep the top 23 bits of a lane: `u = (k + 0.5) * 2^-23`, which is
//! exact in `f32`, lies in `[2^-24, 1 - 2^-24]` and is symmetric under
//! `u -> 1 - u`. (Taking 24 bits as `(k + 0.5) * 2^-24` is not exact above
//! 0.5, and the largest `k` rounds to exactly 1.0.)
//!
//! Gaussians use Box–Muller on lane pairs `(0, 1)` and `(2, 3)`:
//! `r = sqrt(-2 ln u_a)`, `θ = 2π u_b`, giving `(r cos θ, r sin θ)`.
//! GPU `log`/`sin`/`cos` builtins have loose, vendor-specific precision, so
//! `ln` and `sincos` are written out here (Cephes `logf`/`sinf`/`cosf`
//! polynomials) with the same `f32` operations and constants as the shader.
//! Only `sqrt` and possible FMA contraction on the GPU differ, by an ulp or
//! two; CPU and GPU Gaussians agree to about `1e-6 * max(1, |g|)`.
//! The largest `|g|` is `sqrt(-2 ln 2^-24) ≈ 5.77`.

// Philox4x32 multipliers and Weyl key increments (Random123).
const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

// The f32 constants below appear with the same names and decimal text in
// philox.wgsl; all are written so the decimal rounds straight to the
// intended f32 (checked against naga's parse in the scratch tests).

/// 2^-23, the uniform grid spacing (exact decimal, same text as the shader).
#[allow(clippy::excessive_precision)]
pub(crate) const RNG_INV_2P23: f32 = 1.1920928955078125e-7;
/// sqrt(1/2): mantissas below it are doubled so `ln` works on [sqrt(.5)-1, sqrt(2)-1].
pub(crate) const RNG_SQRT_HALF: f32 = 0.70710677;
// Cephes logf: ln(1+x) = x - x²/2 + x³·P(x).
pub(crate) const RNG_LN_P0: f32 = 7.0376836e-2;
pub(crate) const RNG_LN_P1: f32 = -1.151461e-1;
pub(crate) const RNG_LN_P2: f32 = 1.16769984e-1;
pub(crate) const RNG_LN_P3: f32 = -1.2420141e-1;
pub(crate) const RNG_LN_P4: f32 = 1.4249323e-1;
pub(crate) const RNG_LN_P5: f32 = -1.6668057e-1;
pub(crate) const RNG_LN_P6: f32 = 2.0000714e-1;
pub(crate) const RNG_LN_P7: f32 = -2.4999994e-1;
pub(crate) const RNG_LN_P8: f32 = 3.333333e-1;
/// ln 2 split so `e * RNG_LN2_HI` is exact (355/512, few mantissa bits).
#[allow(clippy::excessive_precision)]
pub(crate) const RNG_LN2_HI: f32 = 0.693359375;
pub(crate) const RNG_LN2_LO: f32 = -2.1219444e-4;
/// π/2 rounded to f32.
pub(crate) const RNG_PIO2: f32 = 1.5707964;
// Cephes sinf/cosf on |x| <= π/4.
pub(crate) const RNG_SIN_P0: f32 = -1.9515296e-4;
pub(crate) const RNG_SIN_P1: f32 = 8.332161e-3;
pub(crate) const RNG_SIN_P2: f32 = -1.6666655e-1;
pub(crate) const RNG_COS_P0: f32 = 2.4433157e-5;
pub(crate) const RNG_COS_P1: f32 = -1.3887316e-3;
pub(crate) const RNG_COS_P2: f32 = 4.1666646e-2;

/// Domain separation for [`RngStream::derive`]: its Philox key is the seed
/// xored with this, so derive never reuses the key of ordinary draws.
const DERIVE_KEY_XOR: [u32; 2] = [0x5851_F42D, 0x4C95_7F2D];

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds (Random123's recommended count).
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Top 23 bits → f32 in (0,1), exactly representable: `((x >> 9) as f32 + 0.5) * 2^-23`.
///
/// Range `[2^-24, 1 - 2^-24]`; see the module docs for why not 24 bits.
#[inline]
pub fn uniform_from_bits(x: u32) -> f32 {
    ((x >> 9) as f32 + 0.5) * RNG_INV_2P23
}

/// Natural log of a positive normal f32 (Cephes `logf`, ~1 ulp).
///
/// Plain f32 ops in the shader's order; no `mul_add`, so the GPU result can
/// only differ through FMA contraction.
pub(crate) fn ln_f32(u: f32) -> f32 {
    let bits = u.to_bits();
    // u = m * 2^e with m in [0.5, 1).
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let mut x = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    // Keep 1 + x in [sqrt(.5), sqrt(2)); both subtractions are exact.
    if x < RNG_SQRT_HALF {
        e -= 1;
        x = x + x - 1.0;
    } else {
        x -= 1.0;
    }
    let z = x * x;
    let mut y = RNG_LN_P0;
    y = y * x + RNG_LN_P1;
    y = y * x + RNG_LN_P2;
    y = y * x + RNG_LN_P3;
    y = y * x + RNG_LN_P4;
    y = y * x + RNG_LN_P5;
    y = y * x + RNG_LN_P6;
    y = y * x + RNG_LN_P7;
    y = y * x + RNG_LN_P8;
    y = y * x * z;
    let fe = e as f32;
    y += RNG_LN2_LO * fe;
    y -= 0.5 * z;
    (x + y) + RNG_LN2_HI * fe
}

/// `(sin 2πu, cos 2πu)` for u in [0, 1], ~1 ulp absolute.
///
/// The reduction is exact: `4u` is exact, `q` is the nearest quarter turn and
/// `4u - q` (in [-1/2, 1/2] quarter turns) is exact by Sterbenz. Only the
/// final `* π/2` rounds.
pub(crate) fn sincos_2pi(u: f32) -> (f32, f32) {
    let s4 = 4.0 * u;
    let q = (s4 + 0.5).floor();
    let r = s4 - q;
    let x = r * RNG_PIO2;
    let z = x * x;
    let sn = ((RNG_SIN_P0 * z + RNG_SIN_P1) * z + RNG_SIN_P2) * z * x + x;
    let cs = ((RNG_COS_P0 * z + RNG_COS_P1) * z + RNG_COS_P2) * z * z - 0.5 * z + 1.0;
    match (q as u32) & 3 {
        0 => (sn, cs),
        1 => (cs, -sn),
        2 => (-sn, -cs),
        _ => (-cs, sn),
    }
}

/// Four Gaussians from one Philox block: Box–Muller on (u0,u1) and (u2,u3):
/// r = sqrt(-2 ln u_a), θ = 2π u_b, out = (r cos θ, r sin θ)
pub fn normals_from_block(b: [u32; 4]) -> [f32; 4] {
    let r0 = (-2.0 * ln_f32(uniform_from_bits(b[0]))).sqrt();
    let (s0, c0) = sincos_2pi(uniform_from_bits(b[1]));
    let r1 = (-2.0 * ln_f32(uniform_from_bits(b[2]))).sqrt();
    let (s1, c1) = sincos_2pi(uniform_from_bits(b[3]));
    [r0 * c0, r0 * s0, r1 * c1, r1 * s1]
}

/// One independent random sequence: a Philox key (`seed`) plus the upper
/// half of the counter (`stream`). See the module docs for the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RngStream {
    pub seed: u64,
    pub stream: u64,
}

impl RngStream {
    pub fn new(seed: u64, stream: u64) -> Self {
        Self { seed, stream }
    }

    /// key = (seed as u32, (seed >> 32) as u32); counter = (block lo, block hi, stream lo, stream hi)
    pub fn block(&self, block_index: u64) -> [u32; 4] {
        philox4x32_10(
            [
                block_index as u32,
                (block_index >> 32) as u32,
                self.stream as u32,
                (self.stream >> 32) as u32,
            ],
            [self.seed as u32, (self.seed >> 32) as u32],
        )
    }

    /// element i is lane i % 4 of block i / 4
    pub fn uniform(&self, i: u64) -> f32 {
        uniform_from_bits(self.block(i / 4)[(i % 4) as usize])
    }

    /// Element i of the Gaussian sequence: lane i % 4 of `normals_from_block(block(i / 4))`.
    pub fn normal(&self, i: u64) -> f32 {
        normals_from_block(self.block(i / 4))[(i % 4) as usize]
    }

    /// out[j] = normal(start + j), for any start (one Philox call per block touched).
    pub fn fill_normal(&self, start: u64, out: &mut [f32]) {
        self.fill_with(start, out, normals_from_block);
    }

    /// out[j] = uniform(start + j), for any start.
    pub fn fill_uniform(&self, start: u64, out: &mut [f32]) {
        self.fill_with(start, out, |b| b.map(uniform_from_bits));
    }

    fn fill_with(&self, start: u64, out: &mut [f32], f: impl Fn([u32; 4]) -> [f32; 4]) {
        let mut j = 0;
        while j < out.len() {
            let idx = start + j as u64;
            let lane = (idx % 4) as usize;
            let n = (4 - lane).min(out.len() - j);
            let v = f(self.block(idx / 4));
            out[j..j + n].copy_from_slice(&v[lane..lane + n]);
            j += n;
        }
    }

    /// A derived stream for a sub-purpose, e.g. `stream.derive(step)`.
    ///
    /// Same seed; the new stream id is the first 64 bits of
    /// `philox4x32_10((tag lo, tag hi, stream lo, stream hi), seed ^ DERIVE_KEY_XOR)`.
    /// For a fixed key Philox is a bijection of the counter, so distinct
    /// `(stream, tag)` pairs map to effectively independent 64-bit ids:
    /// any two derived streams collide with probability 2^-64. The xored key
    /// keeps these ids unrelated to the numbers drawn from `(seed, stream)`.
    pub fn derive(&self, tag: u64) -> RngStream {
        let key = [
            self.seed as u32 ^ DERIVE_KEY_XOR[0],
            (self.seed >> 32) as u32 ^ DERIVE_KEY_XOR[1],
        ];
        let b = philox4x32_10(
            [
                tag as u32,
                (tag >> 32) as u32,
                self.stream as u32,
                (self.stream >> 32) as u32,
            ],
            key,
        );
        RngStream {
            seed: self.seed,
            stream: b[0] as u64 | (b[1] as u64) << 32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        // Random123 kat_vectors, philox4x32_10.
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// The shader builds mulhilo from 16-bit halves; check that scheme here.
    #[test]
    fn mulhilo_from_halves_matches_u64() {
        fn halves(a: u32, b: u32) -> (u32, u32) {
            let (al, ah) = (a & 0xffff, a >> 16);
            let (bl, bh) = (b & 0xffff, b >> 16);
            let ll = al * bl;
            let lh = al * bh;
            let hl = ah * bl;
            let hh = ah * bh;
            let mid = (ll >> 16) + (lh & 0xffff) + (hl & 0xffff);
            let hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16);
            (hi, a.wrapping_mul(b))
        }
        let s = RngStream::new(7, 7);
        let edge = [0, 1, 0xffff, 0x10000, 0xffff_ffff, PHILOX_M0, PHILOX_M1];
        for &a in &edge {
            for &b in &edge {
                assert_eq!(halves(a, b), mulhilo(a, b));
            }
        }
        for i in 0..100_000 {
            let [a, b, c, d] = s.block(i);
            assert_eq!(halves(a, b), mulhilo(a, b));
            assert_eq!(halves(c, d), mulhilo(c, d));
        }
    }

    #[test]
    fn uniform_open_interval_and_exact() {
        let lo = uniform_from_bits(0);
        let hi = uniform_from_bits(u32::MAX);
        assert!(lo > 0.0 && hi < 1.0, "{lo} {hi}");
        assert_eq!(lo, 2f32.powi(-24));
        assert_eq!(hi, 1.0 - 2f32.powi(-24));
        // Exact: matches the f64 computation, and u -> 1-u maps the grid onto itself.
        for k in (0..1u32 << 23).step_by(997).chain([0, (1 << 23) - 1]) {
            let u = uniform_from_bits(k << 9);
            assert_eq!(u as f64, (k as f64 + 0.5) / (1u64 << 23) as f64);
            assert_eq!(1.0 - u, uniform_from_bits(((1 << 23) - 1 - k) << 9));
        }
    }

    #[test]
    fn ln_close_to_f64() {
        let check = |u: f32| {
            let got = ln_f32(u) as f64;
            let want = (u as f64).ln();
            let rel = ((got - want) / want).abs();
            assert!(rel < 2e-7, "u={u:e} got={got} want={want} rel={rel:e}");
        };
        // Every 23-bit uniform value the Gaussians can see, thinned.
        for k in (0..1u32 << 23).step_by(13) {
            check(uniform_from_bits(k << 9));
        }
        for k in (1u32 << 23) - 4096..1u32 << 23 {
            check(uniform_from_bits(k << 9));
        }
        // Arbitrary normal f32s in (0,1), including tiny ones.
        for bits in (0x0080_0000u32..0x3f80_0000).step_by(4099) {
            check(f32::from_bits(bits));
        }
        for e in 1..=125 {
            check(2f32.powi(-e));
            check(1.5 * 2f32.powi(-e - 1));
        }
        check(2f32.powi(-25));
        check(f32::MIN_POSITIVE);
        check(1.0 - f32::EPSILON / 2.0);
        assert_eq!(ln_f32(1.0), 0.0);
    }

    #[test]
    fn sincos_close_to_f64() {
        let mut worst = 0f64;
        let mut check = |u: f32| {
            let (s, c) = sincos_2pi(u);
            let t = std::f64::consts::TAU * u as f64;
            let err = (s as f64 - t.sin()).abs().max((c as f64 - t.cos()).abs());
            worst = worst.max(err);
            assert!(err < 3e-7, "u={u} sin={s} cos={c} err={err:e}");
        };
        for k in (0..1u32 << 23).step_by(7) {
            check(uniform_from_bits(k << 9));
        }
        // Quadrant boundaries and arbitrary (not on the 23-bit grid) inputs.
        for q in 0..=8 {
            let b = q as f32 / 8.0;
            check(b);
            check(b + 2f32.powi(-24));
            if q > 0 {
                check(b - 2f32.powi(-24));
            }
        }
        for bits in (0u32..0x3f80_0000).step_by(1009) {
            check(f32::from_bits(bits));
        }
        assert!(worst < 3e-7);
    }

    #[test]
    fn gaussian_statistics() {
        let n = 1_000_000;
        let mut g = vec![0f32; n];
        RngStream::new(0x1234_5678_9abc_def0, 3).fill_normal(0, &mut g);
        let mean = g.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = g.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let tail = g.iter().filter(|x| x.abs() > 3.0).count() as f64 / n as f64;
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        assert!((tail - 0.0027).abs() < 0.0005, "tail {tail}");
        assert!(g.iter().all(|x| x.is_finite() && x.abs() < 5.8));
    }

    #[test]
    fn extreme_lanes_are_finite() {
        for a in [0, 511, 512, u32::MAX] {
            for b in [0, 1 << 30, 1 << 31, 3 << 30, u32::MAX] {
                let g = normals_from_block([a, b, a, b]);
                assert!(g.iter().all(|x| x.is_finite()), "{a:x} {b:x} {g:?}");
            }
        }
    }

    #[test]
    fn fill_matches_per_element() {
        let s = RngStream::new(42, 9);
        for start in [0u64, 1, 2, 3, 5, 4 * 1000 + 3, u32::MAX as u64 * 4 + 1] {
            for len in [0usize, 1, 2, 3, 4, 5, 7, 13] {
                let mut g = vec![0f32; len];
                let mut u = vec![0f32; len];
                s.fill_normal(start, &mut g);
                s.fill_uniform(start, &mut u);
                for j in 0..len {
                    assert_eq!(g[j].to_bits(), s.normal(start + j as u64).to_bits());
                    assert_eq!(u[j].to_bits(), s.uniform(start + j as u64).to_bits());
                }
            }
        }
    }

    #[test]
    fn block_layout() {
        let s = RngStream::new(0x0102_0304_0506_0708, 0x1112_1314_1516_1718);
        assert_eq!(
            s.block(0x2122_2324_2526_2728),
            philox4x32_10(
                [0x2526_2728, 0x2122_2324, 0x1516_1718, 0x1112_1314],
                [0x0506_0708, 0x0102_0304]
            )
        );
        // High halves matter: blocks 2^32 apart and streams 2^32 apart differ.
        assert_ne!(s.block(1), s.block(1 + (1 << 32)));
        assert_ne!(
            s.block(1),
            RngStream::new(s.seed, s.stream ^ (1 << 32)).block(1)
        );
    }

    #[test]
    fn derived_streams_differ() {
        let s = RngStream::new(5, 0);
        let mut ids = std::collections::HashSet::new();
        ids.insert(s.stream);
        for tag in 0..1000 {
            let d = s.derive(tag);
            assert_eq!(d.seed, s.seed);
            assert_eq!(d, s.derive(tag), "deterministic");
            assert!(ids.insert(d.stream), "collision at tag {tag}");
            assert_ne!(d.block(0), s.block(0));
        }
        // Derived ids depend on the parent stream and seed too.
        assert_ne!(s.derive(1), RngStream::new(5, 1).derive(1));
        assert_ne!(s.derive(1).stream, RngStream::new(6, 0).derive(1).stream);
        assert_ne!(s.derive(1).derive(2), s.derive(2).derive(1));
        // Derived draws are not the parent's draws shifted.
        let (mut a, mut b) = ([0f32; 64], [0f32; 64]);
        s.fill_normal(0, &mut a);
        s.derive(0).fill_normal(0, &mut b);
        assert_ne!(a, b);
    }
}
