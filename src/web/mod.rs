//! The browser API (wasm-bindgen; only built for wasm32), used by the page in
//! `web/` from a Web Worker, so the page stays responsive while it computes:
//!
//! - [`Detector`]: loads a model file and turns RGBA pixels into an anomaly
//!   map, on WebGPU when the browser has it and on the CPU backend compiled
//!   to wasm otherwise;
//! - [`WebTrainer`] (`Trainer` in JavaScript): trains a model from good images
//!   handed over as pixels, one step per call (so the worker can report
//!   progress and honour a stop between steps), calibrates it on held-out
//!   images with synthetic defects and hands back the `.safetensors` bytes.
//!
//! Both run the native code paths (`crate::detect`, `crate::train`,
//! `crate::calibrate`) with the CLI's defaults, so a map or a model made in
//! the page equals the CLI's for the same inputs. Everything runs on the
//! user's machine.

mod detector;
mod trainer;

pub use detector::Detector;
pub use trainer::WebTrainer;

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbaImage};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::GpuBackend;
use crate::backend::{Backend, NnBackend};

/// Images with more pixels than this are refused: a photo that size is far
/// larger than any model input and decoding it would exhaust a phone's memory.
pub const MAX_PIXELS: u64 = 4096 * 4096;
/// Smallest side accepted (as the CLI's loader).
pub const MIN_SIDE: u32 = 8;

/// What goes wrong in the browser API. Each message is shown to the user as
/// is, so each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Input the user gave that cannot be used (an image too small or too
    /// large, mixed sizes, too few images, bad training options).
    #[error("{0}")]
    Input(String),
    /// The library refused or failed, with what the page was doing.
    #[error("{context}: {source}")]
    Library {
        context: String,
        #[source]
        source: crate::Error,
    },
    /// WebGPU could not be used (and why).
    #[error("{0}")]
    Gpu(String),
    /// Calls in an order the API does not allow: a bug in the page.
    #[error("{0}")]
    Usage(String),
}

impl WebError {
    /// A library error with what was being done.
    pub(crate) fn lib(context: impl Into<String>) -> impl FnOnce(crate::Error) -> WebError {
        let context = context.into();
        move |source| WebError::Library { context, source }
    }
}

impl From<WebError> for JsValue {
    fn from(e: WebError) -> JsValue {
        JsError::new(&e.to_string()).into()
    }
}

#[wasm_bindgen(start)]
fn start() {
    // A panic shows its message in the console instead of "unreachable".
    console_error_panic_hook::set_once();
}

