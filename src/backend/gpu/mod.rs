//! The GPU backend: every op a WGSL compute kernel from `shaders/`, run through wgpu
//! on Vulkan, Metal, DX12 or the browser's WebGPU.
//!
//! One file per concept: `primitives` (Backend), `module_ops` (with `conv`),
//! `scoredd_ops`, `train_ops`; `launch` holds the dispatch helpers they
//! share, `kernels` and `params` the declared WGSL entry points, `pool` the
//! recycled storage buffers, `tune` and `matmul` the kernel variants (matmul,
//! conv forward, stride-1 conv input gradient) and the autotuner picking one,
//! `profile` the per-kernel timing of `SCOREDD_GPU_PROFILE=1`.

// In the browser wgpu's handles are neither Send nor Sync; tensors still share
// buffers through Arc so the code is one for both targets.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

mod context;
mod conv;
pub mod kernels;
mod launch;
mod matmul;
mod module_ops;
pub mod params;
mod pool;
mod primitives;
mod profile;
mod scoredd_ops;
mod train_ops;
pub mod tune;

use std::sync::Arc;

use bytemuck::Pod;

pub use context::GpuContext;
pub use pool::{GpuBuf, MemoryStats};

use crate::backend::numel;
use crate::error::{Error, Result};

/// A device tensor. Clones share the buffer; ops that update in place copy a
/// shared buffer first, so tensors behave as values, as on the CPU backend.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buf: Arc<GpuBuf>,
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
    /// Which kernel variant runs each (family, shape class).
    pub tuner: tune::Tuner,
}

impl GpuBackend {
    /// Opens the GPU (blocking). In the browser use [`GpuBackend::new_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    pub async fn new_async() -> Result<Self> {
        let ctx = GpuContext::new().await?;
        Ok(GpuBackend {
            tuner: tune::Tuner::new(&ctx.info),
            ctx,
        })
    }

    /// The buffer pool's device-memory figures (live, pooled, high-water).
    pub fn memory_stats(&self) -> MemoryStats {
        self.ctx.memory_stats()
    }

    /// Copies a tensor to host memory without blocking: the way to read in the
    /// browser, where [`crate::backend::Backend::read`] cannot wait for the GPU. Natively it
    /// gives the same values as `read`.
    pub async fn read_async(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let bytes = self.ctx.read_bytes_async(&t.buf, t.bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// A tensor of zeros: for outputs that a kernel accumulates into or
    /// writes only in part (and `zeros` itself).
    fn tensor_zeroed(&self, op: &'static str, shape: &[usize]) -> Result<GpuTensor> {
        self.tensor_with(op, shape, true)
    }

    /// A tensor with unspecified contents, for an op's output that its
    /// kernel overwrites in full (see [`GpuContext::storage_output`]).
    fn tensor_output(&self, op: &'static str, shape: &[usize]) -> Result<GpuTensor> {
        self.tensor_with(op, shape, false)
    }

    fn tensor_with(&self, op: &'static str, shape: &[usize], zeroed: bool) -> Result<GpuTensor> {
        let n = numel(op, shape)?;
        let bytes = (n as u64)
            .checked_mul(4)
            .ok_or_else(|| Error::shape(op, format!("{shape:?} is too large")))?;
        let buf = if zeroed {
            self.ctx.storage_zeroed(op, bytes)?
        } else {
            self.ctx.storage_output(op, bytes)?
        };
        Ok(GpuTensor {
            buf: Arc::new(buf),
            shape: shape.to_vec(),
        })
    }

    /// Makes `t`'s buffer exclusively ours before an in-place update.
    fn make_unique(&self, op: &'static str, t: &mut GpuTensor) -> Result<()> {
        if Arc::strong_count(&t.buf) > 1 {
            // The copy below overwrites the whole buffer.
            let fresh = self.tensor_output(op, &t.shape)?;
            self.ctx
                .copy(&t.buf, &fresh.buf, t.bytes().max(16).div_ceil(16) * 16);
            *t = fresh;
        }
        Ok(())
    }

    fn upload_pod<T: Pod>(&self, op: &'static str, data: &[T]) -> Result<GpuBuf> {
        self.ctx.storage_init(op, bytemuck::cast_slice(data))
    }
}

/// A GPU backend for unit tests, or None when there is no adapter: skipped
/// visibly outside CI, a failure under `CI=true` (CI has lavapipe).
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) fn test_backend() -> Option<GpuBackend> {
    match GpuBackend::new() {
        Ok(g) => Some(g),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the GPU backend failed to open: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no GPU adapter ({e})");
            None
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use crate::backend::Backend;

    /// The browser's readback path, run natively: the same values as `read`,
    /// for a tensor that is still being computed when the read starts.
    #[test]
    fn read_async_matches_read() {
        let Some(g) = super::test_backend() else {
            return;
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
