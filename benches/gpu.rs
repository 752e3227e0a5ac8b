//! The GPU report: `cargo bench --bench gpu`.
//!
//! For the adapter wgpu picks (`WGPU_ADAPTER_NAME`, `WGPU_BACKEND` narrow it):
//! conv forward/backward GFLOP/s at every level of the `small` U-net, its
//! training step and Score-DD detection times, and (on hardware adapters, or
//! with `SCOREDD_REPORT_FULL=1`) an `ncsnpp256` forward at 256 px.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/gpu_report.rs"]
mod gpu_report;

use scoredd::backend::gpu::GpuBackend;
use scoredd::nn::unet::{TimeEmbedding, UNetConfig};

fn main() {
    let g = match GpuBackend::new() {
        Ok(g) => g,
        Err(e) => {
            println!("GPU report: no adapter ({e})");
            return;
        }
    };
    let software = g.ctx.info.device_type == wgpu::DeviceType::Cpu;
    let full = std::env::var_os("SCOREDD_REPORT_FULL").is_some();
    let o = gpu_report::ReportOptions {
        config: UNetConfig::small(3, TimeEmbedding::Fourier),
        batch: 8,
        reps: if software { 1 } else { 5 },
        quick: false,
        ncsnpp256: !software || full,
    };
    match gpu_report::measure(&g, &o) {
        Ok(rows) => print!("{}", gpu_report::render(&g, &o, &rows)),
        Err(e) => println!("GPU report failed: {e}"),
    }
    if software && !full {
        println!("(a software adapter: ncsnpp256 skipped; SCOREDD_REPORT_FULL=1 runs it)");
    }
}
