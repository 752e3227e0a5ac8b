//! [`Detector`]: a model file on a backend, turning RGBA pixels into an
//! anomaly map with the native detector ([`crate::detect`]): the same model
//! file, the same image preparation as the CLI, seed 0 and image id 0, so a
//! map in the browser equals the CLI's for the same model and image; its
//! score, normalised score and verdict come from [`crate::pipeline::judge`],
//! as the CLI's do.

use std::rc::Rc;

use wasm_bindgen::prelude::*;

use super::{adapter_words, is_software, now_ms, open_gpu, prepare, set, ReadBack, WebError};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::tune::{adapter_key, Variant};
use crate::backend::gpu::GpuBackend;
use crate::detect::{self, DetectOptions};
use crate::model_file::{ModelFile, ModelMeta};
use crate::nn::score_model::ScoreModel;
use crate::pipeline::judge;

#[allow(clippy::large_enum_variant)] // one per worker; boxing buys nothing
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
    /// A software WebGPU adapter (or the CPU): training proposes `tiny`.
    slow: bool,
}

/// A loaded model on a backend. Create it with `await Detector.create(bytes, name, preferGpu)`.
/// Calls must not overlap: await one `detect` before starting the next.
#[wasm_bindgen]
pub struct Detector {
    inner: Rc<Inner>,
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
    ) -> Result<Detector, JsValue> {
        let file = ModelFile::from_bytes(&model_bytes, &name)
            .map_err(WebError::lib("could not read the model"))?;
        drop(model_bytes);
        let meta = file.meta.clone();
        let cpu = CpuBackend::new();
        let model = ScoreModel::from_file(&cpu, &file)
            .map_err(WebError::lib(format!("model file {name}")))?;
        // Refuse a model whose stored settings cannot run before touching the GPU.
        detect::validate(
            &model,
            &DetectOptions::from_settings(meta.detection.clone()),
        )
        .map_err(WebError::lib(format!(
            "model file {name}: its detection settings are unusable"
        )))?;
        let why = if prefer_gpu {
            match open_gpu().await {
                Ok(be) => {
                    let gpu_model = ScoreModel::from_file(&be, &file).map_err(|e| {
                        WebError::Gpu(format!("the model could not be put on the GPU: {e}"))
                    });
                    match gpu_model {
                        Ok(model) => {
                            let why = format!("WebGPU ({})", adapter_words(&be));
                            let slow = is_software(&be);
                            let engine = Engine::Gpu { be, model };
                            return Ok(Detector::new(engine, meta, why, slow));
                        }
                        Err(e) => format!(" because {e}"),
                    }
                }
                Err(reason) => format!(" because {reason}"),
            }
        } else {
            " (asked for the CPU)".to_string()
        };
        let engine = Engine::Cpu { be: cpu, model };
        let why = format!("CPU (WebAssembly, one thread per worker){why}");
        Ok(Detector::new(engine, meta, why, true))
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

    /// True on the CPU and on a software WebGPU adapter: the page then
    /// proposes the `tiny` model for training, `small` on a real GPU.
    #[wasm_bindgen(js_name = isSlow)]
    pub fn is_slow(&self) -> bool {
        self.inner.slow
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

    /// Times detection with each kernel family the browser offers and keeps
    /// the fastest for this detector. Resolves to `{ key, chosen, ms: { family:
    /// ms } }`, or `null` on the CPU. Natively each (kernel, shape) is timed
    /// inside the op; a page cannot wait for the GPU there, so it times whole
    /// detections of a mid-grey image instead, one family at a time (a warm-up
    /// run compiles its pipelines first). `key` names the adapter, driver and
    /// shaders: store the choice under it and hand it to `useKernels` next time.
    #[wasm_bindgen(js_name = tuneKernels)]
    pub fn tune_kernels(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move { Ok(inner.tune_kernels().await?) })
    }

    /// Uses kernel family `name` (a `chosen` of `tuneKernels` under the same
    /// `kernelKey`) without measuring. False on the CPU or for an unknown name.
    #[wasm_bindgen(js_name = useKernels)]
    pub fn use_kernels(&self, name: &str) -> bool {
        match (&self.inner.engine, Variant::from_name(name)) {
            (Engine::Gpu { be, .. }, Some(v)) if BROWSER_FAMILIES.contains(&v) => {
                be.tuner.forced.set(Some(v));
                true
            }
            _ => false,
        }
    }

    /// What a tuning result is valid for (adapter, driver, backend, shader
    /// hash); `undefined` on the CPU.
    #[wasm_bindgen(js_name = kernelKey)]
    pub fn kernel_key(&self) -> Option<String> {
        match &self.inner.engine {
            Engine::Gpu { be, .. } => Some(adapter_key(&be.ctx.info)),
            Engine::Cpu { .. } => None,
        }
    }

    /// Detects defects in an image given as RGBA bytes (`width × height × 4`,
    /// as from a canvas' `getImageData`). Resolves to
    /// `{ map: Float32Array (size×size, row-major), size, score, normalised,
    ///   defect, threshold, low, high, ms, backend }`; `normalised`, `defect`,
    /// `threshold`, `low` and `high` are `null` for an uncalibrated model.
    /// `threshold`, `low` and `high` are the map's scale, which is the
    /// score's unless the model has a verdict reading.
    pub fn detect(&self, rgba: Vec<u8>, width: u32, height: u32) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            Ok(inner.detect(&rgba, width, height).await?)
        })
    }
}

