//! The browser API (wasm-bindgen; only built for wasm32): a [`Detector`] that
//! loads a model file and turns RGBA pixels into an anomaly map, on WebGPU
//! when the browser has it and on the CPU backend compiled to wasm otherwise.
//! The page in `web/` is its only user; everything runs on the user's machine.
//!
//! The detector code is the native one ([`crate::detect`]): the same model
//! file, the same image preparation as the CLI, seed 0 and image id 0, so a
//! map in the browser equals the CLI's for the same model and image.

use std::rc::Rc;

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbaImage};
use wasm_bindgen::prelude::*;

use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::GpuBackend;
use crate::backend::Backend;
use crate::detect::{self, DetectOptions};
use crate::model_file::{ModelFile, ModelMeta};
use crate::nn::score_model::ScoreModel;

/// Images with more pixels than this are refused: a photo that size is far
/// larger than any model input and decoding it would exhaust a phone's memory.
pub const MAX_PIXELS: u64 = 4096 * 4096;
/// Smallest side accepted (as the CLI's loader).
pub const MIN_SIDE: u32 = 8;

#[wasm_bindgen(start)]
fn start() {
    // A panic shows its message in the console instead of "unreachable".
    console_error_panic_hook::set_once();
}

#[allow(clippy::large_enum_variant)] // one per page; boxing buys nothing
enum Engine {
    Cpu {
        be: CpuBackend,
        model: ScoreModel<CpuBackend>,
    },
    Gpu {
        be: GpuBackend,
        model: ScoreModel<GpuBackend>,
    },
}

struct Inner {
    engine: Engine,
    meta: ModelMeta,
    /// Which backend, and why, in one sentence.
    why: String,
}

/// A loaded model on a backend. Create it with `await Detector.create(bytes, preferGpu)`.
/// Calls must not overlap: await one `detect` before starting the next.
#[wasm_bindgen]
pub struct Detector {
    inner: Rc<Inner>,
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Opens WebGPU if asked and possible; the reason, when not, goes into the sentence.
async fn open_gpu(file: &ModelFile) -> Result<(GpuBackend, ScoreModel<GpuBackend>), String> {
    if !wgpu::util::is_browser_webgpu_supported().await {
        return Err("this browser offers no WebGPU (navigator.gpu is missing)".into());
    }
    let be = GpuBackend::new_async()
        .await
        .map_err(|e| format!("WebGPU could not be opened: {e}"))?;
    let model = ScoreModel::from_file(&be, file)
        .map_err(|e| format!("the model could not be put on the GPU: {e}"))?;
    // Shader compilation and device errors surface on first use: run a tiny
    // op through a full round trip now, so a broken WebGPU falls back here.
    let probe = be
        .upload(&[1.0, 2.0, 3.0, 4.0], &[2, 2])
        .and_then(|a| be.matmul(&a, &a))
        .map_err(|e| format!("WebGPU failed a test computation: {e}"))?;
    let got = be
        .read_async(&probe)
        .await
        .map_err(|e| format!("WebGPU failed a test computation: {e}"))?;
    if got != [7.0, 10.0, 15.0, 22.0] {
        return Err(format!("WebGPU computed a wrong test result ({got:?})"));
    }
    Ok((be, model))
}

#[wasm_bindgen]
impl Detector {
    /// Parses and validates a model file (`.safetensors` written by scoredd) and
    /// puts it on WebGPU when `prefer_gpu` and the browser has a WebGPU adapter,
    /// else on the CPU. `name` names the file in error messages.
    pub async fn create(
        model_bytes: Vec<u8>,
        name: String,
        prefer_gpu: bool,
    ) -> Result<Detector, JsError> {
        let file = ModelFile::from_bytes(&model_bytes, &name).map_err(js_err)?;
        drop(model_bytes);
        let meta = file.meta.clone();
        let cpu = CpuBackend::new();
        let model = ScoreModel::from_file(&cpu, &file).map_err(js_err)?;
        // Refuse a model whose stored settings cannot run before touching the GPU.
        detect::validate(
            &model,
            &DetectOptions::from_settings(meta.detection.clone()),
        )
        .map_err(|e| {
            js_err(format!(
                "model file {name}: its detection settings are unusable: {e}"
            ))
        })?;
        let mut why = String::new();
        if prefer_gpu {
            match open_gpu(&file).await {
                Ok((be, model)) => {
                    let why = format!("WebGPU ({})", adapter_words(&be));
                    return Ok(Detector {
                        inner: Rc::new(Inner {
                            engine: Engine::Gpu { be, model },
                            meta,
                            why,
                        }),
                    });
                }
                Err(reason) => why = format!(" because {reason}"),
            }
        } else {
            why.push_str(" (asked for the CPU)");
        }
        Ok(Detector {
            inner: Rc::new(Inner {
                engine: Engine::Cpu { be: cpu, model },
                meta,
                why: format!("CPU (WebAssembly, one thread){why}"),
            }),
        })
    }

    /// Which backend detection runs on, and why, in one sentence.
    pub fn backend(&self) -> String {
        self.inner.why.clone()
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(js_name = backendKind)]
    pub fn backend_kind(&self) -> String {
        match self.inner.engine {
            Engine::Gpu { .. } => "webgpu".into(),
            Engine::Cpu { .. } => "cpu".into(),
        }
    }

