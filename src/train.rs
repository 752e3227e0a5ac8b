//! Training a score model by denoising score matching: one step is noise →
//! forward → loss → backward → global-norm clip → Adam → EMA, all on the
//! backend, reading back only the loss (and the gradient norm) every few steps.
//! Every random draw is a pure function of (seed, step), so a run resumed from
//! a checkpoint continues exactly as if it had never stopped.

use crate::backend::train_ops::{AdamStep, TrainOps};
use crate::backend::NnBackend;
use crate::error::{Error, Result};
use crate::model_file::ModelFile;
use crate::nn::score_model::ScoreModel;
use crate::nn::unet::ForwardOpts;
use crate::rng::RngStream;

/// Random-stream ids of the training step (the data loader has its own).
const TIME_STREAM: u64 = 0x7155_0001;
const NOISE_STREAM: u64 = 0x7155_0002;
const DROPOUT_STREAM: u64 = 0x7155_0003;

/// Smallest training time: t ~ U[T_EPS, 1].
pub const T_EPS: f64 = 1e-5;

pub use crate::config::TrainConfig;

/// Non-finite steps in a row after which training counts as diverged.
pub const MAX_SKIPPED_IN_A_ROW: u64 = 3;

/// What a step reports when it read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    pub step: u64,
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// The learning rate applied (after warm-up).
    pub lr: f32,
    /// The step was not finite and left the weights unchanged.
    pub skipped: bool,
}

/// A training step queued on the backend by [`Trainer::launch_step`].
pub struct PendingStep<T> {
    /// The step this is (1-based): the trainer's step count after it.
    pub step: u64,
    /// The squared global gradient norm, `[1]`.
    pub grad_sq: T,
    /// The loss, `[1]`.
    pub loss: T,
    /// Kept to name the parameters at fault if the run diverges.
    grads: crate::nn::Grads<T>,
}

/// A model being trained: its weights, their EMA, Adam's moments, the step count.
pub struct Trainer<B: NnBackend + TrainOps> {
    pub model: ScoreModel<B>,
    pub ema: Vec<B::Tensor>,
    m: Vec<B::Tensor>,
    v: Vec<B::Tensor>,
    pub step: u64,
    pub config: TrainConfig,
}

/// Checkpoint tensor names for the training state, beside the EMA weights.
fn key(kind: &str, name: &str) -> String {
    format!("train.{kind}.{name}")
}

impl<B: NnBackend + TrainOps> Trainer<B> {
    pub fn new(be: &B, model: ScoreModel<B>, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let zeros = |be: &B| -> Result<Vec<B::Tensor>> {
            model.params.shapes.iter().map(|s| be.zeros(s)).collect()
        };
        let (m, v) = (zeros(be)?, zeros(be)?);
        let ema = model.params.values.clone();
        let step = model.meta.step;
        Ok(Trainer {
            model,
            ema,
            m,
            v,
            step,
            config,
        })
    }

    /// Resumes from a checkpoint written by [`Trainer::checkpoint`].
    pub fn resume(be: &B, file: &ModelFile) -> Result<Self> {
        let config: TrainConfig = file
            .meta
            .training
            .clone()
            .ok_or_else(|| Error::Invalid("this model file has no training state to resume from (it was not written by `scoredd train`)".into()))?;
        let mut model = ScoreModel::from_file(be, file)?;
        let ema = model.params.values.clone();
        let take = |kind: &str| -> Result<Vec<B::Tensor>> {
            model
                .params
                .names
                .iter()
                .zip(&model.params.shapes)
                .map(|(n, s)| {
                    let (shape, data) = file.extra.get(&key(kind, n)).ok_or_else(|| {
                        Error::Invalid(format!("checkpoint lacks {}", key(kind, n)))
                    })?;
                    if shape != s {
                        return Err(Error::Invalid(format!(
                            "{}: shape {shape:?}, expected {s:?}",
                            key(kind, n)
                        )));
                    }
                    be.upload(data, s)
                })
                .collect()
        };
        let params = take("param")?;
        let m = take("m")?;
        let v = take("v")?;
        model.params.values = params;
        let step = file.meta.step;
        Ok(Trainer {
            model,
            ema,
            m,
            v,
            step,
            config,
        })
    }

    /// The model file: EMA weights as the model (what detection and sampling
    /// use), the raw weights and Adam's moments as extras for resuming.
    pub fn checkpoint(&self, be: &B) -> Result<ModelFile> {
        let host = self
            .state_tensors()
            .into_iter()
            .map(|t| be.read(t))
            .collect::<Result<Vec<_>>>()?;
        self.checkpoint_from_host(host)
    }

