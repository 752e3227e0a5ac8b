//! [`BackendKernels`] on the CPU: storage, Philox draws, GEMMs (matmul, and
//! bmm on strided views), the elementwise registry, and the batch and channel
//! shuffles.

use std::sync::Arc;

use super::gemm::{sgemm, MatRef};
use super::par::*;
use super::{alloc_output, alloc_zeros, pointwise, tensor, CpuBackend, CpuTensor, CHUNK};
use crate::backend::plan::{
    BmmPlan, ConcatPlan, MatmulPlan, PointwisePlan, SplitPlan, SumBatchPlan,
};
use crate::backend::{BackendKernels, BackendKind, Distribution};
use crate::error::Result;
use crate::rng::RngStream;

/// Matrix `i` of a bmm operand (`rows × cols` each; an unbatched operand is
/// the same matrix for every i), transposed as a strided view when `t`.
fn bmm_view(
    d: &[f32],
    batched: bool,
    i: usize,
    (rows, cols): (usize, usize),
    t: bool,
) -> MatRef<'_> {
    let len = rows * cols;
    let v = MatRef::new(
        if batched {
            &d[i * len..(i + 1) * len]
        } else {
            d
        },
        rows,
        cols,
    );
    if t {
        v.t()
    } else {
        v
    }
}

impl BackendKernels for CpuBackend {
    type Tensor = CpuTensor;

    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn describe(&self) -> String {
        format!("cpu ({} threads)", self.threads)
    }

    fn read(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.data.to_vec())
    }

    fn shape<'a>(&self, t: &'a CpuTensor) -> &'a [usize] {
        &t.shape
    }

    fn upload_planned(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        CpuTensor::new(data.to_vec(), shape)
    }

    fn zeros_planned(&self, shape: &[usize]) -> Result<CpuTensor> {
        Ok(tensor(alloc_zeros("zeros", shape)?, shape))
    }

    fn random_planned(
        &self,
        shape: &[usize],
        dist: Distribution,
        rng: RngStream,
    ) -> Result<CpuTensor> {
        let mut v = alloc_zeros("random", shape)?;
        // Whole Philox blocks per chunk, so chunks start on block boundaries.
        v.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
            let start = (i * CHUNK) as u64;
            match dist {
                Distribution::Uniform => rng.fill_uniform(start, c),
                Distribution::Normal => rng.fill_normal(start, c),
            }
        });
        Ok(tensor(v, shape))
    }

    fn reshape_planned(&self, x: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        Ok(CpuTensor {
            data: Arc::clone(&x.data),
            shape: shape.to_vec(),
        })
    }

    fn matmul_planned(&self, p: &MatmulPlan, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        let &MatmulPlan { m, k, n } = p;
        let mut c = alloc_output("matmul", &[m, n])?;
        sgemm(
            MatRef::new(&a.data, m, k),
            MatRef::new(&b.data, k, n),
            &mut c,
            false,
            self.threads,
        );
        Ok(tensor(c, &[m, n]))
    }

    fn bmm_planned(&self, p: &BmmPlan, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        let mut c = alloc_output("bmm", &p.out)?;
        if c.is_empty() {
            return Ok(tensor(c, &p.out));
        }
        let (m, k, n, nb) = (p.m, p.k, p.n, p.batch);
        // The i-th operand matrices, transposes as strided views.
        let a_i = |i| bmm_view(&a.data, p.a_batched, i, p.a_dims(), p.ta);
        let b_i = |i| bmm_view(&b.data, p.b_batched, i, p.b_dims(), p.tb);
        let threads = self.threads;
        if p.a_batched && !p.b_batched && !p.ta {
            // A batch of row-major A against one B: a single [B·M, K] GEMM.
            sgemm(
                MatRef::new(&a.data, nb * m, k),
                b_i(0),
                &mut c,
                false,
                threads,
            );
        } else if nb >= threads && threads > 1 {
            c.par_chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, ci)| sgemm(a_i(i), b_i(i), ci, false, 1));
        } else {
            for (i, ci) in c.chunks_mut(m * n).enumerate() {
                sgemm(a_i(i), b_i(i), ci, false, threads);
            }
        }
        Ok(tensor(c, &p.out))
    }

    fn pointwise_planned(&self, p: &PointwisePlan, inputs: &[&CpuTensor]) -> Result<CpuTensor> {
        let mut out = alloc_output(p.op.name(), &p.shape)?;
        let data: Vec<&[f32]> = inputs.iter().map(|t| t.data.as_slice()).collect();
        pointwise::run(p, &data, &mut out);
        Ok(tensor(out, &p.shape))
    }

    fn sum_batch_planned(&self, p: &SumBatchPlan, x: &CpuTensor) -> Result<CpuTensor> {
        let mut out = alloc_zeros("sum_batch", &p.out)?;
        let d = p.d;
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, o)| {
            let off = i * CHUNK;
            for j in 0..p.batch {
                let src = &x.data[j * d + off..][..o.len()];
                o.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
            }
        });
        Ok(tensor(out, &p.out))
    }

    fn concat_channels_planned(
        &self,
        p: &ConcatPlan,
        a: &CpuTensor,
        b: &CpuTensor,
    ) -> Result<CpuTensor> {
        let mut out = alloc_output("concat_channels", &p.out)?;
        let (la, lb) = (p.ca * p.s, p.cb * p.s);
        if la + lb > 0 {
            out.par_chunks_mut(la + lb).enumerate().for_each(|(i, o)| {
                o[..la].copy_from_slice(&a.data[i * la..(i + 1) * la]);
                o[la..].copy_from_slice(&b.data[i * lb..(i + 1) * lb]);
            });
        }
        Ok(tensor(out, &p.out))
    }

    fn split_channels_planned(
        &self,
        p: &SplitPlan,
        x: &CpuTensor,
    ) -> Result<(CpuTensor, CpuTensor)> {
        const OP: &str = "split_channels";
        let (mut a, mut b) = (alloc_output(OP, &p.out_a)?, alloc_output(OP, &p.out_b)?);
        let (la, lb) = (p.ca * p.dims.s, (p.dims.c - p.ca) * p.dims.s);
        if la > 0 {
            a.par_chunks_mut(la)
                .enumerate()
                .for_each(|(i, o)| o.copy_from_slice(&x.data[i * (la + lb)..][..la]));
        }
        if lb > 0 {
            b.par_chunks_mut(lb)
                .enumerate()
                .for_each(|(i, o)| o.copy_from_slice(&x.data[i * (la + lb) + la..][..lb]));
        }
        Ok((tensor(a, &p.out_a), tensor(b, &p.out_b)))
    }
}
