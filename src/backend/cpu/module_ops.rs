//! [`ModuleKernels`] on the CPU: conv2d and its gradients (`conv.rs`),
//! GroupNorm, softmax, biases, resampling (`resample.rs`) and dropout, in
//! parallel with rayon over fixed-size chunks, rows or whole channel planes.

use super::math::{
    centered_dot_f64, centered_sq_f64, exp_f32, par_planes, plane_sums, reduce_batch, sum_f64,
};
use super::memory::HostBuf;
use super::par::*;
use super::simd::vectorized;
use super::{alloc_output, alloc_zeros, conv, resample, tensor, CpuBackend, CpuTensor, CHUNK};
use crate::backend::plan::{
    ChannelDims, ConvGeometry, DropoutPlan, GroupNormPlan, NormAct, ResamplePlan, RowsPlan,
};
use crate::backend::{Conv2dGrads, ConvEpilogue, GroupNormGrads, GroupNormOut, ModuleKernels};
use crate::error::Result;
use crate::rng::RngStream;

/// Rows per parallel softmax task: about [`CHUNK`] elements each.
fn rows_per_task(n: usize) -> usize {
    (CHUNK / n.max(1)).max(1)
}

impl ModuleKernels for CpuBackend {
    fn conv2d_planned(
        &self,
        g: &ConvGeometry,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        let mut out = alloc_output("conv2d", &g.out_shape())?;
        let ep = conv::Epilogue::bias(bias.map(|b| b.data.as_slice()));
        conv::conv2d_forward(g, &x.data, &w.data, &ep, &mut out, self.threads);
        Ok(tensor(out, &g.out_shape()))
    }

    fn conv2d_fused_planned(
        &self,
        g: &ConvGeometry,
        x: &CpuTensor,
        w: &CpuTensor,
        e: ConvEpilogue<'_, CpuTensor>,
    ) -> Result<CpuTensor> {
        let mut out = alloc_output("conv2d_fused", &g.out_shape())?;
        let ep = conv::Epilogue {
            bias: Some(&e.bias.data),
            sample_bias: e.sample_bias.map(|t| t.data.as_slice()),
            residual: e.residual.map(|t| t.data.as_slice()),
            scale: e.scale,
        };
        conv::conv2d_forward(g, &x.data, &w.data, &ep, &mut out, self.threads);
        Ok(tensor(out, &g.out_shape()))
    }

    fn conv2d_backward_planned(
        &self,
        g: &ConvGeometry,
        x: &CpuTensor,
        w: &CpuTensor,
        dy: &CpuTensor,
    ) -> Result<Conv2dGrads<CpuTensor>> {
        conv::conv2d_backward(g, x, w, dy, self.threads)
    }

