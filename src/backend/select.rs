//! Picking a backend at run time: `--backend auto|gpu|cpu`.

use super::cpu::CpuBackend;
use super::gpu::GpuBackend;
#[cfg(not(target_arch = "wasm32"))]
use crate::error::Result;

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum BackendChoice {
    /// A hardware GPU if there is one, else the CPU backend.
    #[default]
    Auto,
    /// The GPU through wgpu (any adapter, software ones included); fails if none.
    Gpu,
    /// The multi-threaded CPU backend.
    Cpu,
}

/// A backend chosen at run time. Generic code runs on it through [`with_backend!`](crate::with_backend).
#[allow(clippy::large_enum_variant)] // one per process; boxing buys nothing
pub enum AnyBackend {
    Cpu(CpuBackend),
    Gpu(GpuBackend),
}

/// Runs a generic expression on whichever backend `$any` holds:
/// `with_backend!(any, |b| detect(b, …))`.
#[macro_export]
macro_rules! with_backend {
    ($any:expr, |$b:ident| $body:expr) => {
        match $any {
            $crate::backend::AnyBackend::Cpu($b) => $body,
            $crate::backend::AnyBackend::Gpu($b) => $body,
        }
    };
}

/// Opens the backend the user chose and returns it with a sentence saying which
/// one it is and why.
///
/// `auto` skips software adapters (lavapipe, SwiftShader, WARP): they emulate a
/// GPU on the CPU and run our kernels several times slower than the CPU backend.
#[cfg(not(target_arch = "wasm32"))]
pub fn open_backend(choice: BackendChoice) -> Result<(AnyBackend, String)> {
    use super::Backend;
    match choice {
        BackendChoice::Cpu => {
            let b = CpuBackend::new();
            let why = format!("backend: {} (asked for cpu)", b.describe());
            Ok((AnyBackend::Cpu(b), why))
        }
        BackendChoice::Gpu => {
            let g = GpuBackend::new()?;
            let why = format!("backend: {} (asked for gpu)", g.describe());
            Ok((AnyBackend::Gpu(g), why))
        }
        BackendChoice::Auto => match GpuBackend::new() {
            Ok(g) if g.ctx.info.device_type != wgpu::DeviceType::Cpu => {
                let why = format!("backend: {} (auto: hardware GPU found)", g.describe());
                Ok((AnyBackend::Gpu(g), why))
            }
            Ok(g) => {
                let b = CpuBackend::new();
                let why = format!(
                    "backend: {} (auto: the only GPU adapter, {}, is a software emulation, slower than the cpu backend; pass --backend gpu to use it anyway)",
                    b.describe(),
                    g.ctx.info.name
                );
                Ok((AnyBackend::Cpu(b), why))
            }
            Err(e) => {
                let b = CpuBackend::new();
                let why = format!("backend: {} (auto: {e})", b.describe());
                Ok((AnyBackend::Cpu(b), why))
            }
        },
    }
}
