//! [`TrainKernels`] on the CPU: the oracle for the WGSL kernels. Plain Rust over
//! rayon chunks; every reduction in f64; the pointwise updates evaluate the
//! same f32 expressions as `shaders/optim.wgsl` and `shaders/dsm_loss.wgsl`.

use std::sync::Arc;

use super::par::*;

use super::{alloc_output, tensor, CpuBackend, CpuTensor, CHUNK};
use crate::backend::plan::{AdamPlan, DsmPlan};
use crate::backend::{AdamStep, TrainKernels};
use crate::error::Result;

/// Σ x² in f64, eight lanes so the loop vectorises.
fn sum_sq_f64(v: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x as f64 * x as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Chunk sums in parallel, added in chunk order: rayon's own `sum` groups the
/// additions by how work was stolen, which would make training irreproducible.
fn par_sum_sq(v: &[f32]) -> f64 {
    let parts: Vec<f64> = v.par_chunks(CHUNK).map(sum_sq_f64).collect();
    parts.iter().sum()
}

fn scalar(v: f64) -> CpuTensor {
    tensor(vec![v as f32], &[1])
}

impl TrainKernels for CpuBackend {
    fn dsm_loss_planned(
        &self,
        p: &DsmPlan,
        out: &CpuTensor,
        z: &CpuTensor,
        sign: f32,
    ) -> Result<(CpuTensor, CpuTensor)> {
        let d = p.d;
        let mut dout = alloc_output("dsm_loss", &out.shape)?;
        // One task per sample.
        let loss: f64 = dout
            .par_chunks_mut(d)
            .zip(out.data.par_chunks(d))
            .zip(z.data.par_chunks(d))
            .zip(p.factors.par_iter())
            .map(|(((g, o), z), &[c, gf])| {
                let mut s = 0.0f64;
                for ((g, &o), &z) in g.iter_mut().zip(o).zip(z) {
                    let r = sign * o + z;
                    *g = gf * r;
                    s += r as f64 * r as f64;
                }
                c as f64 * s
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum(); // in sample order, so the loss is reproducible
        Ok((scalar(loss), tensor(dout, &out.shape)))
    }

    fn sum_squares_planned(
        &self,
        _n: usize,
        acc: Option<&CpuTensor>,
        x: &CpuTensor,
    ) -> Result<CpuTensor> {
        let acc = acc.map_or(0.0, |a| a.data[0] as f64);
        Ok(scalar(acc + par_sum_sq(&x.data)))
    }

    fn adam_step_planned(
        &self,
        plan: &AdamPlan,
        param: &mut CpuTensor,
        grad: &CpuTensor,
        m: &mut CpuTensor,
        v: &mut CpuTensor,
        hp: &AdamStep,
        grad_sq_total: &CpuTensor,
    ) -> Result<()> {
        let (bc1, bc2) = (plan.bc1, plan.bc2);
        let total = grad_sq_total.data[0];
        if !total.is_finite() {
            return Ok(());
        }
        let scale = hp.clip_scale(total);
        let (b1, b2, lr, eps) = (hp.beta1, hp.beta2, hp.lr, hp.eps);
        let (p, m, v) = (
            Arc::make_mut(&mut param.data),
            Arc::make_mut(&mut m.data),
            Arc::make_mut(&mut v.data),
        );
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(grad.data.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                    let g = scale * g;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * (g * g);
                    let mhat = *m / bc1;
                    let vhat = *v / bc2;
                    *p -= lr * mhat / (vhat.sqrt() + eps);
                }
            });
        Ok(())
    }

    fn ema_update_planned(
        &self,
        _n: usize,
        ema: &mut CpuTensor,
        param: &CpuTensor,
        rate: f32,
    ) -> Result<()> {
        let e = Arc::make_mut(&mut ema.data);
        e.par_chunks_mut(CHUNK)
            .zip(param.data.par_chunks(CHUNK))
            .for_each(|(e, p)| {
                for (e, &p) in e.iter_mut().zip(p) {
                    *e = rate * *e + (1.0 - rate) * p;
                }
            });
        Ok(())
    }
}
