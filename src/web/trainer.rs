//! [`WebTrainer`] (`Trainer` in JavaScript): `scoredd train` followed by
//! `scoredd calibrate --auto` in the page, on images handed over as pixels.
//!
//! The native code paths with the CLI's defaults, so that a model trained
//! here for N steps with a seed equals the CLI's `train` for the same images
//! (in file-name order), seed and steps: the same initialisation, the same
//! batches ([`data::make_batch`] with the loader's seed and step), the same
//! held-out split ([`calibrate::default_holdout`]) and the same
//! training step ([`Trainer::launch_step`] / [`Trainer::finish_step`], split
//! so WebGPU can read its two numbers back asynchronously). Calibration runs
//! on the CPU backend whatever trained the model: it is a small part of the
//! work, and its numbers are then the CLI's CPU ones.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Deserialize;
use wasm_bindgen::prelude::*;

use super::{adapter_words, now_ms, open_gpu, prepare, set, ReadBack, WebError};
use crate::backend::cpu::CpuBackend;
use crate::backend::gpu::GpuBackend;
use crate::backend::TrainOps;
use crate::calibrate::{self, Objective, SelectOptions};
use crate::config::{TimeEmbedding, TrainConfig, UNetConfig};
use crate::data::{self, Augment, ImageSpec};
use crate::detect::{self, DetectOptions};
use crate::model_file::ModelFile;
use crate::nn::score_model::ScoreModel;
use crate::sde::SdeKind;
use crate::train::{StepReport, Trainer};

/// Held-out images `calibrate --auto` needs at least: 2 to choose the
/// settings and 2 for the threshold (the CLI's rule).
const AUTO_MIN_HELD: usize = 4;
/// Images per network batch when calibrating: `calibrate`'s default `--batch`.
const CALIBRATE_BATCH: usize = 8;
/// Most images taken: each is kept at model size (64 px grey: 16 KiB).
const MAX_IMAGES: usize = 10_000;
/// Most steps asked for in one run.
const MAX_STEPS: u64 = 10_000_000;

/// The fewest good images the page trains on: with the CLI's default
/// hold-out (every 4th image for small sets) the first count that leaves
/// [`AUTO_MIN_HELD`] images to calibrate on — 16 (12 to learn from, 4 held out).
pub fn min_images() -> usize {
    (2..)
        .find(|&n| {
            data::holdout_split(n, calibrate::default_holdout(n))
                .1
                .len()
                >= AUTO_MIN_HELD
        })
        .unwrap_or(usize::MAX)
}

fn default_config() -> String {
    "tiny".into()
}
fn default_channels() -> usize {
    1
}
fn default_steps() -> u64 {
    1000
}
fn default_batch() -> usize {
    8
}
fn default_lr() -> f32 {
    2e-4
}

/// Training options: `scoredd train`'s flags of the same names, with its
/// defaults (but `tiny`, the model a browser trains in minutes).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    #[serde(default = "default_config")]
    config: String,
    #[serde(default = "default_channels")]
    channels: usize,
    #[serde(default = "default_steps")]
    steps: u64,
    #[serde(default = "default_batch")]
    batch: usize,
    #[serde(default = "default_lr")]
    lr: f32,
    /// Default as the CLI: min(5000, steps / 10).
    #[serde(default)]
    warmup: Option<u64>,
    #[serde(default)]
    seed: u64,
}

impl Options {
    fn parse(json: &str) -> Result<(Options, UNetConfig), WebError> {
        let o: Options = serde_json::from_str(json)
            .map_err(|e| WebError::Input(format!("training options: {e}")))?;
        if !(1..=MAX_STEPS).contains(&o.steps) {
            return Err(WebError::Input(format!(
                "the number of steps must be 1 to {MAX_STEPS}, not {}",
                o.steps
            )));
        }
        if !(1..=256).contains(&o.batch) {
            return Err(WebError::Input(format!(
                "the batch must be 1 to 256 images, not {}",
                o.batch
            )));
        }
        if !(o.lr.is_finite() && o.lr > 0.0 && o.lr < 1.0) {
            return Err(WebError::Input(format!(
                "the learning rate must be in (0, 1), not {}",
                o.lr
            )));
        }
        if o.config != "tiny" && o.config != "small" {
            return Err(WebError::Input(format!(
                "the page trains the tiny (32 px) or small (64 px) model, not {:?}",
                o.config
            )));
        }
        let cfg = UNetConfig::preset(&o.config, o.channels, TimeEmbedding::Fourier)
            .and_then(|c| c.validate().map(|_| c))
            .map_err(WebError::lib("training options"))?;
        Ok((o, cfg))
    }

