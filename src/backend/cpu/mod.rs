//! The CPU backend: every op in plain Rust, multi-threaded with rayon, GEMMs
//! through the `gemm` crate (in the browser: serial, GEMMs through
//! `matrixmultiply`). It is the oracle the WGSL kernels are tested against and
//! the fallback where no GPU adapter exists.

// One file per concept: `primitives` (Backend), `module_ops`, `scoredd_ops`,
// `train_ops`; `pointwise` is the elementwise registry's per-element code.
mod conv;
pub mod gemm;
mod im2col;
mod math;
pub mod memory;
mod module_ops;
// rayon natively, serial std iterators on wasm32.
mod par;
mod pointwise;
mod primitives;
mod resample;
mod scoredd_ops;
mod simd;
pub use simd::simd_level;
mod train_ops;

use std::sync::Arc;

use super::numel;
use crate::error::{Error, Result};
use memory::HostBuf;

/// A host tensor. The data is shared copy-on-write, so cloning is cheap.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    /// Pooled storage (see [`memory::HostBuf`]); derefs to `Vec<f32>`.
    pub data: Arc<HostBuf>,
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
            data: Arc::new(data.into()),
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

fn alloc_zeros(op: &'static str, shape: &[usize]) -> Result<HostBuf> {
    Ok(HostBuf::zeroed(host_len(op, shape)?))
}

/// An output buffer the op writes in full: its old content is not cleared.
fn alloc_output(op: &'static str, shape: &[usize]) -> Result<HostBuf> {
    Ok(HostBuf::overwritten(host_len(op, shape)?))
}

/// Elements of a host tensor of `shape`, refusing absurd sizes.
fn host_len(op: &'static str, shape: &[usize]) -> Result<usize> {
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
    Ok(n)
}

/// A tensor owning `data` with `shape` (the caller guarantees the element count).
fn tensor(data: impl Into<HostBuf>, shape: &[usize]) -> CpuTensor {
    let data = data.into();
    debug_assert_eq!(
        Some(data.len()),
        shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    );
    CpuTensor {
        data: Arc::new(data),
        shape: shape.to_vec(),
    }
}

/// Elements per parallel task for pointwise work (a multiple of 4, so RNG
/// chunks start on Philox block boundaries).
const CHUNK: usize = 1 << 14;

impl CpuBackend {
    /// Mutable access for in-place CPU code (layers' backward passes).
    pub fn data_mut<'a>(&self, t: &'a mut CpuTensor) -> &'a mut [f32] {
        t.data_mut()
    }
}
