//! The GPU backend: every op a WGSL compute kernel from `shaders/`, run through wgpu
//! on Vulkan, Metal, DX12 or the browser's WebGPU.

// In the browser wgpu's handles are neither Send nor Sync; tensors still share
// buffers through Arc so the code is one for both targets.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

mod context;
pub mod kernels;
mod layer_ops;
mod mat_ops;
pub mod params;
mod train_ops;

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use context::Bind;
pub use context::GpuContext;
use params::*;

use super::{
    matmul_dims, numel, paired_step_len, per_sample_len, Backend, BackendKind, Conv2dSpec,
    ConvGeometry, Distribution, PairedState, PerturbCoef, Sampler, StepCoef,
};
use crate::error::{Error, Result};
use crate::rng::RngStream;

/// A device tensor. Clones share the buffer; ops that update in place copy a
/// shared buffer first, so tensors behave as values, as on the CPU backend.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buf: Arc<wgpu::Buffer>,
    pub shape: Vec<usize>,
}

impl GpuTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }
}

pub struct GpuBackend {
    pub ctx: GpuContext,
}

/// Threads per workgroup of the 1-D kernels (must match the WGSL).
const WG: u32 = 64;

/// Workgroup grid for `threads` invocations of a 1-D kernel: spills into y when
/// x would pass the per-dimension limit (the kernels linearise with num_workgroups).
fn grid_1d(threads: u64, max_dim: u32) -> (u32, u32, u32) {
    let groups = threads.div_ceil(WG as u64);
    if groups <= max_dim as u64 {
        (groups as u32, 1, 1)
    } else {
        let y = groups.div_ceil(max_dim as u64);
        (max_dim, y.min(u32::MAX as u64) as u32, 1)
    }
}

/// A 2-D workgroup grid, refused with a shape error past the device's limit.
fn grid_2d(
    op: &'static str,
    gx: u64,
    gy: u64,
    max: u32,
    what: &dyn Fn() -> String,
) -> Result<(u32, u32, u32)> {
    if gx > max as u64 || gy > max as u64 {
        return Err(Error::shape(
            op,
            format!("{} needs more workgroups than the device allows", what()),
        ));
    }
    Ok((gx as u32, gy as u32, 1))
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::shape(
            op,
            format!("{what} = {v} exceeds the GPU kernels' 32-bit indexing"),
        )
    })
}

/// A Philox key as the WGSL kernels read it: (seed lo, seed hi, stream lo, stream hi).
fn rng_key(rng: RngStream) -> [u32; 4] {
    [
        rng.seed as u32,
        (rng.seed >> 32) as u32,
        rng.stream as u32,
        (rng.stream >> 32) as u32,
    ]
}

/// Per-sample random key: [`rng_key`] of the sample's derived stream.
fn sample_key(rng: RngStream, stream: u64) -> [u32; 4] {
    rng_key(rng.derive(stream))
}

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

