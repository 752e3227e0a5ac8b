//! [`ModuleKernels`] on the CPU: conv2d and its gradients (`conv.rs`),
//! GroupNorm, softmax, biases, resampling (`resample.rs`) and dropout, in
//! parallel with rayon over fixed-size chunks, rows or whole channel planes.

use super::math::{
    centered_dot_f64, centered_sq_f64, exp_f32, par_planes, plane_sums, reduce_batch, sum_f64,
};
use super::par::*;
use super::{alloc_zeros, conv, resample, tensor, CpuBackend, CpuTensor, CHUNK};
use crate::backend::plan::{
    ChannelDims, ConvGeometry, DropoutPlan, GroupNormPlan, ResamplePlan, RowsPlan,
};
use crate::backend::{Conv2dGrads, GroupNormGrads, GroupNormOut, ModuleKernels};
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
        let mut out = alloc_zeros("conv2d", &g.out_shape())?;
        conv::conv2d_forward(
            g,
            &x.data,
            &w.data,
            bias.map(|b| b.data.as_slice()),
            &mut out,
            self.threads,
        );
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
        let &GroupNormPlan { s, groups, cg, .. } = p;
        let glen = cg * s;
        let mut y = alloc_zeros(OP, &x.shape)?;
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
            stats: tensor(stats, &p.stats_shape()),
        })
    }

    fn group_norm_backward_planned(
        &self,
        p: &GroupNormPlan,
        x: &CpuTensor,
        gamma: &CpuTensor,
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
        } = p;
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

    fn softmax_planned(&self, p: &RowsPlan, x: &CpuTensor) -> Result<CpuTensor> {
        let n = p.len;
        let mut y = alloc_zeros("softmax", &x.shape)?;
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

    fn softmax_backward_planned(
        &self,
        p: &RowsPlan,
        y: &CpuTensor,
        dy: &CpuTensor,
    ) -> Result<CpuTensor> {
        let n = p.len;
        let mut dx = alloc_zeros("softmax_backward", &y.shape)?;
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

    fn add_bias_planned(
        &self,
        p: &ChannelDims,
        x: &CpuTensor,
        bias: &CpuTensor,
    ) -> Result<CpuTensor> {
        let (c, s) = (p.c, p.s);
        let mut out = alloc_zeros("add_bias", &x.shape)?;
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
        let mut out = alloc_zeros("add_sample_bias", &x.shape)?;
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
            sums.into_iter().map(|x| x as f32).collect(),
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