    fn group_norm_planned(
        &self,
        p: &GroupNormPlan,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        eps: f32,
    ) -> Result<GroupNormOut<CpuTensor>> {
        const OP: &str = "group_norm";
        let &GroupNormPlan {
            s, groups, cg, act, ..
        } = p;
        let glen = cg * s;
        let mut y = alloc_output(OP, &x.shape)?;
        let mut stats = alloc_zeros(OP, &p.stats_shape())?;
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
                    vectorized(
                        #[inline(always)]
                        || {
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
                                match act {
                                    NormAct::Identity => {
                                        for (y, &x) in yc.iter_mut().zip(xc) {
                                            *y = (x - mean) * a + bb;
                                        }
                                    }
                                    NormAct::Silu => {
                                        for (y, &x) in yc.iter_mut().zip(xc) {
                                            *y = silu((x - mean) * a + bb);
                                        }
                                    }
                                }
                            }
                        },
                    )
                });
        }
        Ok(GroupNormOut {
            y: tensor(y, &x.shape),
            stats: tensor(stats, &p.stats_shape()),
        })
    }

    fn group_norm_backward_planned(
        &self,
        p: &GroupNormPlan,
        x: &CpuTensor,
        gamma: &CpuTensor,
        beta: Option<&CpuTensor>,
        stats: &CpuTensor,
        dy: &CpuTensor,
    ) -> Result<GroupNormGrads<CpuTensor>> {
        const OP: &str = "group_norm_backward";
        let &GroupNormPlan {
            batch: b,
            c,
            s,
            groups,
            cg,
            ..
        } = p;
        let glen = cg * s;
        // dx starts as the gradient reaching the normalised output (dy, or
        // dy·silu'(x̂γ + β) when fused, written over it below) and is turned
        // into dx in place.
        let mut dx = match beta {
            None => HostBuf::clone(&dy.data),
            Some(_) => alloc_output(OP, &x.shape)?,
        };
        // Per (sample, channel): Σ dy and Σ dy·x̂ over space.
        let mut s1 = vec![0.0f64; b * c];
        let mut s2 = vec![0.0f64; b * c];
        let gamma = &gamma.data[..];
        let beta = beta.map(|t| &t.data[..]);
        if glen > 0 {
            dx.par_chunks_mut(glen)
                .zip(x.data.par_chunks(glen))
                .zip(dy.data.par_chunks(glen))
                .zip(stats.data.par_chunks(2))
                .zip(s1.par_chunks_mut(cg))
                .zip(s2.par_chunks_mut(cg))
                .enumerate()
                .for_each(|(i, (((((dxg, xg), dyg), st), s1), s2))| {
                    vectorized(
                        #[inline(always)]
                        || {
                            let c0 = (i % groups) * cg;
                            let affine = GroupAffine {
                                mean: st[0],
                                rstd: st[1],
                                gamma: &gamma[c0..c0 + cg],
                                s,
                            };
                            if let Some(beta) = beta {
                                affine.silu_grad(dxg, xg, dyg, &beta[c0..c0 + cg]);
                            }
                            affine.backward_in_place(dxg, xg, s1, s2);
                        },
                    )
                });
        }
        Ok(GroupNormGrads {
            dx: tensor(dx, &x.shape),
            dgamma: tensor(reduce_batch(&s2, c), &[c]),
            dbeta: tensor(reduce_batch(&s1, c), &[c]),
        })
    }

    fn softmax_planned(&self, p: &RowsPlan, x: &CpuTensor) -> Result<CpuTensor> {
        let n = p.len;
        let mut y = alloc_output("softmax", &x.shape)?;
        if n > 0 {
            let rpt = rows_per_task(n);
            y.par_chunks_mut(rpt * n)
                .zip(x.data.par_chunks(rpt * n))
                .for_each(|(ys, xs)| {
                    vectorized(
                        #[inline(always)]
                        || {
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
                        },
                    )
                });
        }
        Ok(tensor(y, &x.shape))
    }

    fn softmax_backward_planned(
        &self,
        p: &RowsPlan,
        y: &CpuTensor,
        dy: &CpuTensor,
    ) -> Result<CpuTensor> {
        let n = p.len;
        let mut dx = alloc_output("softmax_backward", &y.shape)?;
        if n > 0 {
            let rpt = rows_per_task(n);
            dx.par_chunks_mut(rpt * n)
                .zip(y.data.par_chunks(rpt * n))
                .zip(dy.data.par_chunks(rpt * n))
                .for_each(|((dxs, ys), dys)| {
                    vectorized(
                        #[inline(always)]
                        || {
                            for ((dx, y), dy) in
                                dxs.chunks_mut(n).zip(ys.chunks(n)).zip(dys.chunks(n))
                            {
                                let dot: f32 = y.iter().zip(dy).map(|(&y, &d)| y * d).sum();
                                for ((dx, &y), &d) in dx.iter_mut().zip(y).zip(dy) {
                                    *dx = y * (d - dot);
                                }
                            }
                        },
                    )
                });
        }
        Ok(tensor(dx, &y.shape))
    }

    fn add_bias_planned(
        &self,
        p: &ChannelDims,
        x: &CpuTensor,
        bias: &CpuTensor,
    ) -> Result<CpuTensor> {
        let (c, s) = (p.c, p.s);
        let mut out = alloc_output("add_bias", &x.shape)?;
        par_planes(
            &x.data,
            s,
            &mut out,
            s,
            || (),
            |_, i, xp, o| {
                let v = bias.data[i % c];
                o.iter_mut().zip(xp).for_each(|(o, &x)| *o = x + v);
            },
        );
        Ok(tensor(out, &x.shape))
    }

    fn bias_grad_planned(&self, p: &ChannelDims, dy: &CpuTensor) -> Result<CpuTensor> {
        let sums = plane_sums(&dy.data, p.s);
        Ok(tensor(reduce_batch(&sums, p.c), &[p.c]))
    }

    fn add_sample_bias_planned(
        &self,
        p: &ChannelDims,
        x: &CpuTensor,
        t: &CpuTensor,
    ) -> Result<CpuTensor> {
        let mut out = alloc_output("add_sample_bias", &x.shape)?;
        par_planes(
            &x.data,
            p.s,
            &mut out,
            p.s,
            || (),
            |_, i, xp, o| {
                let v = t.data[i];
                o.iter_mut().zip(xp).for_each(|(o, &x)| *o = x + v);
            },
        );
        Ok(tensor(out, &x.shape))
    }

    fn sample_bias_grad_planned(&self, p: &ChannelDims, dy: &CpuTensor) -> Result<CpuTensor> {
        let &ChannelDims { batch: b, c, s } = p;
        let sums = if s == 0 {
            vec![0.0; b * c]
        } else {
            plane_sums(&dy.data, s)
        };
        Ok(tensor(
            sums.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
            &[b, c],
        ))
    }

    fn resample_planned(&self, p: &ResamplePlan, x: &CpuTensor) -> Result<CpuTensor> {
        resample::resample(p, x)
    }

    fn dropout_mask_planned(&self, p: &DropoutPlan, rng: RngStream) -> Result<CpuTensor> {
        let mut m = alloc_zeros("dropout_mask", &p.shape)?;
        let (drop, keep) = (p.p, p.keep);
        m.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            rng.fill_uniform((i * CHUNK) as u64, c);
            for v in c.iter_mut() {
                *v = if *v >= drop { keep } else { 0.0 };
            }
        });
        Ok(tensor(m, &p.shape))
    }
}

