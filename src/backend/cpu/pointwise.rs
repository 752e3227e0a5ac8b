//! The elementwise registry ([`Pointwise`]) on the CPU: one `match` arm per
//! op, each a per-element closure run over parallel chunks. The closure is
//! monomorphised into its own loop, so every op's loop vectorises as a
//! hand-written one would.

use super::math::exp_f32;
use super::par::*;
use super::simd::vectorized;
use super::CHUNK;
use crate::backend::plan::PointwisePlan;
use crate::backend::Pointwise;

/// out = op(inputs…) elementwise; `inputs` as many as the op's operands, all
/// of `out`'s length (the plan checked both).
pub(super) fn run(p: &PointwisePlan, inputs: &[&[f32]], out: &mut [f32]) {
    let [alpha, beta] = p.scalars;
    match p.op {
        // x / (1 + e^−x); e^−x is clamped at e^87, so far left the result is
        // a tiny negative number (|·| < 1e-35 for x < −87) rather than −0.
        Pointwise::Silu => unary(inputs, out, |x| x / (1.0 + exp_f32(-x))),
        Pointwise::SiluBackward => binary(inputs, out, |x, dy| {
            let s = 1.0 / (1.0 + exp_f32(-x));
            dy * s * (1.0 + x * (1.0 - s))
        }),
        Pointwise::Mul => binary(inputs, out, |a, b| a * b),
        Pointwise::Axpby => binary(inputs, out, |a, b| alpha * a + beta * b),
    }
}

/// out = f(a), in parallel. (Plain loops over slices: they vectorise
/// reliably, where rayon's collect depends on inlining luck.)
fn unary(inputs: &[&[f32]], out: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    let [a] = inputs else {
        unreachable!("the plan checked the operand count")
    };
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .for_each(|(o, a)| {
            vectorized(
                #[inline(always)]
                || {
                    for (o, &a) in o.iter_mut().zip(a) {
                        *o = f(a);
                    }
                },
            )
        });
}

/// out = f(a, b), in parallel.
fn binary(inputs: &[&[f32]], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    let [a, b] = inputs else {
        unreachable!("the plan checked the operand count")
    };
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .zip(b.par_chunks(CHUNK))
        .for_each(|((o, a), b)| {
            vectorized(
                #[inline(always)]
                || {
                    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                        *o = f(a, b);
                    }
                },
            )
        });
}
