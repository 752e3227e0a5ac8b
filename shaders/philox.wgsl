// Philox4x32-10 counter-based RNG and Box–Muller Gaussians.
// Function library: prepended to other shaders; no bindings, no entry points.
// Mirrors src/rng.rs operation for operation (see its module docs for the
// layout): block n of stream (seed, stream) is
//   philox4x32_10(vec4(n_lo, n_hi, stream.x, stream.y), seed)
// and element i is lane i % 4 of block i / 4.
// ln and sincos are hand-written (Cephes polynomials) because the log/sin/cos
// builtins have vendor-specific precision; constants match rng.rs exactly.
// Names other than the four public functions carry a PHILOX_/RNG_/rng_ prefix
// to stay out of the including shader's way.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

const RNG_INV_2P23: f32 = 1.1920928955078125e-7f;
const RNG_SQRT_HALF: f32 = 0.70710677f;
const RNG_LN_P0: f32 = 7.0376836e-2f;
const RNG_LN_P1: f32 = -1.151461e-1f;
const RNG_LN_P2: f32 = 1.16769984e-1f;
const RNG_LN_P3: f32 = -1.2420141e-1f;
const RNG_LN_P4: f32 = 1.4249323e-1f;
const RNG_LN_P5: f32 = -1.6668057e-1f;
const RNG_LN_P6: f32 = 2.0000714e-1f;
const RNG_LN_P7: f32 = -2.4999994e-1f;
const RNG_LN_P8: f32 = 3.333333e-1f;
const RNG_LN2_HI: f32 = 0.693359375f;
const RNG_LN2_LO: f32 = -2.1219444e-4f;
const RNG_PIO2: f32 = 1.5707964f;
const RNG_SIN_P0: f32 = -1.9515296e-4f;
const RNG_SIN_P1: f32 = 8.332161e-3f;
const RNG_SIN_P2: f32 = -1.6666655e-1f;
const RNG_COS_P0: f32 = 2.4433157e-5f;
const RNG_COS_P1: f32 = -1.3887316e-3f;
const RNG_COS_P2: f32 = 4.1666646e-2f;

// 32x32 -> 64-bit product as (hi, lo). WGSL has no u64, so the high word is
// assembled from 16-bit partial products; none of the sums can overflow.
fn philox_mulhilo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xffffu;
    let ah = a >> 16u;
    let bl = b & 0xffffu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(hi, a * b);
}

fn philox4x32_10(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = ctr;
    var k = key;
    for (var i = 0u; i < 10u; i = i + 1u) {
        if (i > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let p0 = philox_mulhilo(PHILOX_M0, c.x);
        let p1 = philox_mulhilo(PHILOX_M1, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    }
    return c;
}

// Top 23 bits -> (k + 0.5) * 2^-23: exact, in [2^-24, 1 - 2^-24].
fn uniform_from_bits(x: u32) -> f32 {
    return (f32(x >> 9u) + 0.5) * RNG_INV_2P23;
}

// Natural log of a positive normal f32 (Cephes logf). Same ops as ln_f32 in rng.rs.
fn rng_ln(u: f32) -> f32 {
    let bits = bitcast<u32>(u);
    // u = m * 2^e with m in [0.5, 1).
    var e = i32((bits >> 23u) & 0xffu) - 126;
    var x = bitcast<f32>((bits & 0x007fffffu) | 0x3f000000u);
    // Keep 1 + x in [sqrt(.5), sqrt(2)); both subtractions are exact.
    if (x < RNG_SQRT_HALF) {
        e -= 1;
        x = x + x - 1.0;
    } else {
        x -= 1.0;
    }
    let z = x * x;
    var y = RNG_LN_P0;
    y = y * x + RNG_LN_P1;
    y = y * x + RNG_LN_P2;
    y = y * x + RNG_LN_P3;
    y = y * x + RNG_LN_P4;
    y = y * x + RNG_LN_P5;
    y = y * x + RNG_LN_P6;
    y = y * x + RNG_LN_P7;
    y = y * x + RNG_LN_P8;
    y = y * x * z;
    let fe = f32(e);
    y += RNG_LN2_LO * fe;
    y -= 0.5 * z;
    return (x + y) + RNG_LN2_HI * fe;
}

// (sin 2πu, cos 2πu) for u in [0, 1]. Exact reduction to the nearest quarter
// turn (4u and 4u - q are exact in f32), then Cephes sinf/cosf on |x| <= π/4.
fn rng_sincos_2pi(u: f32) -> vec2<f32> {
    let s4 = 4.0 * u;
    let q = floor(s4 + 0.5);
    let r = s4 - q;
    let x = r * RNG_PIO2;
    let z = x * x;
    let sn = ((RNG_SIN_P0 * z + RNG_SIN_P1) * z + RNG_SIN_P2) * z * x + x;
    let cs = ((RNG_COS_P0 * z + RNG_COS_P1) * z + RNG_COS_P2) * z * z - 0.5 * z + 1.0;
    let quadrant = u32(q) & 3u;
    if (quadrant == 1u) {
        return vec2<f32>(cs, -sn);
    } else if (quadrant == 2u) {
        return vec2<f32>(-sn, -cs);
    } else if (quadrant == 3u) {
        return vec2<f32>(-cs, sn);
    }
    return vec2<f32>(sn, cs);
}

// Box–Muller on lanes (0,1) and (2,3): (r cos θ, r sin θ), r = sqrt(-2 ln u_a), θ = 2π u_b.
fn normals_from_block(b: vec4<u32>) -> vec4<f32> {
    let r0 = sqrt(-2.0 * rng_ln(uniform_from_bits(b.x)));
    let sc0 = rng_sincos_2pi(uniform_from_bits(b.y));
    let r1 = sqrt(-2.0 * rng_ln(uniform_from_bits(b.z)));
    let sc1 = rng_sincos_2pi(uniform_from_bits(b.w));
    return vec4<f32>(r0 * sc0.y, r0 * sc0.x, r1 * sc1.y, r1 * sc1.x);
}

// Block (block_hi << 32 | block_lo) of stream (seed, stream); u64s as (lo, hi).
fn rng_block(seed: vec2<u32>, stream: vec2<u32>, block_lo: u32, block_hi: u32) -> vec4<u32> {
    return philox4x32_10(vec4<u32>(block_lo, block_hi, stream.x, stream.y), seed);
}