    /// Every tensor [`Trainer::checkpoint`] saves, in the order
    /// [`Trainer::checkpoint_from_host`] takes them back: the EMA weights, then
    /// the raw weights, Adam's first and second moments. A backend that cannot
    /// read synchronously (WebGPU in the browser) reads these itself.
    pub fn state_tensors(&self) -> Vec<&B::Tensor> {
        self.ema
            .iter()
            .chain(&self.model.params.values)
            .chain(&self.m)
            .chain(&self.v)
            .collect()
    }

    /// [`Trainer::checkpoint`] from the values of [`Trainer::state_tensors`].
    pub fn checkpoint_from_host(&self, host: Vec<Vec<f32>>) -> Result<ModelFile> {
        let n = self.model.params.names.len();
        if host.len() != 4 * n {
            return Err(Error::Invalid(format!(
                "internal: {} tensors for a checkpoint of {n} parameters (need {})",
                host.len(),
                4 * n
            )));
        }
        let mut meta = self.model.meta.clone();
        meta.step = self.step;
        meta.training = Some(self.config.clone());
        let mut host = host.into_iter();
        let weights: Vec<Vec<f32>> = host.by_ref().take(n).collect();
        let mut extra = std::collections::BTreeMap::new();
        for kind in ["param", "m", "v"] {
            for ((name, shape), data) in self
                .model
                .params
                .names
                .iter()
                .zip(&self.model.params.shapes)
                .zip(host.by_ref().take(n))
            {
                extra.insert(key(kind, name), (shape.clone(), data));
            }
        }
        Ok(ModelFile {
            meta,
            weights,
            extra,
        })
    }

    /// One training step on `x0: [B, C, H, W]` (values in [0, 1]). Reads the
    /// loss back only when `read` is true.
    pub fn train_step(&mut self, be: &B, x0: &B::Tensor, read: bool) -> Result<Option<StepReport>> {
        let pending = self.launch_step(be, x0)?;
        let grad_sq = be.read(&pending.grad_sq)?[0];
        // A skipped step is always reported, with its loss.
        let loss = if read || !grad_sq.sqrt().is_finite() {
            Some(be.read(&pending.loss)?[0])
        } else {
            None
        };
        self.finish_step(be, pending, grad_sq, loss)
    }

    /// The device half of [`Trainer::train_step`]: noise, forward, loss,
    /// backward, clip, Adam and EMA are queued on the backend (the weights
    /// change there; a non-finite step leaves them as they were) and the step
    /// count advances. Read back [`PendingStep::grad_sq`] (and the loss when
    /// wanted) and hand them to [`Trainer::finish_step`]: split so a backend
    /// that reads asynchronously (WebGPU in the browser) can train too.
    pub fn launch_step(&mut self, be: &B, x0: &B::Tensor) -> Result<PendingStep<B::Tensor>> {
        let cfg = &self.config;
        let step = self.step + 1;
        let b = be.shape(x0)[0];
        let sde = self.model.sde.as_ref();
        let mut u = vec![0.0f32; b];
        RngStream::new(cfg.seed, TIME_STREAM)
            .derive(step)
            .fill_uniform(0, &mut u);
        let t: Vec<f64> = u
            .iter()
            .map(|&u| T_EPS + (1.0 - T_EPS) * u as f64)
            .collect();
        let coef: Vec<_> = t
            .iter()
            .enumerate()
            .map(|(i, &ti)| sde.perturb_coef(ti, i as u64))
            .collect();
        let (xt, z) = be.perturb(
            x0,
            &coef,
            RngStream::new(cfg.seed, NOISE_STREAM).derive(step),
        )?;
        let opts = ForwardOpts {
            record: true,
            dropout: Some(RngStream::new(cfg.seed, DROPOUT_STREAM).derive(step)),
            ..Default::default()
        };
        let f = self
            .model
            .net
            .forward(be, &self.model.params, sde, &xt, &t, &opts)?;
        let weights: Vec<f32> = t
            .iter()
            .map(|&ti| {
                if cfg.likelihood_weighting {
                    (sde.diffusion(ti) / sde.std(ti)).powi(2) as f32
                } else {
                    1.0
                }
            })
            .collect();
        let (loss, dout) =
            be.dsm_loss(&f.out, &z, &weights, self.model.output_sign(), cfg.reduce)?;
        let tape = f
            .tape
            .ok_or_else(|| Error::Invalid("internal: forward recorded no tape".into()))?;
        let grads = self
            .model
            .net
            .backward(be, &self.model.params, &tape, &dout)?;
        drop(tape);
        let all: Vec<&B::Tensor> = grads.values.iter().flatten().collect();
        let total = be.sum_squares_all(&all)?;
        let hp = AdamStep {
            max_norm: cfg.max_norm,
            ..AdamStep::new(cfg.learning_rate(step), step)
        };
        let decay = cfg.ema_rate.min((1.0 + step as f32) / (10.0 + step as f32));
        for (i, g) in grads.values.iter().enumerate() {
            let Some(g) = g else { continue };
            be.adam_ema_step(
                &mut self.model.params.values[i],
                g,
                &mut self.m[i],
                &mut self.v[i],
                &hp,
                &total,
                &mut self.ema[i],
                decay,
            )?;
        }
        self.step = step;
        self.model.meta.step = step;
        Ok(PendingStep {
            step,
            grad_sq: total,
            loss,
            grads,
        })
    }