impl Detector {
    fn new(engine: Engine, meta: ModelMeta, why: String, slow: bool) -> Detector {
        Detector {
            inner: Rc::new(Inner {
                engine,
                meta,
                why,
                slow,
            }),
        }
    }
}

/// One image's map and score on any backend: queue, read back
/// (asynchronously on WebGPU), finish on the host.
async fn map_on<B: ReadBack>(
    be: &B,
    model: &ScoreModel<B>,
    x: &[f32],
    opts: &DetectOptions,
) -> Result<(Vec<f32>, f32), WebError> {
    let failed = || WebError::lib("detection failed");
    let p = detect::start(be, model, &[x], &[0], opts).map_err(failed())?;
    let mut host = Vec::with_capacity(p.tensors.len());
    for t in &p.tensors {
        host.push(be.read_back(t).await.map_err(failed())?);
    }
    let found = p.finish(host).map_err(failed())?;
    let map = found.maps.into_iter().next();
    let score = found.scores.first().copied();
    map.zip(score)
        .ok_or_else(|| WebError::Usage("detection returned no map".into()))
}

/// The kernel families a page chooses between (subgroups are native only).
const BROWSER_FAMILIES: [Variant; 2] = [Variant::RegisterBlocked, Variant::Tiled];

/// A family whose first (compiling) run takes this many times the best
/// timed run so far is out without a second run.
const SKIP_FACTOR: f64 = 3.0;

impl Inner {
    async fn tune_kernels(&self) -> Result<JsValue, WebError> {
        let Engine::Gpu { be, model } = &self.engine else {
            return Ok(JsValue::NULL);
        };
        let cfg = &self.meta.model;
        let grey = vec![0.5f32; cfg.channels * cfg.image_size * cfg.image_size];
        let opts = DetectOptions::from_settings(self.meta.detection.clone());
        let before = be.tuner.forced.get();
        let ms = js_sys::Object::new();
        let mut best = (Variant::DEFAULT, f64::INFINITY);
        for v in BROWSER_FAMILIES {
            be.tuner.forced.set(Some(v));
            let best_ms = best.1;
            let timed = async {
                // The warm-up compiles the family's pipelines. A family whose
                // warm-up is already far slower than the best is not timed
                // again: on a software adapter that saves seconds of a load.
                let t0 = now_ms();
                map_on(be, model, &grey, &opts).await?;
                let warm = now_ms() - t0;
                if warm > SKIP_FACTOR * best_ms {
                    return Ok(warm);
                }
                let t0 = now_ms();
                map_on(be, model, &grey, &opts).await?;
                Ok::<f64, WebError>(now_ms() - t0)
            };
            let t = match timed.await {
                Ok(t) => t,
                Err(e) => {
                    be.tuner.forced.set(before);
                    return Err(e);
                }
            };
            set(&ms, v.name(), t);
            if t < best.1 {
                best = (v, t);
            }
        }
        be.tuner.forced.set(Some(best.0));
        let o = js_sys::Object::new();
        set(&o, "key", adapter_key(&be.ctx.info));
        set(&o, "chosen", best.0.name());
        set(&o, "ms", ms);
        Ok(o.into())
    }

    async fn detect(&self, rgba: &[u8], width: u32, height: u32) -> Result<JsValue, WebError> {
        let t0 = now_ms();
        let cfg = &self.meta.model;
        let x = prepare(rgba, width, height, cfg.image_size, cfg.channels)?;
        let opts = DetectOptions::from_settings(self.meta.detection.clone());
        let (map, score) = match &self.engine {
            Engine::Cpu { be, model } => map_on(be, model, &x, &opts).await?,
            Engine::Gpu { be, model } => map_on(be, model, &x, &opts).await?,
        };
        let cal = self.meta.calibration.as_ref();
        let verdict = judge(score, cal);
        // The map's own scale, for outlines and colours.
        let map_cal = cal.map(|c| c.map_scale());
        let ms = now_ms() - t0;

        let o = js_sys::Object::new();
        let opt = |v: Option<f64>| v.map(JsValue::from_f64).unwrap_or(JsValue::NULL);
        set(&o, "map", js_sys::Float32Array::from(map.as_slice()));
        set(&o, "size", cfg.image_size as f64);
        set(&o, "score", verdict.score);
        set(&o, "normalised", opt(verdict.normalised));
        set(
            &o,
            "defect",
            verdict
                .defect
                .map(JsValue::from_bool)
                .unwrap_or(JsValue::NULL),
        );
        set(&o, "threshold", opt(map_cal.map(|c| c.threshold)));
        set(&o, "low", opt(map_cal.map(|c| c.low)));
        set(&o, "high", opt(map_cal.map(|c| c.high)));
        set(&o, "ms", ms);
        let kind = match self.engine {
            Engine::Gpu { .. } => "webgpu",
            Engine::Cpu { .. } => "cpu",
        };
        set(&o, "backend", kind);
        Ok(o.into())
    }
}
