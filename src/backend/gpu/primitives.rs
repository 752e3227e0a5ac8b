//! [`BackendKernels`] on the GPU: buffers, Philox draws (`rng_fill.wgsl`),
//! matmul (`matmul*.wgsl`), bmm on packed operands (`bmm.wgsl`), the
//! elementwise registry (`elementwise.wgsl`, found by entry name), sums over
//! the batch and channel shuffles. Every op only records dispatches into the
//! context's batched encoder: no host round trips.
//!
//! Kernels index with u32, so every tensor an op touches must have fewer than
//! 2³² elements (else `Error::Shape`); outputs are always fresh buffers, so an
//! op may read the same tensor through several bindings.

use std::sync::Arc;

use super::context::Bind;
use super::kernels;
use super::launch::{elems, grid_1d, grid_2d, grid_3d, pad8, rng_key, u32_of, PackView, WG};
use super::params::*;
use super::{GpuBackend, GpuBuf, GpuTensor};
use crate::backend::plan::{
    BmmPlan, ConcatPlan, MatmulPlan, PointwisePlan, SplitPlan, SumBatchPlan,
};
use crate::backend::{BackendKernels, BackendKind, Distribution};
use crate::error::{Error, Result};
use crate::rng::RngStream;

impl BackendKernels for GpuBackend {
    type Tensor = GpuTensor;

    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn describe(&self) -> String {
        let i = &self.ctx.info;
        format!(
            "gpu: {} ({:?}, {:?}, driver {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    fn read(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        // The browser cannot block on the GPU: reads there go through `read_async`.
        #[cfg(target_arch = "wasm32")]
        {
            let _ = t;
            Err(Error::Readback(
                "a blocking GPU read is impossible in the browser; use GpuBackend::read_async"
                    .into(),
            ))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let bytes = self.ctx.read_bytes(&t.buf, t.bytes())?;
            Ok(bytemuck::pod_collect_to_vec(&bytes))
        }
    }

    fn shape<'a>(&self, t: &'a GpuTensor) -> &'a [usize] {
        &t.shape
    }

    fn upload_planned(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        Ok(GpuTensor {
            buf: Arc::new(
                self.ctx
                    .storage_init("upload", bytemuck::cast_slice(data))?,
            ),
            shape: shape.to_vec(),
        })
    }

    fn zeros_planned(&self, shape: &[usize]) -> Result<GpuTensor> {
        // wgpu zero-initialises new buffers; the pool clears recycled ones.
        self.tensor_zeroed("zeros", shape)
    }

    fn random_planned(
        &self,
        shape: &[usize],
        dist: Distribution,
        rng: RngStream,
    ) -> Result<GpuTensor> {
        const OP: &str = "random";
        let out = self.tensor_output(OP, shape)?;
        let n = elems(OP, &out)?;
        let params = RngFillParams {
            n,
            normal: (dist == Distribution::Normal) as u32,
            key: rng_key(rng),
            ..Default::default()
        };
        // Four values per invocation (one Philox block).
        self.launch_1d(
            kernels::RNG_FILL,
            &params,
            &[Bind::Storage(&out.buf)],
            (n as u64).div_ceil(4),
        )?;
        Ok(out)
    }

    fn reshape_planned(&self, x: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        Ok(GpuTensor {
            buf: Arc::clone(&x.buf),
            shape: shape.to_vec(),
        })
    }

    fn matmul_planned(&self, p: &MatmulPlan, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let &MatmulPlan { m, n, .. } = p;
        let c = self.tensor_output("matmul", &[m, n])?;
        if m == 0 || n == 0 {
            return Ok(c);
        }
        self.matmul_into(p, a, b, &c)?;
        Ok(c)
    }

    fn bmm_planned(&self, p: &BmmPlan, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "bmm";
        if p.k == 0 {
            // An empty sum: zeros, and no kernel runs.
            return self.tensor_zeroed(OP, &p.out);
        }
        let c = self.tensor_output(OP, &p.out)?;
        if c.numel() == 0 {
            return Ok(c);
        }
        u32_of(OP, "output elements", c.numel())?;
        let (at, bp) = self.bmm_operands(p, a, b)?;
        let (m_pad, n_pad) = (pad8(p.m), pad8(p.n));
        let (m_blocks, n_blocks) = (p.m.div_ceil(8), p.n.div_ceil(8));
        let blocks = m_blocks * n_blocks;
        let params = BmmParams {
            m: p.m as u32,
            n: p.n as u32,
            k: p.k as u32,
            m4: (m_pad / 4) as u32,
            n4: (n_pad / 4) as u32,
            a_batch4: if p.a_batched {
                (p.k * m_pad / 4) as u32
            } else {
                0
            },
            b_batch4: if p.b_batched {
                (p.k * n_pad / 4) as u32
            } else {
                0
            },
            n_blocks: n_blocks as u32,
            blocks: u32_of(OP, "8×8 output blocks", blocks)?,
            ..Default::default()
        };
        let groups = grid_3d(
            OP,
            [blocks.div_ceil(WG as usize), p.batch, 1],
            self.max_groups(),
            &|| format!("{:?} × {:?}", a.shape, b.shape),
        )?;
        self.ctx.dispatch(
            kernels::BMM,
            &[],
            &params,
            &[
                Bind::Storage(&at),
                Bind::Storage(&bp),
                Bind::Storage(&c.buf),
            ],
            groups,
        )?;
        Ok(c)
    }

    /// Every op of the registry through one code path: the kernel is the
    /// entry point named after the op, its operands bound after the output.
    fn pointwise_planned(&self, p: &PointwisePlan, inputs: &[&GpuTensor]) -> Result<GpuTensor> {
        let op = p.op.name();
        let kernel = kernels::pointwise(p.op).ok_or_else(|| Error::Gpu {
            op: op.to_string(),
            detail: "no elementwise.wgsl kernel declared for this op".into(),
        })?;
        let n = u32_of(op, "elements", p.n)?;
        let out = self.tensor_output(op, &p.shape)?;
        let params = ElementwiseParams {
            n,
            alpha: p.scalars[0],
            beta: p.scalars[1],
            ..Default::default()
        };
        let mut binds = vec![Bind::Storage(&out.buf)];
        binds.extend(inputs.iter().map(|t| Bind::Storage(&t.buf)));
        self.launch_1d(kernel, &params, &binds, n as u64)?;
        Ok(out)
    }

    fn sum_batch_planned(&self, p: &SumBatchPlan, x: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "sum_batch";
        elems(OP, x)?;
        let out = self.tensor_output(OP, &p.out)?;
        let d = elems(OP, &out)?;
        let params = ReduceParams {
            rows: d,
            nb: u32_of(OP, "batch", p.batch)?,
            ..Default::default()
        };
        self.launch_1d(
            kernels::SUM_BATCH,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            d as u64,
        )?;
        Ok(out)
    }

    fn concat_channels_planned(
        &self,
        p: &ConcatPlan,
        a: &GpuTensor,
        b: &GpuTensor,
    ) -> Result<GpuTensor> {
        const OP: &str = "concat_channels";
        elems(OP, a)?;
        elems(OP, b)?;
        let out = self.tensor_output(OP, &p.out)?;
        let n = elems(OP, &out)?;
        if n == 0 {
            return Ok(out);
        }
        let params = ChannelsParams {
            n,
            row_a: u32_of(OP, "first row", p.ca * p.s)?,
            row_b: u32_of(OP, "second row", p.cb * p.s)?,
            off: 0,
        };
        // Rows of whole vec4: four elements per invocation.
        let (kernel, threads) = if params.row_a.is_multiple_of(4) && params.row_b.is_multiple_of(4)
        {
            (kernels::CONCAT_CHANNELS_VEC4, n / 4)
        } else {
            (kernels::CONCAT_CHANNELS, n)
        };
        self.launch_1d(
            kernel,
            &params,
            &[
                Bind::Storage(&out.buf),
                Bind::Storage(&a.buf),
                Bind::Storage(&b.buf),
            ],
            threads as u64,
        )?;
        Ok(out)
    }

    fn split_channels_planned(
        &self,
        p: &SplitPlan,
        x: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor)> {
        elems("split_channels", x)?;
        Ok((
            self.slice_channels(p, x, 0, &p.out_a)?,
            self.slice_channels(p, x, p.ca, &p.out_b)?,
        ))
    }
}