    /// Side of the square images the model takes (and of its maps).
    #[wasm_bindgen(js_name = imageSize)]
    pub fn image_size(&self) -> usize {
        self.inner.meta.model.image_size
    }

    /// 1 (gray) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.inner.meta.model.channels
    }

    /// The model's metadata (config, SDE, training step, detection settings,
    /// calibration) as JSON, training recipe left out.
    #[wasm_bindgen(js_name = metaJson)]
    pub fn meta_json(&self) -> String {
        let mut m = self.inner.meta.clone();
        m.training = None;
        serde_json::to_string(&m).unwrap_or_default()
    }

    /// A raw score mapped to [0, 1] by the model's calibration (0.5 = threshold);
    /// `undefined` for an uncalibrated model.
    pub fn normalise(&self, raw: f64) -> Option<f64> {
        self.inner
            .meta
            .calibration
            .as_ref()
            .map(|c| c.normalise(raw))
    }

    /// Detects defects in an image given as RGBA bytes (`width × height × 4`,
    /// as from a canvas' `getImageData`). Resolves to
    /// `{ map: Float32Array (size×size, row-major), size, score, normalised,
    ///   defect, threshold, low, high, ms, backend }`; `normalised`, `defect`,
    /// `threshold`, `low` and `high` are `null` for an uncalibrated model.
    pub fn detect(&self, rgba: Vec<u8>, width: u32, height: u32) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            inner
                .detect(&rgba, width, height)
                .await
                .map_err(|e| JsValue::from(JsError::new(&e)))
        })
    }
}

/// The adapter in words; browsers often hide its name.
fn adapter_words(be: &GpuBackend) -> String {
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

/// The CLI's image preparation (`data::to_tensor`): gray through the `image`
/// crate's luminance (or RGB), triangle-filter resize to the model's size,
/// clamp to [0, 1], CHW.
pub fn prepare(
    rgba: &[u8],
    width: u32,
    height: u32,
    size: usize,
    channels: usize,
) -> Result<Vec<f32>, String> {
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(format!(
            "the image is {width}×{height} px; it must be at least {MIN_SIDE}×{MIN_SIDE}"
        ));
    }
    let pixels = width as u64 * height as u64;
    if pixels > MAX_PIXELS {
        return Err(format!(
            "the image is {width}×{height} px ({:.0} megapixels), far larger than the model's {size}×{size}; \
             the page takes at most {:.0} megapixels — scale it down first",
            pixels as f64 / 1e6,
            MAX_PIXELS as f64 / 1e6
        ));
    }
    if rgba.len() as u64 != pixels * 4 {
        return Err(format!(
            "{} bytes of pixels for a {width}×{height} RGBA image (need {})",
            rgba.len(),
            pixels * 4
        ));
    }
    let img = DynamicImage::ImageRgba8(
        RgbaImage::from_raw(width, height, rgba.to_vec()).ok_or("bad RGBA buffer")?,
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

impl Inner {
    async fn detect(&self, rgba: &[u8], width: u32, height: u32) -> Result<JsValue, String> {
        let t0 = now_ms();
        let cfg = &self.meta.model;
        let x = prepare(rgba, width, height, cfg.image_size, cfg.channels)?;
        let opts = DetectOptions::from_settings(self.meta.detection.clone());
        let err = |e: crate::Error| format!("detection failed: {e}");
        let maps = match &self.engine {
            Engine::Cpu { be, model } => {
                detect::anomaly_maps(be, model, &[&x], &[0], &opts).map_err(err)?
            }
            Engine::Gpu { be, model } => {
                let p = detect::start(be, model, &[&x], &[0], &opts).map_err(err)?;
                let mut host = Vec::with_capacity(p.tensors.len());
                for t in &p.tensors {
                    host.push(be.read_async(t).await.map_err(err)?);
                }
                p.finish(host).map_err(err)?
            }
        };
        let map = maps.into_iter().next().ok_or("detection returned no map")?;
        let score = detect::image_score(&map) as f64;
        let ms = now_ms() - t0;

        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), &v);
        };
        let cal = self.meta.calibration.as_ref();
        let opt = |v: Option<f64>| v.map(JsValue::from_f64).unwrap_or(JsValue::NULL);
        set("map", js_sys::Float32Array::from(map.as_slice()).into());
        set("size", JsValue::from_f64(cfg.image_size as f64));
        set("score", JsValue::from_f64(score));
        set("normalised", opt(cal.map(|c| c.normalise(score))));
        set(
            "defect",
            cal.map(|c| JsValue::from_bool(c.is_defect(score)))
                .unwrap_or(JsValue::NULL),
        );
        set("threshold", opt(cal.map(|c| c.threshold)));
        set("low", opt(cal.map(|c| c.low)));
        set("high", opt(cal.map(|c| c.high)));
        set("ms", JsValue::from_f64(ms));
        set(
            "backend",
            JsValue::from_str(match self.engine {
                Engine::Gpu { .. } => "webgpu",
                Engine::Cpu { .. } => "cpu",
            }),
        );
        Ok(o.into())
    }
}
