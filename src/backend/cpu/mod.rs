//! The CPU backend: every op in plain Rust, multi-threaded with rayon, GEMMs
//! through the `gemm` crate (in the browser: serial, GEMMs through
//! `matrixmultiply`). It is the oracle the WGSL kernels are tested against and
//! the fallback where no GPU adapter exists.

mod conv;
pub mod gemm;
// The network ops (`MatOps`, `LayerOps`): implemented in their own files.
mod layer_ops;
mod mat_ops;
pub mod memory;
// rayon natively, serial std iterators on wasm32.
mod par;
// The training ops (`TrainOps`).
mod train_ops;

use std::sync::Arc;

use par::*;

use super::{
    matmul_dims, numel, paired_step_len, per_sample_len, Backend, BackendKind, Conv2dSpec,
    ConvGeometry, Distribution, PairedState, PerturbCoef, Sampler, StepCoef,
};
use crate::error::{Error, Result};
use crate::rng::RngStream;

/// A host tensor. The data is shared copy-on-write, so cloning is cheap.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    pub data: Arc<Vec<f32>>,
    pub shape: Vec<usize>,
}

impl CpuTensor {
    pub fn new(data: Vec<f32>, shape: &[usize]) -> Result<Self> {
        let n = numel("tensor", shape)?;
        if n != data.len() {
            return Err(Error::shape(
                "tensor",
                format!("{} values for shape {shape:?} ({n} elements)", data.len()),
            ));
        }
        Ok(CpuTensor {
            data: Arc::new(data),
            shape: shape.to_vec(),
        })
    }
    fn data_mut(&mut self) -> &mut [f32] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }
}

#[derive(Clone, Debug)]
pub struct CpuBackend {
    threads: usize,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    pub fn new() -> Self {
        memory::keep_freed_memory();
        CpuBackend {
            threads: par::current_num_threads().max(1),
        }
    }
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// Largest tensor we agree to allocate on the host: bigger is surely a mistake.
const MAX_HOST_BYTES: u64 = 1 << 36;

fn alloc_zeros(op: &'static str, shape: &[usize]) -> Result<Vec<f32>> {
    let n = numel(op, shape)?;
    let bytes = n as u64 * 4;
    if bytes > MAX_HOST_BYTES {
        return Err(Error::TooLarge {
            op,
            bytes,
            what: "host tensor",
            limit: MAX_HOST_BYTES,
        });
    }
    Ok(vec![0.0; n])
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn describe(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        let n = numel("upload", shape)?;
        if n != data.len() {
            return Err(Error::shape(
                "upload",
                format!("{} values for shape {shape:?} ({n} elements)", data.len()),
            ));
        }
        CpuTensor::new(data.to_vec(), shape)
    }

    fn zeros(&self, shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor {
            data: Arc::new(alloc_zeros("zeros", shape)?),
            shape: shape.to_vec(),
        })
    }