    /// The host half of [`Trainer::train_step`], given the step's squared
    /// gradient norm and, when it was read back, its loss: counts skipped
    /// (non-finite) steps and reports divergence. `None` when the step was
    /// finite and its loss not read.
    pub fn finish_step(
        &mut self,
        be: &B,
        pending: PendingStep<B::Tensor>,
        grad_sq: f32,
        loss: Option<f32>,
    ) -> Result<Option<StepReport>> {
        let step = pending.step;
        // Every step reads its gradient norm (one number): a non-finite step
        // was skipped on the device (Adam leaves the weights as they were);
        // several in a row mean the run has diverged.
        let grad_norm = grad_sq.sqrt();
        if !grad_norm.is_finite() {
            self.config.skipped_in_a_row += 1;
            if self.config.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW {
                // Naming the parameters reads every gradient back, which a
                // browser's WebGPU cannot do synchronously: then say less.
                let detail = self
                    .non_finite_report(be, &pending.grads)
                    .unwrap_or_else(|_| "the gradients are not finite".into());
                return Err(Error::Diverged {
                    step,
                    detail: format!(
                        "{} steps in a row were skipped; the last: {detail}",
                        self.config.skipped_in_a_row
                    ),
                });
            }
        } else {
            self.config.skipped_in_a_row = 0;
        }
        let Some(loss) = loss else {
            return Ok(None);
        };
        if !loss.is_finite() && grad_norm.is_finite() {
            return Err(Error::Diverged {
                step,
                detail: "the loss is not finite (the gradients are)".into(),
            });
        }
        Ok(Some(StepReport {
            step,
            loss,
            grad_norm,
            lr: self.config.learning_rate(step),
            skipped: !grad_norm.is_finite(),
        }))
    }

    /// The trainer to continue with after a divergence: the state of the
    /// checkpoint `last` with half the learning rate and one more rollback
    /// recorded (which reseeds the data loader). Everything that decides later
    /// steps is in the returned trainer's checkpoint.
    pub fn rolled_back(&self, be: &B, last: &ModelFile) -> Result<Self> {
        let mut back = Trainer::resume(be, last)?;
        back.config.lr = self.config.lr * 0.5;
        back.config.rollbacks = self.config.rollbacks + 1;
        back.config.skipped_in_a_row = 0;
        Ok(back)
    }

    /// Names the parameters whose gradients are not finite.
    fn non_finite_report(&self, be: &B, grads: &crate::nn::Grads<B::Tensor>) -> Result<String> {
        let mut bad = Vec::new();
        for (i, g) in grads.values.iter().enumerate() {
            if let Some(g) = g {
                if !be.is_finite(&be.sum_squares(g)?)? {
                    bad.push(self.model.params.names[i].clone());
                }
            }
        }
        Ok(if bad.is_empty() {
            "the loss is not finite (the gradients are)".into()
        } else {
            format!("non-finite gradients in {} (first: {}); the step was skipped, the weights are unchanged", bad.len(), bad[0])
        })
    }

    /// The model with its EMA weights: what sampling and detection should use.
    pub fn ema_model(&self) -> Result<ScoreModel<B>> {
        let mut params = crate::nn::ParamStore::default();
        params.names = self.model.params.names.clone();
        params.shapes = self.model.params.shapes.clone();
        params.inits = self.model.params.inits.clone();
        params.fixed_host = self.model.params.fixed_host.clone();
        params.values = self.ema.clone();
        Ok(ScoreModel {
            net: crate::nn::unet::UNet::new(self.model.net.config.clone())?,
            params,
            sde: self.model.meta.sde.build()?,
            meta: self.model.meta.clone(),
        })
    }
}
