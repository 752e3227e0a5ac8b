//! A score model on a backend: the U-net layout, its parameters there, the SDE,
//! and the output parametrisation that turns the network output into a score.

use super::unet::{ForwardOpts, UNet, UNetConfig};
use super::ParamStore;
use crate::backend::NnBackend;
use crate::config::{DetectionSettings, ModelMeta, FORMAT_VERSION};
use crate::error::Result;
use crate::method::ScoreFn;
use crate::sde::{Sde, SdeConfig};

pub struct ScoreModel<B: NnBackend> {
    pub net: UNet,
    pub params: ParamStore<B::Tensor>,
    pub sde: Box<dyn Sde>,
    pub meta: ModelMeta,
}

impl<B: NnBackend> ScoreModel<B> {
    /// A freshly initialised model.
    pub fn new(be: &B, config: UNetConfig, sde: SdeConfig, seed: u64) -> Result<Self> {
        let net = UNet::new(config.clone())?;
        let params = net.spec.store(be, &net.init_values(seed))?;
        let meta = ModelMeta {
            format: FORMAT_VERSION,
            model: config,
            sde: sde.clone(),
            step: 0,
            detection: DetectionSettings {
                taps: net.default_taps(),
                ..Default::default()
            },
            calibration: None,
            selection: None,
            training: None,
        };
        Ok(ScoreModel {
            net,
            params,
            sde: sde.build()?,
            meta,
        })
    }

    // `from_file` and `to_file` are in `model_file`, with the file format.

    /// Sign of the output parametrisation (DESIGN.md): VE's network predicts
    /// −z (s = out/σ), VP's and sub-VP's predict z (s = −out/σ).
    pub fn output_sign(&self) -> f32 {
        if self.sde.name() == "ve" {
            1.0
        } else {
            -1.0
        }
    }

    /// Scales each sample of `out: [B, …]` by `sign/σ(t_b)`: the score.
    pub fn output_to_score(&self, be: &B, out: &B::Tensor, t: &[f64]) -> Result<B::Tensor> {
        let shape = be.shape(out).to_vec();
        let d: usize = shape[1..].iter().product();
        let sign = self.output_sign();
        let s: Vec<f32> = t.iter().map(|&ti| sign / self.sde.std(ti) as f32).collect();
        // A per-sample scale is a batched [1×1]·[1×D] product.
        let scales = be.upload(&s, &[t.len(), 1, 1])?;
        let flat = be.reshape(out, &[t.len(), 1, d])?;
        be.reshape(&be.bmm(&scales, &flat, false, false)?, &shape)
    }
}

impl<B: NnBackend> ScoreFn<B> for ScoreModel<B> {
    fn score(&self, backend: &B, x: &B::Tensor, t: &[f64]) -> Result<B::Tensor> {
        let f = self.net.forward(
            backend,
            &self.params,
            self.sde.as_ref(),
            x,
            t,
            &ForwardOpts::default(),
        )?;
        self.output_to_score(backend, &f.out, t)
    }
}