    /// The CLI's recipe for these options and `n` images (VE SDE).
    fn recipe(&self, n: usize) -> TrainConfig {
        let mut tc = TrainConfig::recipe("ve", self.batch, self.seed);
        tc.lr = self.lr;
        tc.warmup = self.warmup.unwrap_or((self.steps / 10).min(5000));
        tc.holdout = calibrate::default_holdout(n);
        tc
    }
}

#[allow(clippy::large_enum_variant)] // one per run; boxing buys nothing
enum Engine {
    Cpu {
        be: CpuBackend,
        t: Trainer<CpuBackend>,
    },
    Gpu {
        be: GpuBackend,
        t: Trainer<GpuBackend>,
    },
}

/// A run between `start` and `finish`.
struct Run {
    engine: Engine,
    train: Vec<Vec<f32>>,
    held: Vec<Vec<f32>>,
    spec: ImageSpec,
    end_step: u64,
}

/// Images collected before `start`, the run, and its result.
struct State {
    opts: Options,
    cfg: UNetConfig,
    spec: ImageSpec,
    images: Vec<Vec<f32>>,
    /// Name and size of the first image: all must have its size.
    first: Option<(String, u32, u32)>,
    run: Option<Run>,
    model: Option<Vec<u8>>,
}

/// Trains a detector from good images in the page. In JavaScript:
///
/// ```js
/// const t = new Trainer(JSON.stringify({ config: 'tiny', steps: 500, seed: 0 }));
/// for (const img of images) t.addImage(name, rgba, width, height); // file-name order
/// const info = JSON.parse(await t.start(preferGpu));
/// while (!(await t.step()).done) {} // report progress; stop whenever
/// const summary = JSON.parse(await t.finish((what, done, total) => {}));
/// const bytes = t.modelBytes(); // the .safetensors file the CLI reads
/// ```
///
/// Calls must not overlap: await each before the next.
#[wasm_bindgen(js_name = Trainer)]
pub struct WebTrainer {
    state: Rc<RefCell<State>>,
}

#[wasm_bindgen(js_class = Trainer)]
impl WebTrainer {
    /// Checks the options (JSON: `config` tiny|small, `channels`, `steps`,
    /// `batch`, `lr`, `warmup`, `seed`; each as `scoredd train`'s flag).
    #[wasm_bindgen(constructor)]
    pub fn new(options_json: &str) -> Result<WebTrainer, JsValue> {
        let (opts, cfg) = Options::parse(options_json)?;
        let spec = ImageSpec {
            size: cfg.image_size,
            channels: cfg.channels,
        };
        Ok(WebTrainer {
            state: Rc::new(RefCell::new(State {
                opts,
                cfg,
                spec,
                images: Vec::new(),
                first: None,
                run: None,
                model: None,
            })),
        })
    }

    /// The fewest good images training accepts (see [`min_images`]).
    #[wasm_bindgen(js_name = minImages)]
    pub fn min_images_js() -> usize {
        min_images()
    }

    /// Side of the images the model learns from (every image is resized to it).
    #[wasm_bindgen(js_name = imageSize)]
    pub fn image_size(&self) -> usize {
        self.state.borrow().spec.size
    }

    /// Images taken so far.
    #[wasm_bindgen(js_name = imageCount)]
    pub fn image_count(&self) -> usize {
        self.state.borrow().images.len()
    }