/// x / (1 + e^−x), as the pointwise SiLU.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// One (sample, group) of a GroupNorm: its statistics and its channels' γ.
struct GroupAffine<'a> {
    mean: f32,
    rstd: f32,
    gamma: &'a [f32],
    /// Elements per channel.
    s: usize,
}

impl GroupAffine<'_> {
    /// out = dy·silu'(h) with the pre-activation h = x̂·γ + β recomputed.
    #[inline(always)]
    fn silu_grad(&self, out: &mut [f32], x: &[f32], dy: &[f32], beta: &[f32]) {
        let s = self.s;
        for (j, ((oc, xc), dyc)) in out
            .chunks_mut(s)
            .zip(x.chunks(s))
            .zip(dy.chunks(s))
            .enumerate()
        {
            let (a, b) = (self.rstd * self.gamma[j], beta[j]);
            for ((o, &x), &dy) in oc.iter_mut().zip(xc).zip(dyc) {
                let h = (x - self.mean) * a + b;
                let sg = 1.0 / (1.0 + exp_f32(-h));
                *o = dy * sg * (1.0 + h * (1.0 - sg));
            }
        }
    }

    /// Turns `d` (the gradient at the normalised output) into dx in place and
    /// writes the per-channel Σ d and Σ d·x̂ into `s1`, `s2`:
    /// dx = rstd·(γ·d − mean(γ·d) − x̂·mean(γ·d·x̂)).
    #[inline(always)]
    fn backward_in_place(&self, d: &mut [f32], x: &[f32], s1: &mut [f64], s2: &mut [f64]) {
        let s = self.s;
        let (mean, rstd) = (self.mean as f64, self.rstd as f64);
        let (mut ga, mut gb) = (0.0f64, 0.0f64);
        for (j, (xc, dc)) in x.chunks(s).zip(d.chunks(s)).enumerate() {
            s1[j] = sum_f64(dc);
            s2[j] = centered_dot_f64(dc, xc, mean) * rstd;
            ga += self.gamma[j] as f64 * s1[j];
            gb += self.gamma[j] as f64 * s2[j];
        }
        let n = d.len() as f64;
        let k2 = (rstd * ga / n) as f32;
        let k3 = (rstd * rstd * gb / n) as f32;
        for (j, (dc, xc)) in d.chunks_mut(s).zip(x.chunks(s)).enumerate() {
            let k1 = (rstd * self.gamma[j] as f64) as f32;
            for (d, &x) in dc.iter_mut().zip(xc) {
                *d = k1 * *d - k2 - (x - self.mean) * k3;
            }
        }
    }
}
