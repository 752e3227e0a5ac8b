//! [`ScoreDdKernels`] on the CPU: one parallel task per sample, each drawing
//! from its own Philox stream, so a sample's noise is the same in any batch
//! and on the GPU.

use std::sync::Arc;

use super::par::*;
use super::{alloc_output, alloc_zeros, tensor, CpuBackend, CpuTensor};
use crate::backend::plan::{PairPlan, PerSamplePlan};
use crate::backend::{reverse_update, PairedState, PerturbCoef, Sampler, ScoreDdKernels, StepCoef};
use crate::error::Result;
use crate::rng::RngStream;

impl ScoreDdKernels for CpuBackend {
    fn perturb_planned(
        &self,
        p: &PerSamplePlan,
        x0: &CpuTensor,
        coef: &[PerturbCoef],
        rng: RngStream,
    ) -> Result<(CpuTensor, CpuTensor)> {
        let d = p.d;
        let mut xt = alloc_output("perturb", &x0.shape)?;
        let mut z = alloc_output("perturb", &x0.shape)?;
        if d > 0 {
            xt.par_chunks_mut(d)
                .zip(z.par_chunks_mut(d))
                .zip(x0.data.par_chunks(d))
                .zip(coef.par_iter())
                .for_each(|(((xt, z), x0), c)| {
                    rng.derive(c.stream).fill_normal(0, z);
                    for ((xt, &z), &x0) in xt.iter_mut().zip(z.iter()).zip(x0) {
                        *xt = c.mu * x0 + c.sigma * z;
                    }
                });
        }
        Ok((tensor(xt, &x0.shape), tensor(z, &x0.shape)))
    }

    fn paired_step_planned(
        &self,
        p: &PerSamplePlan,
        st: &mut PairedState<CpuTensor>,
        whole_score: &CpuTensor,
        coef: &[StepCoef],
        sampler: Sampler,
        rng: RngStream,
    ) -> Result<()> {
        let d = p.d;
        if d == 0 {
            return Ok(());
        }
        let x0 = st.x0.data.clone();
        let (whole, own, z) = (
            Arc::make_mut(&mut st.whole.data),
            Arc::make_mut(&mut st.own.data),
            Arc::make_mut(&mut st.z.data),
        );
        let sde = sampler == Sampler::Sde;
        whole
            .par_chunks_mut(d)
            .zip(own.par_chunks_mut(d))
            .zip(z.par_chunks_mut(d))
            .zip(x0.par_chunks(d))
            .zip(whole_score.data.par_chunks(d))
            .zip(coef.par_iter())
            .for_each(|(((((whole, own), z), x0), s), c)| {
                let mut noise = vec![0.0f32; if sde { d } else { 0 }];
                if sde {
                    rng.derive(c.stream).fill_normal(0, &mut noise);
                }
                for j in 0..d {
                    let n = if sde { noise[j] } else { 0.0 };
                    let self_score = -z[j] / c.sigma;
                    whole[j] = reverse_update(whole[j], s[j], c, sampler, n);
                    own[j] = reverse_update(own[j], self_score, c, sampler, n);
                    z[j] = (own[j] - c.mu_next * x0[j]) / c.sigma_next;
                }
            });
        Ok(())
    }

    fn pair_distance_planned(&self, p: &PairPlan, x: &CpuTensor) -> Result<CpuTensor> {
        let &PairPlan {
            n, c, s, relative, ..
        } = p;
        let mut out = alloc_zeros("pair_distance", &p.out)?;
        if s > 0 {
            out.par_chunks_mut(s).enumerate().for_each(|(i, o)| {
                let (a, b) = (&x.data[i * c * s..], &x.data[(n + i) * c * s..]);
                let mut norms = vec![[0f32; 2]; if relative { s } else { 0 }];
                for ch in 0..c {
                    let (a, b) = (&a[ch * s..][..s], &b[ch * s..][..s]);
                    for ((o, &u), &v) in o.iter_mut().zip(a).zip(b) {
                        *o += (u - v) * (u - v);
                    }
                    for ((nm, &u), &v) in norms.iter_mut().zip(a).zip(b) {
                        nm[0] += u * u;
                        nm[1] += v * v;
                    }
                }
                o.iter_mut().for_each(|v| *v = v.sqrt());
                for (v, nm) in o.iter_mut().zip(&norms) {
                    *v /= nm[0].sqrt() + nm[1].sqrt() + RELATIVE_EPS;
                }
            });
        }
        Ok(tensor(out, &p.out))
    }
}

/// Added to the norms a relative distance divides by (as in `pair_distance.wgsl`).
const RELATIVE_EPS: f32 = 1e-6;
