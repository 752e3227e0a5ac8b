//! [`ScoreDdKernels`] on the GPU: `perturb.wgsl` and `paired_step.wgsl`
//! (four elements per invocation, each sample drawing from its own Philox
//! key, uploaded with its coefficients) and `pair_distance.wgsl`.

use bytemuck::{Pod, Zeroable};

use super::context::Bind;
use super::kernels;
use super::launch::{elems, grid_1d, sample_key, u32_of};
use super::params::*;
use super::{GpuBackend, GpuTensor};
use crate::backend::plan::{PairPlan, PerSamplePlan};
use crate::backend::{PairedState, PerturbCoef, Sampler, ScoreDdKernels, StepCoef};
use crate::error::Result;
use crate::rng::RngStream;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PerturbCoefGpu {
    mu: f32,
    sigma: f32,
    _pad: [f32; 2],
    key: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StepCoefGpu {
    f: f32,
    g: f32,
    sigma: f32,
    mu_next: f32,
    sigma_next: f32,
    dt: f32,
    _pad: [f32; 2],
    key: [u32; 4],
}

impl ScoreDdKernels for GpuBackend {
    fn perturb_planned(
        &self,
        p: &PerSamplePlan,
        x0: &GpuTensor,
        coef: &[PerturbCoef],
        rng: RngStream,
    ) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "perturb";
        let d = p.d;
        if d == 0 || coef.is_empty() {
            // No kernel runs: zeros, as the CPU backend gives.
            return Ok((
                self.tensor_zeroed(OP, &x0.shape)?,
                self.tensor_zeroed(OP, &x0.shape)?,
            ));
        }
        // The kernel writes every element of both (four per invocation).
        let xt = self.tensor_output(OP, &x0.shape)?;
        let z = self.tensor_output(OP, &x0.shape)?;
        u32_of(OP, "elements", x0.numel())?;
        let gpu_coef: Vec<PerturbCoefGpu> = coef
            .iter()
            .map(|c| PerturbCoefGpu {
                mu: c.mu,
                sigma: c.sigma,
                _pad: [0.0; 2],
                key: sample_key(rng, c.stream),
            })
            .collect();
        let coef_buf = self.upload_pod(OP, &gpu_coef)?;
        let params = PerturbParams {
            d: d as u32,
            batch: coef.len() as u32,
            ..Default::default()
        };
        let threads = d.div_ceil(4) as u64 * coef.len() as u64;
        self.ctx.dispatch(
            kernels::PERTURB,
            &[],
            &params,
            &[
                Bind::Storage(&coef_buf),
                Bind::Storage(&x0.buf),
                Bind::Storage(&xt.buf),
                Bind::Storage(&z.buf),
            ],
            grid_1d(threads, self.max_groups()),
        )?;
        Ok((xt, z))
    }

    fn paired_step_planned(
        &self,
        p: &PerSamplePlan,
        st: &mut PairedState<GpuTensor>,
        whole_score: &GpuTensor,
        coef: &[StepCoef],
        sampler: Sampler,
        rng: RngStream,
    ) -> Result<()> {
        const OP: &str = "paired_step";
        let d = p.d;
        if d == 0 || coef.is_empty() {
            return Ok(());
        }
        u32_of(OP, "elements", st.x0.numel())?;
        self.make_unique(OP, &mut st.whole)?;
        self.make_unique(OP, &mut st.own)?;
        self.make_unique(OP, &mut st.z)?;
        let gpu_coef: Vec<StepCoefGpu> = coef
            .iter()
            .map(|c| StepCoefGpu {
                f: c.f,
                g: c.g,
                sigma: c.sigma,
                mu_next: c.mu_next,
                sigma_next: c.sigma_next,
                dt: c.dt,
                _pad: [0.0; 2],
                key: sample_key(rng, c.stream),
            })
            .collect();
        let coef_buf = self.upload_pod(OP, &gpu_coef)?;
        let params = PairedStepParams {
            d: d as u32,
            batch: coef.len() as u32,
            sde: (sampler == Sampler::Sde) as u32,
            ..Default::default()
        };
        let threads = d.div_ceil(4) as u64 * coef.len() as u64;
        self.ctx.dispatch(
            kernels::PAIRED_STEP,
            &[],
            &params,
            &[
                Bind::Storage(&coef_buf),
                Bind::Storage(&st.x0.buf),
                Bind::Storage(&whole_score.buf),
                Bind::Storage(&st.whole.buf),
                Bind::Storage(&st.own.buf),
                Bind::Storage(&st.z.buf),
            ],
            grid_1d(threads, self.max_groups()),
        )?;
        Ok(())
    }

    fn pair_distance_planned(&self, p: &PairPlan, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "pair_distance";
        let out = self.tensor_output(OP, &p.out)?;
        elems(OP, x)?;
        let params = PairDistanceParams {
            n: u32_of(OP, "pairs", p.n)?,
            c: u32_of(OP, "channels", p.c)?,
            s: u32_of(OP, "pixels", p.s)?,
            relative: u32::from(p.relative),
        };
        self.launch_1d(
            kernels::PAIR_DISTANCE,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            (p.n * p.s) as u64,
        )?;
        Ok(out)
    }
}
