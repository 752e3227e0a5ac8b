//! The score U-net (NCSN++/DDPM++ family): time embedding, encoder of residual
//! (+ attention) blocks, middle, decoder with skip connections, output conv.
//! Built from a [`UNetConfig`]; forward accepts a different t per sample and can
//! return named feature maps ("taps"); backward returns every parameter's gradient.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::blocks::{
    AttnBlock, AttnSaved, BlockCtx, Downsample, ResBlock, ResSaved, Resample, ResampleSaved,
    Upsample,
};
use super::layers::{Conv, GroupNorm, Linear, NormSaved};
use super::{Grads, Init, ParamSpec, ParamStore};
use crate::backend::NnBackend;
use crate::error::{Error, Result};
use crate::rng::RngStream;
use crate::sde::Sde;

/// How the network sees time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeEmbedding {
    /// Gaussian Fourier features of log σ(t), scale 16 (for VE).
    Fourier,
    /// Sinusoidal embedding of 999·t (for VP and sub-VP).
    Sinusoidal,
}

/// The architecture. Serialised into the model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    pub image_size: usize,
    pub channels: usize,
    pub nf: usize,
    pub ch_mult: Vec<usize>,
    pub num_res_blocks: usize,
    /// Resolutions (in pixels) that get self-attention after each residual block.
    pub attn_resolutions: Vec<usize>,
    #[serde(default)]
    pub dropout: f32,
    #[serde(default)]
    pub resample: Resample,
    pub embedding: TimeEmbedding,
    #[serde(default = "default_fourier_scale")]
    pub fourier_scale: f32,
}

fn default_fourier_scale() -> f32 {
    16.0
}

// Bounds on a config, so a hostile or mistyped file (a model file's metadata,
// `train --config my.json`) is rejected before anything is built or allocated.
/// Largest `image_size` (the data pipeline's `data::MAX_SIZE`).
pub const MAX_IMAGE_SIZE: usize = 4096;
/// Most resolution levels (`ch_mult.len()`); 12 levels already take 4096 px to 2 px.
pub const MAX_LEVELS: usize = 12;
/// Most channels at any level (`nf · ch_mult[i]`).
pub const MAX_CHANNELS: usize = 8192;
/// Most residual blocks per level.
pub const MAX_RES_BLOCKS: usize = 64;
/// Most parameters in a network (4 GiB of f32, far above the paper's 256 px model).
pub const MAX_PARAMS: u64 = 1 << 30;

impl UNetConfig {
    /// 32 px, nf 16, ch_mult (1,2), 1 block, no attention — for CI.
    pub fn tiny(channels: usize, embedding: TimeEmbedding) -> Self {
        UNetConfig {
            image_size: 32,
            channels,
            nf: 16,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![],
            dropout: 0.0,
            resample: Resample::Conv,
            embedding,
            fourier_scale: 16.0,
        }
    }

    /// 64 px, nf 32, ch_mult (1,2,2,2), 2 blocks, attention at 8 px — CPU, browser, demos.
    pub fn small(channels: usize, embedding: TimeEmbedding) -> Self {
        UNetConfig {
            image_size: 64,
            nf: 32,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![8],
            ..Self::tiny(channels, embedding)
        }
    }