    fn read(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.as_ref().clone())
    }

    fn shape<'a>(&self, t: &'a CpuTensor) -> &'a [usize] {
        &t.shape
    }

    fn random(&self, shape: &[usize], dist: Distribution, rng: RngStream) -> Result<CpuTensor> {
        let mut v = alloc_zeros("random", shape)?;
        // Whole Philox blocks per chunk, so chunks start on block boundaries.
        const CHUNK: usize = 1 << 14;
        v.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            let start = (i * CHUNK) as u64;
            match dist {
                Distribution::Uniform => rng.fill_uniform(start, c),
                Distribution::Normal => rng.fill_normal(start, c),
            }
        });
        CpuTensor::new(v, shape)
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        let (m, k, n) = matmul_dims(&a.shape, &b.shape)?;
        let mut c = alloc_zeros("matmul", &[m, n])?;
        gemm::sgemm(
            gemm::MatRef::new(&a.data, m, k),
            gemm::MatRef::new(&b.data, k, n),
            &mut c,
            false,
            self.threads,
        );
        CpuTensor::new(c, &[m, n])
    }

    fn conv2d(
        &self,
        x: &CpuTensor,
        w: &CpuTensor,
        bias: Option<&CpuTensor>,
        spec: Conv2dSpec,
    ) -> Result<CpuTensor> {
        let g = ConvGeometry::new(&x.shape, &w.shape, bias.map(|b| b.shape.as_slice()), spec)?;
        let mut out = alloc_zeros("conv2d", &g.out_shape())?;
        conv::conv2d_forward(
            &g,
            &x.data,
            &w.data,
            bias.map(|b| b.data.as_slice()),
            &mut out,
            self.threads,
        );
        CpuTensor::new(out, &g.out_shape())
    }

    fn perturb(
        &self,
        x0: &CpuTensor,
        coef: &[PerturbCoef],
        rng: RngStream,
    ) -> Result<(CpuTensor, CpuTensor)> {
        let d = per_sample_len("perturb", &x0.shape, coef.len())?;
        let mut xt = alloc_zeros("perturb", &x0.shape)?;
        let mut z = alloc_zeros("perturb", &x0.shape)?;
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
        Ok((
            CpuTensor::new(xt, &x0.shape)?,
            CpuTensor::new(z, &x0.shape)?,
        ))
    }

    fn paired_step(
        &self,
        st: &mut PairedState<CpuTensor>,
        whole_score: &CpuTensor,
        coef: &[StepCoef],
        sampler: Sampler,
        rng: RngStream,
    ) -> Result<()> {
        let d = paired_step_len(
            [&st.x0.shape, &st.whole.shape, &st.own.shape, &st.z.shape],
            &whole_score.shape,
            coef.len(),
        )?;
        if d == 0 {
            return Ok(());
        }
        let x0 = st.x0.data.clone();
        let (whole, own, z) = (
            Arc::make_mut(&mut st.whole.data),
            Arc::make_mut(&mut st.own.data),
            Arc::make_mut(&mut st.z.data),
        );
        whole
            .par_chunks_mut(d)
            .zip(own.par_chunks_mut(d))
            .zip(z.par_chunks_mut(d))
            .zip(x0.par_chunks(d))
            .zip(whole_score.data.par_chunks(d))
            .zip(coef.par_iter())
            .for_each(|(((((whole, own), z), x0), s), c)| {
                let mut noise = vec![0.0f32; if sampler == Sampler::Sde { d } else { 0 }];
                if sampler == Sampler::Sde {
                    rng.derive(c.stream).fill_normal(0, &mut noise);
                }
                for j in 0..d {
                    let n = if sampler == Sampler::Sde {
                        noise[j]
                    } else {
                        0.0
                    };
                    let self_score = -z[j] / c.sigma;
                    whole[j] = reverse_update(whole[j], s[j], c, sampler, n);
                    own[j] = reverse_update(own[j], self_score, c, sampler, n);
                    z[j] = (own[j] - c.mu_next * x0[j]) / c.sigma_next;
                }
            });
        Ok(())
    }
}

/// One Euler step of the reverse-time process for a single value; the WGSL
/// kernel `paired_step.wgsl` writes the same expression.
#[inline]
pub fn reverse_update(x: f32, score: f32, c: &StepCoef, sampler: Sampler, noise: f32) -> f32 {
    let g2 = c.g * c.g;
    match sampler {
        Sampler::Ode => x + (-c.f * x + 0.5 * g2 * score) * c.dt,
        Sampler::Sde => x + (-c.f * x + g2 * score) * c.dt + c.g * c.dt.sqrt() * noise,
    }
}

impl CpuBackend {
    /// Mutable access for in-place CPU code (layers' backward passes).
    pub fn data_mut<'a>(&self, t: &'a mut CpuTensor) -> &'a mut [f32] {
        t.data_mut()
    }
}