impl GpuBackend {
    /// C = A·B into `c` (M, N > 0), register-blocked: the vec4 kernel on a
    /// k-major copy of A when N is a multiple of 4, else the general kernel.
    pub(super) fn matmul_register_blocked(
        &self,
        p: &MatmulPlan,
        a: &GpuTensor,
        b: &GpuTensor,
        c: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "matmul";
        let &MatmulPlan { m, k, n } = p;
        let max = self.max_groups();
        let what = || format!("[{m}, {k}] × [{k}, {n}]");
        for (what, v) in [("M", m), ("N", n), ("K", k)] {
            u32_of(OP, what, v)?;
        }
        let binds = |a| {
            [
                Bind::Storage(a),
                Bind::Storage(&b.buf),
                Bind::Storage(&c.buf),
            ]
        };
        if n % 4 != 0 || k == 0 {
            // B's rows must start on vec4 boundaries for the fast kernel.
            let params = MatmulAnyParams {
                m: m as u32,
                n: n as u32,
                k: k as u32,
                ..Default::default()
            };
            let groups = grid_2d(
                OP,
                (n.div_ceil(4) as u64).div_ceil(WG as u64),
                m.div_ceil(4) as u64,
                max,
                &what,
            )?;
            return self
                .ctx
                .dispatch(kernels::MATMUL_ANY, &[], &params, &binds(&a.buf), groups);
        }
        // The fast kernel reads A k-major with rows padded to 8: transpose first
        // (O(M·K), small next to the O(M·K·N) product).
        let m_pad = pad8(m);
        let at = self
            .ctx
            .storage_output(OP, (k as u64) * (m_pad as u64) * 4)?;
        let tparams = MatmulTransposeParams {
            m: m as u32,
            k: k as u32,
            m_pad: m_pad as u32,
            ..Default::default()
        };
        self.ctx.dispatch(
            kernels::MATMUL_TRANSPOSE,
            &[],
            &tparams,
            &[Bind::Storage(&a.buf), Bind::Storage(&at)],
            grid_1d(k as u64 * m_pad as u64, max),
        )?;
        let params = MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            m_pad: m_pad as u32,
        };
        let groups = grid_2d(
            OP,
            (n.div_ceil(8) as u64).div_ceil(WG as u64),
            m.div_ceil(8) as u64,
            max,
            &what,
        )?;
        self.ctx
            .dispatch(kernels::MATMUL_VEC4, &[], &params, &binds(&at), groups)
    }

    /// bmm's operands as the kernel reads them: A k-major `[K][M pad 8]`, B
    /// `[K][N pad 8]`, packed by `strided_pack` unless already in that layout.
    fn bmm_operands(
        &self,
        p: &BmmPlan,
        a: &GpuTensor,
        b: &GpuTensor,
    ) -> Result<(Arc<GpuBuf>, Arc<GpuBuf>)> {
        const OP: &str = "bmm";
        let a_batch = if p.a_batched { p.batch } else { 1 };
        let b_batch = if p.b_batched { p.batch } else { 1 };
        // A k-major ([K][M]) with M % 8 == 0 is already what the kernel reads.
        let at = if p.ta && p.m.is_multiple_of(8) {
            u32_of(OP, "A elements", a.numel())?;
            a.buf.clone()
        } else {
            let (s_row, s_col) = if p.ta { (p.m, 1) } else { (1, p.k) };
            Arc::new(self.pack(
                OP,
                &a.buf,
                a.numel(),
                PackView {
                    batch: a_batch,
                    rows: p.k,
                    cols: p.m,
                    cols_pad: pad8(p.m),
                    base: 0,
                    s_batch: (p.m * p.k) as i64,
                    s_row: s_row as i64,
                    s_col: s_col as i64,
                },
            )?)
        };
        let bp = if !p.tb && p.n.is_multiple_of(8) {
            u32_of(OP, "B elements", b.numel())?;
            b.buf.clone()
        } else {
            let (s_row, s_col) = if p.tb { (1, p.k) } else { (p.n, 1) };
            Arc::new(self.pack(
                OP,
                &b.buf,
                b.numel(),
                PackView {
                    batch: b_batch,
                    rows: p.k,
                    cols: p.n,
                    cols_pad: pad8(p.n),
                    base: 0,
                    s_batch: (p.k * p.n) as i64,
                    s_row: s_row as i64,
                    s_col: s_col as i64,
                },
            )?)
        };
        Ok((at, bp))
    }

    /// Channels `c0 ..` of `x` into a new tensor shaped `shape` (`channels.wgsl`).
    fn slice_channels(
        &self,
        p: &SplitPlan,
        x: &GpuTensor,
        c0: usize,
        shape: &[usize],
    ) -> Result<GpuTensor> {
        const OP: &str = "split_channels";
        let (s, cn) = (p.dims.s, shape[1]);
        let out = self.tensor_output(OP, shape)?;
        let n = elems(OP, &out)?;
        if p.dims.batch == 0 || cn * s == 0 {
            return Ok(out);
        }
        let params = ChannelsParams {
            n,
            row_a: u32_of(OP, "output row", cn * s)?,
            row_b: u32_of(OP, "input row", p.dims.c * s)?,
            off: u32_of(OP, "channel offset", c0 * s)?,
        };
        let vec4 = [params.row_a, params.row_b, params.off]
            .iter()
            .all(|v| v.is_multiple_of(4));
        let (kernel, threads) = if vec4 {
            (kernels::SLICE_CHANNELS_VEC4, n / 4)
        } else {
            (kernels::SLICE_CHANNELS, n)
        };
        self.launch_1d(
            kernel,
            &params,
            &[Bind::Storage(&out.buf), Bind::Storage(&x.buf)],
            threads as u64,
        )?;
        Ok(out)
    }
}