    /// The paper's MVTec model: 256 px, nf 128, ch_mult (1,1,2,2,2,2,2), 2 blocks, attention at 16 px.
    pub fn ncsnpp256(channels: usize, embedding: TimeEmbedding) -> Self {
        UNetConfig {
            image_size: 256,
            nf: 128,
            ch_mult: vec![1, 1, 2, 2, 2, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            resample: Resample::Fir,
            ..Self::tiny(channels, embedding)
        }
    }

    /// A named preset.
    pub fn preset(name: &str, channels: usize, embedding: TimeEmbedding) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny(channels, embedding)),
            "small" => Ok(Self::small(channels, embedding)),
            "ncsnpp256" => Ok(Self::ncsnpp256(channels, embedding)),
            _ => Err(Error::Invalid(format!(
                "unknown model config {name:?} (tiny, small, ncsnpp256 or a .json file)"
            ))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("model config: {m}")));
        if self.channels != 1 && self.channels != 3 {
            return bad(format!("channels must be 1 or 3, got {}", self.channels));
        }
        if self.nf == 0
            || !self.nf.is_multiple_of(4)
            || self.ch_mult.is_empty()
            || self.ch_mult.contains(&0)
            || self.num_res_blocks == 0
        {
            return bad("nf must be a positive multiple of 4, ch_mult non-empty and positive, num_res_blocks ≥ 1".into());
        }
        // Checked before the shift below, which overflows from 65 levels on.
        if self.ch_mult.len() > MAX_LEVELS {
            return bad(format!(
                "at most {MAX_LEVELS} levels (ch_mult entries), got {}",
                self.ch_mult.len()
            ));
        }
        if self.image_size > MAX_IMAGE_SIZE {
            return bad(format!(
                "image_size must be at most {MAX_IMAGE_SIZE}, got {}",
                self.image_size
            ));
        }
        let too_wide = |&m: &usize| self.nf.checked_mul(m).is_none_or(|c| c > MAX_CHANNELS);
        if self.ch_mult.iter().any(too_wide) {
            return bad(format!(
                "nf × ch_mult must be at most {MAX_CHANNELS} channels (nf {}, ch_mult {:?})",
                self.nf, self.ch_mult
            ));
        }
        if self.num_res_blocks > MAX_RES_BLOCKS {
            return bad(format!(
                "num_res_blocks must be at most {MAX_RES_BLOCKS}, got {}",
                self.num_res_blocks
            ));
        }
        if !self.fourier_scale.is_finite() {
            return bad(format!(
                "fourier_scale must be finite, got {}",
                self.fourier_scale
            ));
        }
        let levels = self.ch_mult.len() as u32;
        if self.image_size == 0 || !self.image_size.is_multiple_of(1usize << (levels - 1)) {
            return bad(format!(
                "image_size {} must be divisible by 2^{}",
                self.image_size,
                levels - 1
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// Input sides must be multiples of this (the total downsampling).
    pub fn size_multiple(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }

    /// Checks that the network can take `h × w` inputs. It is fully
    /// convolutional (attention and taps follow the input's size), so any
    /// multiple of [`UNetConfig::size_multiple`] up to the largest image size
    /// works, not only the `image_size` it was trained at.
    pub fn check_input_size(&self, h: usize, w: usize) -> Result<()> {
        let m = self.size_multiple();
        for side in [h, w] {
            if side == 0 || side > MAX_IMAGE_SIZE || !side.is_multiple_of(m) {
                return Err(Error::shape(
                    "unet",
                    format!(
                        "input {h}×{w}: sides must be multiples of {m} up to {MAX_IMAGE_SIZE} (the model was trained at {})",
                        self.image_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Parses and validates a JSON config (`scoredd train --config my.json`)
    /// as [`UNet::new`] does, parameter count included (building the layer
    /// list allocates no weights); `path` names the file in every error.
    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self> {
        let cfg: UNetConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::Invalid(format!("{path}: not a valid model config: {e}")))?;
        UNet::new(cfg.clone()).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{path}: {m}")),
            e => e,
        })?;
        Ok(cfg)
    }

    pub fn tdim(&self) -> usize {
        4 * self.nf
    }

    fn emb_in(&self) -> usize {
        match self.embedding {
            TimeEmbedding::Fourier => 2 * self.nf,
            TimeEmbedding::Sinusoidal => self.nf,
        }
    }
}

struct Level {
    blocks: Vec<(ResBlock, Option<AttnBlock>)>,
    down: Option<Downsample>,
    up: Option<Upsample>,
    /// Channels of the skip tensor each up-block concatenates (up levels only).
    skip_channels: Vec<usize>,
}

/// The network: its layout (parameter ids) and config; parameter values live
/// in a [`ParamStore`] so one layout serves several backends.
pub struct UNet {
    pub config: UNetConfig,
    pub spec: ParamSpec,
    fourier_w: Option<super::ParamId>,
    temb0: Linear,
    temb1: Linear,
    conv_in: Conv,
    down: Vec<Level>,
    mid: (ResBlock, Option<AttnBlock>, ResBlock),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv,
    /// Samples passed through `forward` so far — how the detector's cost
    /// (T·(r+2) network evaluations per image) is checked.
    evaluated: AtomicU64,
}

/// One level's tape: its blocks, then its resampling (if any).
type LevelTape<T> = (Vec<BlockTape<T>>, Option<ResampleSaved<T>>);

struct BlockTape<T> {
    res: ResSaved<T>,
    attn: Option<AttnSaved<T>>,
}

/// What a forward pass recorded for its backward.
pub struct Tape<T> {
    temb_in: T,
    t0: T,
    t1_in: T,
    t1: T,
    temb_act: T,
    x: T,
    down: Vec<LevelTape<T>>,
    mid: (ResSaved<T>, Option<AttnSaved<T>>, ResSaved<T>),
    up: Vec<LevelTape<T>>,
    norm_out: NormSaved<T>,
    hn_out: T,
    a_out: T,
}

/// A forward pass's results: the raw network output (≈ −z, see [`UNet::score`]),
/// the requested taps, and the tape when recording.
pub struct Forward<T> {
    pub out: T,
    pub taps: BTreeMap<String, T>,
    pub tape: Option<Tape<T>>,
}

/// Options of one forward pass.
#[derive(Default)]
pub struct ForwardOpts<'a> {
    /// Names of feature maps to return (see [`UNet::tap_names`]).
    pub taps: &'a [String],
    /// Record a tape for [`UNet::backward`].
    pub record: bool,
    /// Dropout stream; dropout is active only when this is set (training).
    pub dropout: Option<RngStream>,
}

impl UNet {
    pub fn new(config: UNetConfig) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let mut ps = ParamSpec::default();
        let (nf, tdim) = (c.nf, c.tdim());
        let fourier_w = (c.embedding == TimeEmbedding::Fourier).then(|| {
            // Fixed, not trained: N(0, scale²) frequencies drawn in `init_values`.
            ps.add("temb.fourier.W".into(), vec![nf], Init::Fixed)
        });
        let temb0 = Linear::new(&mut ps, "temb.0", c.emb_in(), tdim);
        let temb1 = Linear::new(&mut ps, "temb.1", tdim, tdim);
        let conv_in = Conv::new(&mut ps, "conv_in", c.channels, nf, 3, 1, 1.0);
        let mut skip = vec![nf];
        let (mut ch, mut res) = (nf, c.image_size);
        let mut down = Vec::new();
        for (i, &m) in c.ch_mult.iter().enumerate() {
            let mut blocks = Vec::new();
            for j in 0..c.num_res_blocks {
                let name = format!("down.{i}.block.{j}");
                let rb = ResBlock::new(&mut ps, &name, ch, nf * m, tdim);
                ch = nf * m;
                let at = c
                    .attn_resolutions
                    .contains(&res)
                    .then(|| AttnBlock::new(&mut ps, &format!("down.{i}.attn.{j}"), ch));
                blocks.push((rb, at));
                skip.push(ch);
            }
            let ds = (i + 1 < c.ch_mult.len())
                .then(|| Downsample::new(&mut ps, &format!("down.{i}.downsample"), ch, c.resample));
            if ds.is_some() {
                skip.push(ch);
                res /= 2;
            }
            down.push(Level {
                blocks,
                down: ds,
                up: None,
                skip_channels: vec![],
            });
        }
        let mid_attn = !c.attn_resolutions.is_empty();
        let mid = (
            ResBlock::new(&mut ps, "mid.block.0", ch, ch, tdim),
            mid_attn.then(|| AttnBlock::new(&mut ps, "mid.attn", ch)),
            ResBlock::new(&mut ps, "mid.block.1", ch, ch, tdim),
        );
        let mut up = Vec::new();
        for (i, &m) in c.ch_mult.iter().enumerate().rev() {
            let mut blocks = Vec::new();
            let mut skip_channels = Vec::new();
            for j in 0..=c.num_res_blocks {
                let s = skip
                    .pop()
                    .ok_or_else(|| Error::Invalid("internal: skip stack underflow".into()))?;
                let rb = ResBlock::new(&mut ps, &format!("up.{i}.block.{j}"), ch + s, nf * m, tdim);
                ch = nf * m;
                let at = c
                    .attn_resolutions
                    .contains(&res)
                    .then(|| AttnBlock::new(&mut ps, &format!("up.{i}.attn.{j}"), ch));
                blocks.push((rb, at));
                skip_channels.push(s);
            }
            let us = (i != 0)
                .then(|| Upsample::new(&mut ps, &format!("up.{i}.upsample"), ch, c.resample));
            if us.is_some() {
                res *= 2;
            }
            up.push(Level {
                blocks,
                down: None,
                up: us,
                skip_channels,
            });
        }
        let norm_out = GroupNorm::new(&mut ps, "norm_out", ch);
        let conv_out = Conv::new(&mut ps, "conv_out", ch, c.channels, 3, 1, 0.0);
        // Only shapes so far: refuse a network too big to ever allocate.
        let params = ps.shapes.iter().fold(0u64, |n, s| {
            n.saturating_add(s.iter().fold(1u64, |p, &d| p.saturating_mul(d as u64)))
        });
        if params > MAX_PARAMS {
            return Err(Error::Invalid(format!(
                "model config: {params} parameters, more than the limit of {MAX_PARAMS}"
            )));
        }
        Ok(UNet {
            config,
            spec: ps,
            fourier_w,
            temb0,
            temb1,
            conv_in,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            evaluated: AtomicU64::new(0),
        })
    }

    /// Samples evaluated by [`UNet::forward`] since the network was built
    /// (a batch of B counts B).
    pub fn samples_evaluated(&self) -> u64 {
        self.evaluated.load(Ordering::Relaxed)
    }

    /// Initial parameter values from `seed` (the Fourier frequencies included).
    pub fn init_values(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut v = self.spec.init_values(seed);
        if let Some(id) = self.fourier_w {
            let mut w = vec![0.0f32; self.config.nf];
            RngStream::new(seed, 0xF0F0).fill_normal(0, &mut w);
            w.iter_mut().for_each(|x| *x *= self.config.fourier_scale);
            v[id.0] = w;
        }
        v
    }

    /// Trainable parameters (the Fourier frequencies are fixed).
    pub fn is_trainable(&self, i: usize) -> bool {
        self.spec.inits.get(i) != Some(&Init::Fixed)
    }

    /// Every feature map a forward pass can return: `down.{i}.block.{j}`,
    /// `mid`, `up.{i}.block.{j}` (block outputs, after attention if any) and
    /// `up.{i}` (a decoder level's output before upsampling, at image_size/2^i).
    pub fn tap_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (i, l) in self.down.iter().enumerate() {
            for j in 0..l.blocks.len() {
                v.push(format!("down.{i}.block.{j}"));
            }
        }
        v.push("mid".into());
        for (k, l) in self.up.iter().enumerate() {
            let i = self.up.len() - 1 - k;
            for j in 0..l.blocks.len() {
                v.push(format!("up.{i}.block.{j}"));
            }
            v.push(format!("up.{i}"));
        }
        v
    }

    /// Score-DD's default taps: the decoder level outputs at S/2 and S/4 (32
    /// and 16 px for a 64 px model, as the PyTorch reference), or at S and S/2
    /// for a two-level net like `tiny`.
    pub fn default_taps(&self) -> Vec<String> {
        let top = if self.up.len() >= 3 { 1 } else { 0 };
        (top..(top + 2).min(self.up.len()))
            .map(|i| format!("up.{i}"))
            .collect()
    }

    /// The time-embedding input for each sample, computed on the host (it is a
    /// few numbers per sample) so both backends see identical values.
    pub fn embed_times(&self, sde: &dyn Sde, t: &[f64], fourier_w: &[f32]) -> Vec<f32> {
        let nf = self.config.nf;
        let mut out = Vec::with_capacity(t.len() * self.config.emb_in());
        for &ti in t {
            match self.config.embedding {
                TimeEmbedding::Fourier => {
                    let x = sde.std(ti).ln();
                    let p: Vec<f64> = fourier_w
                        .iter()
                        .map(|&w| 2.0 * std::f64::consts::PI * x * w as f64)
                        .collect();
                    out.extend(p.iter().map(|a| a.sin() as f32));
                    out.extend(p.iter().map(|a| a.cos() as f32));
                }
                TimeEmbedding::Sinusoidal => {
                    let half = nf / 2;
                    let freqs = (0..half)
                        .map(|i| (-(10000f64.ln()) * i as f64 / (half.max(2) - 1) as f64).exp());
                    let a: Vec<f64> = freqs.map(|f| 999.0 * ti * f).collect();
                    out.extend(a.iter().map(|a| a.sin() as f32));
                    out.extend(a.iter().map(|a| a.cos() as f32));
                }
            }
        }
        out
    }

    /// The raw network output for `x: [B, C, H, W]` with one time per sample.
    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        sde: &dyn Sde,
        x: &B::Tensor,
        t: &[f64],
        opts: &ForwardOpts,
    ) -> Result<Forward<B::Tensor>> {
        let c = &self.config;
        let shape = be.shape(x).to_vec();
        if shape.len() != 4 || shape[1] != c.channels {
            return Err(Error::shape(
                "unet",
                format!(
                    "input {shape:?}, but the model takes [B, {}, H, W]",
                    c.channels
                ),
            ));
        }
        c.check_input_size(shape[2], shape[3])?;
        if t.len() != shape[0] {
            return Err(Error::shape(
                "unet",
                format!("{} times for a batch of {}", t.len(), shape[0]),
            ));
        }
        let known = self.tap_names();
        if let Some(bad) = opts.taps.iter().find(|n| !known.contains(n)) {
            return Err(Error::Invalid(format!(
                "unknown feature map {bad:?}; the model has {}",
                known.join(", ")
            )));
        }
        self.evaluated.fetch_add(shape[0] as u64, Ordering::Relaxed);
        // The fixed frequencies come from the store's host copy: no readback.
        let fw = match self.fourier_w {
            Some(id) => match p.fixed_host.get(id.0).and_then(|h| h.as_ref()) {
                Some(h) => h.clone(),
                None => be.read(p.get(id))?,
            },
            None => vec![],
        };
        let temb_in = be.upload(&self.embed_times(sde, t, &fw), &[t.len(), c.emb_in()])?;
        let t0 = self.temb0.forward(be, p, &temb_in)?;
        let t1_in = be.silu(&t0)?;
        let t1 = self.temb1.forward(be, p, &t1_in)?;
        let temb_act = be.silu(&t1)?;
        let ctx = BlockCtx {
            temb_act: &temb_act,
            dropout: opts.dropout.map(|r| (c.dropout, r)),
        };

        let mut taps = BTreeMap::new();
        let mut tap = |name: String, v: &B::Tensor| {
            if opts.taps.contains(&name) {
                taps.insert(name, v.clone());
            }
        };
        let mut h = self.conv_in.forward(be, p, x)?;
        let mut hs = vec![h.clone()];
        let mut down_tape = Vec::new();
        for (i, level) in self.down.iter().enumerate() {
            let mut bt = Vec::new();
            for (j, (rb, at)) in level.blocks.iter().enumerate() {
                let (y, rs) = rb.forward(be, p, &h, &ctx)?;
                h = y;
                let attn = match at {
                    Some(a) => {
                        let (y, s) = a.forward(be, p, &h)?;
                        h = y;
                        Some(s)
                    }
                    None => None,
                };
                tap(format!("down.{i}.block.{j}"), &h);
                hs.push(h.clone());
                if opts.record {
                    bt.push(BlockTape { res: rs, attn });
                }
            }
            let ds = match &level.down {
                Some(d) => {
                    let (y, s) = d.forward(be, p, &h)?;
                    h = y;
                    hs.push(h.clone());
                    Some(s)
                }
                None => None,
            };
            if opts.record {
                down_tape.push((bt, ds));
            }
        }
        let (y, m0) = self.mid.0.forward(be, p, &h, &ctx)?;
        h = y;
        let mattn = match &self.mid.1 {
            Some(a) => {
                let (y, s) = a.forward(be, p, &h)?;
                h = y;
                Some(s)
            }
            None => None,
        };
        let (y, m1) = self.mid.2.forward(be, p, &h, &ctx)?;
        h = y;
        tap("mid".into(), &h);
        let mut up_tape = Vec::new();
        for (k, level) in self.up.iter().enumerate() {
            let i = self.up.len() - 1 - k;
            let mut bt = Vec::new();
            for (j, (rb, at)) in level.blocks.iter().enumerate() {
                let s = hs
                    .pop()
                    .ok_or_else(|| Error::Invalid("internal: skip stack underflow".into()))?;
                let cat = be.concat_channels(&h, &s)?;
                let (y, rs) = rb.forward(be, p, &cat, &ctx)?;
                h = y;
                let attn = match at {
                    Some(a) => {
                        let (y, s) = a.forward(be, p, &h)?;
                        h = y;
                        Some(s)
                    }
                    None => None,
                };
                tap(format!("up.{i}.block.{j}"), &h);
                if opts.record {
                    bt.push(BlockTape { res: rs, attn });
                }
            }
            tap(format!("up.{i}"), &h);
            let us = match &level.up {
                Some(u) => {
                    let (y, s) = u.forward(be, p, &h)?;
                    h = y;
                    Some(s)
                }
                None => None,
            };
            if opts.record {
                up_tape.push((bt, us));
            }
        }
        let (hn_out, norm_out) = self.norm_out.forward(be, p, &h)?;
        let a_out = be.silu(&hn_out)?;
        let out = self.conv_out.forward(be, p, &a_out)?;
        let tape = opts.record.then(|| Tape {
            temb_in,
            t0,
            t1_in,
            t1,
            temb_act: temb_act.clone(),
            x: x.clone(),
            down: down_tape,
            mid: (m0, mattn, m1),
            up: up_tape,
            norm_out,
            hn_out,
            a_out,
        });
        Ok(Forward { out, taps, tape })
    }

    /// Gradients of every trainable parameter given d(loss)/d(out).
    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        tape: &Tape<B::Tensor>,
        dout: &B::Tensor,
    ) -> Result<Grads<B::Tensor>> {
        let mut g = Grads::new(p.len());
        let d = self.conv_out.backward(be, p, &tape.a_out, dout, &mut g)?;
        let d = be.silu_backward(&tape.hn_out, &d)?;
        let mut dh = self.norm_out.backward(be, p, &tape.norm_out, &d, &mut g)?;
        let mut dtemb: Option<B::Tensor> = None;
        let mut add_temb = |be: &B, d: B::Tensor| -> Result<()> {
            dtemb = Some(match dtemb.take() {
                None => d,
                Some(prev) => be.axpby(1.0, &prev, 1.0, &d)?,
            });
            Ok(())
        };
        // Gradients flowing into the skip stack, pushed in decoder order (last skip first).
        let mut dskips: Vec<B::Tensor> = Vec::new();
        for (level, (bt, us)) in self.up.iter().zip(&tape.up).rev() {
            if let (Some(u), Some(s)) = (&level.up, us) {
                dh = u.backward(be, p, s, &dh, &mut g)?;
            }
            for (((rb, at), b), &sc) in level.blocks.iter().zip(bt).zip(&level.skip_channels).rev()
            {
                if let (Some(a), Some(s)) = (at, &b.attn) {
                    dh = a.backward(be, p, s, &dh, &mut g)?;
                }
                let (dcat, dt) = rb.backward(be, p, &b.res, &tape.temb_act, &dh, &mut g)?;
                add_temb(be, dt)?;
                let ch = be.shape(&dcat)[1] - sc;
                let (dprev, dskip) = be.split_channels(&dcat, ch)?;
                dh = dprev;
                dskips.push(dskip);
            }
        }
        let (m0, mattn, m1) = &tape.mid;
        let (d1, dt) = self
            .mid
            .2
            .backward(be, p, m1, &tape.temb_act, &dh, &mut g)?;
        add_temb(be, dt)?;
        dh = d1;
        if let (Some(a), Some(s)) = (&self.mid.1, mattn) {
            dh = a.backward(be, p, s, &dh, &mut g)?;
        }
        let (d0, dt) = self
            .mid
            .0
            .backward(be, p, m0, &tape.temb_act, &dh, &mut g)?;
        add_temb(be, dt)?;
        dh = d0;
        // The decoder popped the skip stack from its top, and we walked the decoder
        // backwards, so dskips[k] is the gradient of the k-th pushed skip. The
        // encoder is walked backwards too: take them from the top again.
        let mut next_skip = dskips.len();
        let mut take_skip = |be: &B, dh: B::Tensor| -> Result<B::Tensor> {
            next_skip -= 1;
            be.axpby(1.0, &dh, 1.0, &dskips[next_skip])
        };
        for (level, (bt, ds)) in self.down.iter().zip(&tape.down).rev() {
            if let (Some(d), Some(s)) = (&level.down, ds) {
                dh = take_skip(be, dh)?;
                dh = d.backward(be, p, s, &dh, &mut g)?;
            }
            for ((rb, at), b) in level.blocks.iter().zip(bt).rev() {
                dh = take_skip(be, dh)?;
                if let (Some(a), Some(s)) = (at, &b.attn) {
                    dh = a.backward(be, p, s, &dh, &mut g)?;
                }
                let (dx, dt) = rb.backward(be, p, &b.res, &tape.temb_act, &dh, &mut g)?;
                add_temb(be, dt)?;
                dh = dx;
            }
        }
        dh = take_skip(be, dh)?;
        self.conv_in.backward(be, p, &tape.x, &dh, &mut g)?;
        if let Some(dt) = dtemb {
            let d = be.silu_backward(&tape.t1, &dt)?;
            let d = self.temb1.backward(be, p, &tape.t1_in, &d, &mut g)?;
            let d = be.silu_backward(&tape.t0, &d)?;
            self.temb0.backward(be, p, &tape.temb_in, &d, &mut g)?;
        }
        Ok(g)
    }

    /// Forward FLOPs per image (2·MAC of convs, linears and attention matmuls).
    pub fn flops_per_image(&self) -> f64 {
        let c = &self.config;
        let sh = &self.spec.shapes;
        let conv = |cv: &Conv, res: usize| cv.flops(sh, 1, res, res);
        let lin = |l: &Linear| 2.0 * sh[l.weight.0].iter().product::<usize>() as f64;
        let res_block = |rb: &ResBlock, res: usize| -> f64 { rb.flops(sh, res) };
        let attn = |ab: &AttnBlock, res: usize| -> f64 { ab.flops(sh, res) };
        let mut total = lin(&self.temb0) + lin(&self.temb1) + conv(&self.conv_in, c.image_size);
        let mut res = c.image_size;
        for l in &self.down {
            for (rb, at) in &l.blocks {
                total += res_block(rb, res) + at.as_ref().map_or(0.0, |a| attn(a, res));
            }
            if let Some(d) = &l.down {
                res /= 2;
                total += d.flops(sh, res);
            }
        }
        total += res_block(&self.mid.0, res)
            + res_block(&self.mid.2, res)
            + self.mid.1.as_ref().map_or(0.0, |a| attn(a, res));
        for l in &self.up {
            for (rb, at) in &l.blocks {
                total += res_block(rb, res) + at.as_ref().map_or(0.0, |a| attn(a, res));
            }
            if let Some(u) = &l.up {
                res *= 2;
                total += u.flops(sh, res);
            }
        }
        total + conv(&self.conv_out, c.image_size)
    }
}

impl<T> Tape<T> {
    /// Every tensor the tape holds (the same buffer may appear more than once).
    pub fn tensors(&self) -> Vec<&T> {
        let mut v = vec![
            &self.temb_in,
            &self.t0,
            &self.t1_in,
            &self.t1,
            &self.temb_act,
            &self.x,
            &self.hn_out,
            &self.a_out,
        ];
        v.extend(self.norm_out.tensors());
        fn block<'a, T>(v: &mut Vec<&'a T>, r: &'a ResSaved<T>, a: &'a Option<AttnSaved<T>>) {
            v.extend(r.tensors());
            if let Some(a) = a {
                v.extend(a.tensors());
            }
        }
        for (bt, _) in self.down.iter().chain(&self.up) {
            for b in bt {
                block(&mut v, &b.res, &b.attn);
            }
        }
        block(&mut v, &self.mid.0, &self.mid.1);
        v.extend(self.mid.2.tensors());
        for (_, rs) in self.down.iter().chain(&self.up) {
            if let Some(r) = rs {
                v.extend(r.tensors());
            }
        }
        v
    }
}