    /// Adds a good image (RGBA bytes, `width × height × 4`), prepared as the
    /// CLI prepares it. Add them in file-name order (the CLI's order: it
    /// decides the held-out split and the batches). Refuses an image whose
    /// size differs from the first one's.
    #[wasm_bindgen(js_name = addImage)]
    pub fn add_image(
        &self,
        name: &str,
        rgba: &[u8],
        width: u32,
        height: u32,
    ) -> Result<(), JsValue> {
        let mut st = self.state.borrow_mut();
        if st.run.is_some() || st.model.is_some() {
            return Err(WebError::Usage("images are added before training starts".into()).into());
        }
        if st.images.len() >= MAX_IMAGES {
            return Err(
                WebError::Input(format!("more than {MAX_IMAGES} images: train on fewer")).into(),
            );
        }
        match &st.first {
            Some((first, w, h)) if (*w, *h) != (width, height) => {
                return Err(WebError::Input(format!(
                    "{name} is {width}×{height} px but {first} is {w}×{h}: a detector learns one kind of \
                     picture, so give images of one size (same camera, same framing)"
                ))
                .into());
            }
            Some(_) => {}
            None => st.first = Some((name.to_string(), width, height)),
        }
        let x = prepare(rgba, width, height, st.spec.size, st.spec.channels)
            .map_err(|e| WebError::Input(format!("{name}: {e}")))?;
        st.images.push(x);
        Ok(())
    }

    /// Builds the model (on WebGPU when `prefer_gpu` and the browser has it,
    /// else on the CPU) and splits off the held-out images. Resolves to JSON:
    /// `{ backend, kind, train, held, params, steps, warmup, holdout, config, imageSize }`.
    pub fn start(&self, prefer_gpu: bool) -> js_sys::Promise {
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            Ok(JsValue::from_str(&start(&state, prefer_gpu).await?))
        })
    }

    /// One training step. Resolves to
    /// `{ step, loss, gradNorm, lr, skipped, ms, done }` (`done`: the asked
    /// number of steps is reached).
    pub fn step(&self) -> js_sys::Promise {
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut run = take_run(&state)?;
            let t0 = now_ms();
            let r = run.step().await;
            let end = run.end_step;
            state.borrow_mut().run = Some(run);
            let r = r?;
            let o = js_sys::Object::new();
            set(&o, "step", r.step as f64);
            set(&o, "loss", r.loss);
            set(&o, "gradNorm", r.grad_norm);
            set(&o, "lr", r.lr);
            set(&o, "skipped", r.skipped);
            set(&o, "ms", now_ms() - t0);
            set(&o, "done", r.step >= end);
            Ok(o.into())
        })
    }

    /// Ends the run (after the asked steps, or earlier when the user stops
    /// it): reads the weights back, chooses {t}, taps and smoothing on
    /// synthetic defects pasted onto half the held-out images and sets the
    /// threshold on the others (`calibrate --auto --objective pixel`),
    /// calling `progress(what, done, total)`. Resolves to JSON:
    /// `{ step, detection, calibration, selection, bytes }`.
    pub fn finish(&self, progress: js_sys::Function) -> js_sys::Promise {
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let run = take_run(&state)?;
            let mut file = run.checkpoint().await?;
            let mut report = |what: &str, done: usize, total: usize| {
                let _ = progress.call3(
                    &JsValue::NULL,
                    &JsValue::from_str(what),
                    &JsValue::from_f64(done as f64),
                    &JsValue::from_f64(total as f64),
                );
            };
            calibrate_file(&mut file, &run.held, &mut report)?;
            let bytes = file
                .to_bytes()
                .map_err(WebError::lib("could not write the model file"))?;
            let summary = serde_json::json!({
                "step": file.meta.step,
                "detection": file.meta.detection,
                "calibration": file.meta.calibration,
                "selection": file.meta.selection,
                "bytes": bytes.len(),
            });
            state.borrow_mut().model = Some(bytes);
            Ok(JsValue::from_str(&summary.to_string()))
        })
    }

    /// The trained, calibrated model: the `.safetensors` file `scoredd train`
    /// and `calibrate` write (EMA weights, training state for `--resume`,
    /// detection settings, calibration).
    #[wasm_bindgen(js_name = modelBytes)]
    pub fn model_bytes(&self) -> Result<Vec<u8>, JsValue> {
        self.state
            .borrow()
            .model
            .clone()
            .ok_or_else(|| WebError::Usage("no model yet: call finish() first".into()).into())
    }
}