/// Milliseconds from the page's (or the worker's) time origin.
pub(crate) fn now_ms() -> f64 {
    // `window` does not exist in a worker: take `performance` off the global
    // object, whichever it is.
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Reading a tensor back to the host: synchronous on the CPU, asynchronous
/// on WebGPU (the browser cannot block on the GPU). Code generic over this
/// runs on both.
pub(crate) trait ReadBack: NnBackend {
    async fn read_back(&self, t: &Self::Tensor) -> crate::Result<Vec<f32>>;
}

impl ReadBack for CpuBackend {
    async fn read_back(&self, t: &Self::Tensor) -> crate::Result<Vec<f32>> {
        self.read(t)
    }
}

impl ReadBack for GpuBackend {
    async fn read_back(&self, t: &Self::Tensor) -> crate::Result<Vec<f32>> {
        self.read_async(t).await
    }
}

/// Opens WebGPU if the browser has it and it computes correctly; the error
/// says why not, in words for the page.
pub(crate) async fn open_gpu() -> Result<GpuBackend, WebError> {
    if !wgpu::util::is_browser_webgpu_supported().await {
        return Err(WebError::Gpu(
            "this browser offers no WebGPU (navigator.gpu is missing)".into(),
        ));
    }
    let be = GpuBackend::new_async()
        .await
        .map_err(|e| WebError::Gpu(format!("WebGPU could not be opened: {e}")))?;
    // Shader compilation and device errors surface on first use: run a tiny
    // op through a full round trip now, so a broken WebGPU falls back here.
    let failed = |e: crate::Error| WebError::Gpu(format!("WebGPU failed a test computation: {e}"));
    let probe = be
        .upload(&[1.0, 2.0, 3.0, 4.0], &[2, 2])
        .and_then(|a| be.matmul(&a, &a))
        .map_err(failed)?;
    let got = be.read_async(&probe).await.map_err(failed)?;
    if got != [7.0, 10.0, 15.0, 22.0] {
        return Err(WebError::Gpu(format!(
            "WebGPU computed a wrong test result ({got:?})"
        )));
    }
    Ok(be)
}

/// The adapter in words; browsers often hide its name.
pub(crate) fn adapter_words(be: &GpuBackend) -> String {
    let i = &be.ctx.info;
    let kind = match i.device_type {
        wgpu::DeviceType::Cpu => "a software adapter, emulated on the CPU",
        wgpu::DeviceType::IntegratedGpu => "an integrated GPU",
        wgpu::DeviceType::DiscreteGpu => "a discrete GPU",
        wgpu::DeviceType::VirtualGpu => "a virtual GPU",
        wgpu::DeviceType::Other => "a GPU",
    };
    if i.name.is_empty() {
        kind.to_string()
    } else {
        format!("{}, {kind}", i.name)
    }
}

/// Whether the adapter is a software one (SwiftShader, llvmpipe): the page
/// then proposes the smaller model for training.
pub(crate) fn is_software(be: &GpuBackend) -> bool {
    be.ctx.info.device_type == wgpu::DeviceType::Cpu
}

/// The CLI's image preparation (`data::to_tensor`): gray through the `image`
/// crate's luminance (or RGB), triangle-filter resize to the model's size,
/// clamp to [0, 1], CHW.
pub fn prepare(
    rgba: &[u8],
    width: u32,
    height: u32,
    size: usize,
    channels: usize,
) -> Result<Vec<f32>, WebError> {
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(WebError::Input(format!(
            "the image is {width}×{height} px; it must be at least {MIN_SIDE}×{MIN_SIDE}"
        )));
    }
    let pixels = width as u64 * height as u64;
    if pixels > MAX_PIXELS {
        return Err(WebError::Input(format!(
            "the image is {width}×{height} px ({:.0} megapixels), far larger than the model's {size}×{size}; \
             the page takes at most {:.0} megapixels — scale it down first",
            pixels as f64 / 1e6,
            MAX_PIXELS as f64 / 1e6
        )));
    }
    if rgba.len() as u64 != pixels * 4 {
        return Err(WebError::Input(format!(
            "{} bytes of pixels for a {width}×{height} RGBA image (need {})",
            rgba.len(),
            pixels * 4
        )));
    }
    let img = DynamicImage::ImageRgba8(
        RgbaImage::from_raw(width, height, rgba.to_vec())
            .ok_or_else(|| WebError::Input("bad RGBA buffer".into()))?,
    );
    let s = size as u32;
    let clamp = |v: f32| {
        if v.is_finite() {
            v.clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    Ok(if channels == 1 {
        let g = img.to_luma32f();
        imageops::resize(&g, s, s, FilterType::Triangle)
            .into_raw()
            .into_iter()
            .map(clamp)
            .collect()
    } else {
        let r = imageops::resize(&img.to_rgb32f(), s, s, FilterType::Triangle).into_raw();
        let hw = size * size;
        let mut out = vec![0f32; 3 * hw];
        for (p, px) in r.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                out[ch * hw + p] = clamp(px[ch]);
            }
        }
        out
    })
}

/// Sets `key` on a JS object (results handed to the page).
pub(crate) fn set(o: &js_sys::Object, key: &str, v: impl Into<JsValue>) {
    // Reflect.set on a plain object only fails for frozen objects.
    let _ = js_sys::Reflect::set(o, &JsValue::from_str(key), &v.into());
}