impl GpuBackend {
    /// Opens the GPU (blocking). In the browser use [`GpuBackend::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    pub async fn new_async() -> Result<Self> {
        Ok(GpuBackend {
            ctx: GpuContext::new().await?,
        })
    }

    /// Copies a tensor to host memory without blocking: the way to read in the
    /// browser, where [`Backend::read`] cannot wait for the GPU. Natively it
    /// gives the same values as `read`.
    pub async fn read_async(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let bytes = self.ctx.read_bytes_async(&t.buf, t.bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn tensor(&self, op: &'static str, shape: &[usize]) -> Result<GpuTensor> {
        let n = numel(op, shape)?;
        let bytes = (n as u64)
            .checked_mul(4)
            .ok_or_else(|| Error::shape(op, format!("{shape:?} is too large")))?;
        Ok(GpuTensor {
            buf: Arc::new(self.ctx.storage(op, bytes)?),
            shape: shape.to_vec(),
        })
    }

    /// Makes `t`'s buffer exclusively ours before an in-place update.
    fn make_unique(&self, op: &'static str, t: &mut GpuTensor) -> Result<()> {
        if Arc::strong_count(&t.buf) > 1 {
            let fresh = self.tensor(op, &t.shape)?;
            self.ctx
                .copy(&t.buf, &fresh.buf, t.bytes().max(16).div_ceil(16) * 16);
            *t = fresh;
        }
        Ok(())
    }

    fn upload_pod<T: Pod>(&self, op: &'static str, data: &[T]) -> Result<wgpu::Buffer> {
        self.ctx.storage_init(op, bytemuck::cast_slice(data))
    }
}

impl Backend for GpuBackend {
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

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        let n = numel("upload", shape)?;
        if n != data.len() {
            return Err(Error::shape(
                "upload",
                format!("{} values for shape {shape:?} ({n} elements)", data.len()),
            ));
        }
        Ok(GpuTensor {
            buf: Arc::new(
                self.ctx
                    .storage_init("upload", bytemuck::cast_slice(data))?,
            ),
            shape: shape.to_vec(),
        })
    }

    fn zeros(&self, shape: &[usize]) -> Result<GpuTensor> {
        // wgpu zero-initialises new buffers.
        self.tensor("zeros", shape)
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

    fn random(&self, shape: &[usize], dist: Distribution, rng: RngStream) -> Result<GpuTensor> {
        const OP: &str = "random";
        let out = self.tensor(OP, shape)?;
        let n = u32_of(OP, "elements", out.numel())?;
        let params = RngFillParams {
            n,
            normal: (dist == Distribution::Normal) as u32,
            key: rng_key(rng),
            ..Default::default()
        };
        self.ctx.dispatch(
            kernels::RNG_FILL,
            &[],
            &params,
            &[Bind::Storage(&out.buf)],
            grid_1d(
                (n as u64).div_ceil(4),
                self.ctx.limits.max_compute_workgroups_per_dimension,
            ),
        )?;
        Ok(out)
    }

    fn matmul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        const OP: &str = "matmul";
        let (m, k, n) = matmul_dims(&a.shape, &b.shape)?;
        let c = self.tensor(OP, &[m, n])?;
        if m == 0 || n == 0 {
            return Ok(c);
        }
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        let what = || format!("[{m}, {k}] × [{k}, {n}]");
        for (what, v) in [("M", m), ("N", n), ("K", k)] {
            u32_of(OP, what, v)?;
        }
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
            self.ctx.dispatch(
                kernels::MATMUL_ANY,
                &[],
                &params,
                &[
                    Bind::Storage(&a.buf),
                    Bind::Storage(&b.buf),
                    Bind::Storage(&c.buf),
                ],
                groups,
            )?;
            return Ok(c);
        }
        // The fast kernel reads A k-major with rows padded to 8: transpose first
        // (O(M·K), small next to the O(M·K·N) product).
        let m_pad = m.div_ceil(8) * 8;
        let at = self.ctx.storage(OP, (k as u64) * (m_pad as u64) * 4)?;
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
        self.ctx.dispatch(
            kernels::MATMUL_VEC4,
            &[],
            &params,
            &[
                Bind::Storage(&at),
                Bind::Storage(&b.buf),
                Bind::Storage(&c.buf),
            ],
            groups,
        )?;
        Ok(c)
    }

    fn conv2d(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        spec: Conv2dSpec,
    ) -> Result<GpuTensor> {
        const OP: &str = "conv2d";
        let g = ConvGeometry::new(&x.shape, &w.shape, bias.map(|b| b.shape.as_slice()), spec)?;
        let kernel = match (g.k, g.stride) {
            (1, 1) => kernels::CONV2D_K1S1,
            (1, 2) => kernels::CONV2D_K1S2,
            (3, 1) => kernels::CONV2D_K3S1,
            (3, 2) => kernels::CONV2D_K3S2,
            _ => {
                return Err(Error::shape(
                    OP,
                    format!(
                        "the GPU kernels handle 1×1 and 3×3 kernels at stride 1 or 2, got {}×{} at stride {}",
                        g.k, g.k, g.stride
                    ),
                ))
            }
        };
        let out = self.tensor(OP, &g.out_shape())?;
        if out.numel() == 0 {
            return Ok(out);
        }
        let c_out_pad = g.c_out.div_ceil(8) * 8;
        let rows = g.c_in * g.k * g.k;
        let packed = self.ctx.storage(OP, (rows * c_out_pad * 4) as u64)?;
        let pack_params = ConvWeightPackParams {
            c_out: u32_of(OP, "Cout", g.c_out)?,
            c_in: u32_of(OP, "Cin", g.c_in)?,
            kk: (g.k * g.k) as u32,
            c_out_pad: c_out_pad as u32,
        };
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        self.ctx.dispatch(
            kernels::CONV_WEIGHT_PACK,
            &[],
            &pack_params,
            &[Bind::Storage(&w.buf), Bind::Storage(&packed)],
            grid_1d((rows * c_out_pad) as u64, max),
        )?;
        let tiles_x = g.w_out.div_ceil(8);
        let params = Conv2dParams {
            batch: u32_of(OP, "batch", g.batch)?,
            c_in: u32_of(OP, "Cin", g.c_in)?,
            h: u32_of(OP, "H", g.h)?,
            w: u32_of(OP, "W", g.w)?,
            c_out: g.c_out as u32,
            c_out_pad: c_out_pad as u32,
            h_out: u32_of(OP, "Ho", g.h_out)?,
            w_out: u32_of(OP, "Wo", g.w_out)?,
            padding: u32_of(OP, "padding", g.padding)?,
            tiles_x: tiles_x as u32,
            has_bias: bias.is_some() as u32,
            ..Default::default()
        };
        numel(OP, &[g.batch, g.c_in, g.h, g.w]).and_then(|n| u32_of(OP, "input elements", n))?;
        numel(OP, &g.out_shape()).and_then(|n| u32_of(OP, "output elements", n))?;
        let tiles = (g.batch * g.h_out * tiles_x) as u64;
        let groups = grid_2d(
            OP,
            tiles.div_ceil(WG as u64),
            g.c_out.div_ceil(8) as u64,
            max,
            &|| format!("input {:?}", x.shape),
        )?;
        // A bound buffer may not be both read and written: without a bias, bind a dummy.
        let bias_buf = match bias {
            Some(b) => b.buf.clone(),
            None => Arc::new(self.ctx.placeholder()?),
        };
        self.ctx.dispatch(
            kernel,
            &[],
            &params,
            &[
                Bind::Storage(&x.buf),
                Bind::Storage(&packed),
                Bind::Storage(&bias_buf),
                Bind::Storage(&out.buf),
            ],
            groups,
        )?;
        Ok(out)
    }

    fn perturb(
        &self,
        x0: &GpuTensor,
        coef: &[PerturbCoef],
        rng: RngStream,
    ) -> Result<(GpuTensor, GpuTensor)> {
        const OP: &str = "perturb";
        let d = per_sample_len(OP, &x0.shape, coef.len())?;
        let xt = self.tensor(OP, &x0.shape)?;
        let z = self.tensor(OP, &x0.shape)?;
        if d == 0 || coef.is_empty() {
            return Ok((xt, z));
        }
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
            grid_1d(
                threads,
                self.ctx.limits.max_compute_workgroups_per_dimension,
            ),
        )?;
        Ok((xt, z))
    }

    fn paired_step(
        &self,
        st: &mut PairedState<GpuTensor>,
        whole_score: &GpuTensor,
        coef: &[StepCoef],
        sampler: Sampler,
        rng: RngStream,
    ) -> Result<()> {
        const OP: &str = "paired_step";
        let d = paired_step_len(
            [&st.x0.shape, &st.whole.shape, &st.own.shape, &st.z.shape],
            &whole_score.shape,
            coef.len(),
        )?;
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
            grid_1d(
                threads,
                self.ctx.limits.max_compute_workgroups_per_dimension,
            ),
        )?;
        Ok(())
    }
}

// The network ops: implemented in their own files.

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// The browser's readback path, run natively: the same values as `read`,
    /// for a tensor that is still being computed when the read starts.
    #[test]
    fn read_async_matches_read() {
        let g = match GpuBackend::new() {
            Ok(g) => g,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but the GPU backend failed to open: {e}")
            }
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let a = g.upload(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        let b = g.upload(&[1.0, 0.5, -1.0, 2.0, 0.0, 1.0], &[3, 2]).unwrap();
        let c = g.matmul(&a, &b).unwrap();
        let got = pollster::block_on(g.read_async(&c)).unwrap();
        assert_eq!(got, vec![-1.0, 7.5, -1.0, 18.0]);
        assert_eq!(got, g.read(&c).unwrap());
        let empty = g.zeros(&[0]).unwrap();
        assert!(pollster::block_on(g.read_async(&empty)).unwrap().is_empty());
    }
}