fn take_run(state: &Rc<RefCell<State>>) -> Result<Run, WebError> {
    state.borrow_mut().run.take().ok_or_else(|| {
        WebError::Usage("no training run: call start() first (and await each call)".into())
    })
}

/// `start`: the count check, the model on its backend, the hold-out split.
async fn start(state: &Rc<RefCell<State>>, prefer_gpu: bool) -> Result<String, WebError> {
    let (opts, cfg, spec, all) = {
        let mut st = state.borrow_mut();
        if st.run.is_some() || st.model.is_some() {
            return Err(WebError::Usage("this trainer has already started".into()));
        }
        let all = std::mem::take(&mut st.images);
        (st.opts.clone(), st.cfg.clone(), st.spec, all)
    };
    let n = all.len();
    let min = min_images();
    if n < min {
        state.borrow_mut().images = all;
        return Err(WebError::Input(format!(
            "{n} good image{} — training needs at least {min}: {} to learn from and {AUTO_MIN_HELD} held out \
             to calibrate the detector (a hundred or more give a reliable threshold)",
            if n == 1 { "" } else { "s" },
            min - AUTO_MIN_HELD
        )));
    }
    let tc = opts.recipe(n);
    let (train_idx, held_idx) = data::holdout_split(n, tc.holdout);
    let pick = |idx: &[usize]| idx.iter().map(|&i| all[i].clone()).collect::<Vec<_>>();
    let (train, held) = (pick(&train_idx), pick(&held_idx));
    let (engine, why) = open_engine(cfg, opts.seed, tc.clone(), prefer_gpu).await?;
    let (kind, params) = match &engine {
        Engine::Cpu { t, .. } => ("cpu", trainable_params(&t.model)),
        Engine::Gpu { t, .. } => ("webgpu", trainable_params(&t.model)),
    };
    let info = serde_json::json!({
        "backend": why, "kind": kind, "train": train.len(), "held": held.len(),
        "params": params, "steps": opts.steps, "warmup": tc.warmup, "holdout": tc.holdout,
        "config": opts.config, "imageSize": spec.size, "batch": opts.batch, "seed": opts.seed,
    });
    state.borrow_mut().run = Some(Run {
        engine,
        train,
        held,
        spec,
        end_step: opts.steps,
    });
    Ok(info.to_string())
}

fn trainable_params<B: crate::backend::NnBackend>(m: &ScoreModel<B>) -> usize {
    (0..m.params.len())
        .filter(|&i| m.net.is_trainable(i))
        .map(|i| m.params.shapes[i].iter().product::<usize>())
        .sum()
}

/// A fresh model (the CLI's initialisation for the seed) and its trainer, on
/// WebGPU if asked and possible, else on the CPU; with the backend in words.
async fn open_engine(
    cfg: UNetConfig,
    seed: u64,
    tc: TrainConfig,
    prefer_gpu: bool,
) -> Result<(Engine, String), WebError> {
    let sde = SdeKind::Ve.config(cfg.image_size);
    let failed = WebError::lib("could not set up training");
    let mut fallback = " (asked for the CPU)".to_string();
    if prefer_gpu {
        match open_gpu().await {
            Ok(be) => {
                let t = ScoreModel::new(&be, cfg.clone(), sde.clone(), seed)
                    .and_then(|m| Trainer::new(&be, m, tc.clone()));
                match t {
                    Ok(t) => {
                        let why = format!("WebGPU ({})", adapter_words(&be));
                        return Ok((Engine::Gpu { be, t }, why));
                    }
                    Err(e) => {
                        fallback = format!(" because the model could not be put on the GPU: {e}")
                    }
                }
            }
            Err(e) => fallback = format!(" because {e}"),
        }
    }
    let be = CpuBackend::new();
    let model = ScoreModel::new(&be, cfg, sde, seed).map_err(failed)?;
    let t = Trainer::new(&be, model, tc).map_err(WebError::lib("could not set up training"))?;
    Ok((
        Engine::Cpu { be, t },
        format!("CPU (WebAssembly, one thread){fallback}"),
    ))
}

/// One step on any backend: the CLI's batch for this step, the step queued,
/// its gradient norm and loss read back.
async fn step_on<B: ReadBack + TrainOps>(
    be: &B,
    t: &mut Trainer<B>,
    images: &[Vec<f32>],
    spec: ImageSpec,
) -> Result<StepReport, WebError> {
    let failed = || WebError::lib("training failed");
    let c = &t.config;
    let batch = data::make_batch(
        images,
        spec,
        c.batch,
        &Augment::none(),
        c.loader_seed(),
        t.step,
    )
    .map_err(failed())?;
    let x = be.upload(&batch.data, &batch.shape).map_err(failed())?;
    let pending = t.launch_step(be, &x).map_err(failed())?;
    let grad_sq = be.read_back(&pending.grad_sq).await.map_err(failed())?[0];
    let loss = be.read_back(&pending.loss).await.map_err(failed())?[0];
    match t.finish_step(be, pending, grad_sq, Some(loss)) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(WebError::Usage(
            "internal: a step read back reported nothing".into(),
        )),
        Err(e @ crate::Error::Diverged { .. }) => Err(WebError::Input(format!(
            "{e}. Nothing was changed: try a lower learning rate or fewer steps"
        ))),
        Err(e) => Err(failed()(e)),
    }
}

/// Every tensor of a checkpoint read back, then the checkpoint.
async fn checkpoint_on<B: ReadBack + TrainOps>(
    be: &B,
    t: &Trainer<B>,
) -> Result<ModelFile, WebError> {
    let failed = || WebError::lib("could not read the trained weights back");
    let mut host = Vec::new();
    for x in t.state_tensors() {
        host.push(be.read_back(x).await.map_err(failed())?);
    }
    t.checkpoint_from_host(host).map_err(failed())
}

impl Run {
    async fn step(&mut self) -> Result<StepReport, WebError> {
        match &mut self.engine {
            Engine::Cpu { be, t } => step_on(be, t, &self.train, self.spec).await,
            Engine::Gpu { be, t } => step_on(be, t, &self.train, self.spec).await,
        }
    }

    async fn checkpoint(&self) -> Result<ModelFile, WebError> {
        match &self.engine {
            Engine::Cpu { be, t } => checkpoint_on(be, t).await,
            Engine::Gpu { be, t } => checkpoint_on(be, t).await,
        }
    }
}

/// `scoredd calibrate --auto` (defaults: pixel objective, seed 0, at most
/// 32 images choose the settings) on the held-out images, on the CPU.
fn calibrate_file(
    file: &mut ModelFile,
    held: &[Vec<f32>],
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(), WebError> {
    let failed = || WebError::lib("calibration failed");
    if held.len() < AUTO_MIN_HELD {
        return Err(WebError::Input(format!(
            "{} held-out images; calibration needs at least {AUTO_MIN_HELD}",
            held.len()
        )));
    }
    let be = CpuBackend::new();
    let model = ScoreModel::from_file(&be, file).map_err(failed())?;
    let mut opts = DetectOptions::from_settings(file.meta.detection.clone());
    detect::validate(&model, &opts).map_err(failed())?;
    let (select_idx, threshold_idx) =
        calibrate::split_held_out(held.len(), calibrate::SELECT_IMAGES);
    let pick = |idx: &[usize]| idx.iter().map(|&i| held[i].clone()).collect::<Vec<_>>();
    let normals = pick(&select_idx);
    let select = SelectOptions {
        batch: CALIBRATE_BATCH.clamp(1, 4),
        seed: opts.seed,
        ..SelectOptions::for_objective(Objective::Both)
    };
    let (settings, sel) =
        calibrate::select_settings(&be, &model, &normals, &opts.settings, &select, progress)
            .map_err(failed())?;
    opts.settings = settings;
    file.meta.selection = Some(sel);
    file.meta.detection = opts.settings.clone();
    let threshold_images = pick(&threshold_idx);
    let n = threshold_images.len();
    let (cal, _) = calibrate::calibrate_on_normals(
        &be,
        &model,
        &threshold_images,
        &opts,
        CALIBRATE_BATCH,
        calibrate::QUANTILE,
        &mut |d| progress("scoring held-out good images", d, n),
    )
    .map_err(failed())?;
    file.meta.calibration = Some(cal);
    Ok(())
}
