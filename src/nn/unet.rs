//! The score U-net (NCSN++/DDPM++ family): time embedding, encoder of residual
//! (+ attention) blocks, middle, decoder with skip connections, output conv.
//! Built from a [`UNetConfig`]; forward accepts a different t per sample and can
//! return named feature maps ("taps"); backward returns every parameter's gradient.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::blocks::{
    AttnBlock, AttnSaved, BlockCtx, Downsample, ResBlock, ResSaved, ResampleSaved, Upsample,
};
use super::layers::{Conv, GroupNorm, Linear, NormSaved};
use super::{Grads, Init, ParamSpec, ParamStore};
use crate::backend::{NnBackend, NormAct};
use crate::error::{Error, Result};
use crate::rng::RngStream;
use crate::sde::Sde;

pub use crate::config::{
    TimeEmbedding, UNetConfig, MAX_CHANNELS, MAX_IMAGE_SIZE, MAX_LEVELS, MAX_RES_BLOCKS,
};

/// Most parameters in a network (4 GiB of f32, far above the paper's 256 px model).
pub const MAX_PARAMS: u64 = 1 << 30;

// The config's parts that need the network itself (the config type is in
// `crate::config`, which depends on nothing here).
impl UNetConfig {
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

/// One recorded step of a forward pass, with what its backward needs. The
/// forward appends steps in execution order and [`UNet::backward`] replays
/// them in reverse, each by its own layer's or block's `backward`: the
/// network's wiring is written once, in the forward.
enum Step<'m, T> {
    Conv(&'m Conv, T),
    /// A GroupNorm, its SiLU fused or not (the saved state says which).
    Norm(&'m GroupNorm, NormSaved<T>),
    /// A residual block: its input gradient, plus its share of the time
    /// embedding's gradient.
    Res(&'m ResBlock, ResSaved<T>),
    Attn(&'m AttnBlock, AttnSaved<T>),
    Down(&'m Downsample, ResampleSaved<T>),
    Up(&'m Upsample, ResampleSaved<T>),
    /// The current activation was pushed onto the skip stack and goes on:
    /// its gradient is the path's plus the skip's.
    PushSkip,
    /// The top skip (this many channels) was concatenated after the current
    /// activation's channels: its gradient is split off and kept for the push.
    ConcatSkip(usize),
}

/// What a forward pass recorded for its backward: the time embedding's
/// intermediates and the network's steps in execution order.
pub struct Tape<'m, T> {
    temb: TimeEmbeddingPass<T>,
    steps: Vec<Step<'m, T>>,
}

/// The time embedding's intermediate tensors in one forward pass.
struct TimeEmbeddingPass<T> {
    input: T,
    t0: T,
    t1_in: T,
    t1: T,
    /// SiLU of the embedding: what every residual block adds.
    act: T,
}

/// What the stages of one forward pass share: the backend and parameters,
/// the blocks' context, the steps recorded (when recording) and the taps.
struct Pass<'a, 'm, B: NnBackend> {
    be: &'a B,
    p: &'a ParamStore<B::Tensor>,
    ctx: BlockCtx<'a, B::Tensor>,
    record: bool,
    steps: Vec<Step<'m, B::Tensor>>,
    /// Names of the feature maps asked for.
    wanted: &'a [String],
    taps: BTreeMap<String, B::Tensor>,
    /// Stop once every wanted tap is in hand (no output needed).
    stop_at_taps: bool,
}

impl<'m, B: NnBackend> Pass<'_, 'm, B> {
    /// Keeps feature map `name` if it was asked for.
    fn tap(&mut self, name: String, v: &B::Tensor) {
        if self.wanted.contains(&name) {
            self.taps.insert(name, v.clone());
        }
    }

    /// Whether the pass may stop here: it only wants taps, and has them all.
    fn has_every_tap(&self) -> bool {
        self.stop_at_taps && self.wanted.iter().all(|n| self.taps.contains_key(n))
    }

    /// Records `step` when recording; otherwise its saved state is dropped
    /// here, so an inference pass frees each activation once it is consumed.
    fn record(&mut self, step: Step<'m, B::Tensor>) {
        if self.record {
            self.steps.push(step);
        }
    }

    fn conv(&mut self, c: &'m Conv, x: &B::Tensor) -> Result<B::Tensor> {
        let y = c.forward(self.be, self.p, x)?;
        self.record(Step::Conv(c, x.clone()));
        Ok(y)
    }

    fn norm(&mut self, n: &'m GroupNorm, x: &B::Tensor, act: NormAct) -> Result<B::Tensor> {
        let (y, saved) = n.forward_act(self.be, self.p, x, act)?;
        self.record(Step::Norm(n, saved));
        Ok(y)
    }

    fn res(&mut self, rb: &'m ResBlock, x: &B::Tensor) -> Result<B::Tensor> {
        let (y, saved) = rb.forward(self.be, self.p, x, &self.ctx)?;
        self.record(Step::Res(rb, saved));
        Ok(y)
    }

    /// A residual block, then its attention block if it has one.
    fn block(
        &mut self,
        rb: &'m ResBlock,
        at: Option<&'m AttnBlock>,
        x: &B::Tensor,
    ) -> Result<B::Tensor> {
        let h = self.res(rb, x)?;
        let Some(a) = at else { return Ok(h) };
        let (y, saved) = a.forward(self.be, self.p, &h)?;
        self.record(Step::Attn(a, saved));
        Ok(y)
    }

    fn push_skip(&mut self, hs: &mut Vec<B::Tensor>, h: &B::Tensor) {
        hs.push(h.clone());
        self.record(Step::PushSkip);
    }

    /// `h` with the top skip's channels appended.
    fn concat_skip(&mut self, hs: &mut Vec<B::Tensor>, h: &B::Tensor) -> Result<B::Tensor> {
        let s = hs
            .pop()
            .ok_or_else(|| Error::Invalid("internal: skip stack underflow".into()))?;
        let cat = self.be.concat_channels(h, &s)?;
        self.record(Step::ConcatSkip(self.be.shape(&s)[1]));
        Ok(cat)
    }
}

/// A forward pass's results: the raw network output (≈ −z, see [`UNet::score`]),
/// the requested taps, and the tape when recording.
pub struct Forward<'m, T> {
    pub out: T,
    pub taps: BTreeMap<String, T>,
    pub tape: Option<Tape<'m, T>>,
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
    /// Most samples evaluated at once when not recording (the batch runs in
    /// chunks, outputs and taps concatenated back); None: as many as
    /// [`UNet::inference_batch_limit`]'s memory budget allows.
    pub max_batch: Option<usize>,
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

    /// Most samples an inference forward of `h × w` inputs takes at once: a
    /// budget for the live activations, estimated as 32 maps of the first
    /// level's size per sample (skip stack plus a block's temporaries).
    /// `small` at 64 px takes 16 at once; `ncsnpp256` at 256 px, one.
    pub fn inference_batch_limit(&self, h: usize, w: usize) -> usize {
        // 256 MiB of activations: chunks whose elementwise passes stay near
        // the cache measured ~3 % faster on the CPU than 1 GiB ones, and
        // detection's peak memory drops with them.
        const BUDGET_BYTES: usize = 1 << 28;
        let per_sample = 32 * self.config.nf * h * w * std::mem::size_of::<f32>();
        (BUDGET_BYTES / per_sample.max(1)).max(1)
    }

    /// An inference batch larger than `limit` in chunks of at most `limit`
    /// samples, outputs and taps concatenated back: the same values (up to
    /// summation order), with activation memory bounded whatever the batch.
    #[allow(clippy::too_many_arguments)]
    fn forward_in_chunks<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        sde: &dyn Sde,
        x: &B::Tensor,
        t: &[f64],
        opts: &ForwardOpts,
        limit: usize,
    ) -> Result<Forward<'_, B::Tensor>> {
        let parts = over_chunks(be, x, t, limit, |chunk, tc| {
            self.forward_whole(be, p, sde, chunk, tc, opts)
        })?;
        let out = concat_batch(be, parts.iter().map(|f| &f.out))?;
        let taps = concat_taps(be, opts.taps, parts.iter().map(|f| &f.taps))?;
        Ok(Forward {
            out,
            taps,
            tape: None,
        })
    }

    /// The raw network output for `x: [B, C, H, W]` with one time per sample.
    /// Without `record`, a batch larger than `opts.max_batch` (by default the
    /// memory budget of [`UNet::inference_batch_limit`]) runs in chunks.
    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        sde: &dyn Sde,
        x: &B::Tensor,
        t: &[f64],
        opts: &ForwardOpts,
    ) -> Result<Forward<'_, B::Tensor>> {
        let limit = self.chunk_limit(be.shape(x), opts);
        let n = be.shape(x).first().copied().unwrap_or(0);
        if opts.record || n <= limit || t.len() != n {
            return self.forward_whole(be, p, sde, x, t, opts);
        }
        self.forward_in_chunks(be, p, sde, x, t, opts, limit)
    }

    /// [`UNet::forward`] over the whole batch at once.
    fn forward_whole<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        sde: &dyn Sde,
        x: &B::Tensor,
        t: &[f64],
        opts: &ForwardOpts,
    ) -> Result<Forward<'_, B::Tensor>> {
        self.check_forward_input(be.shape(x), t, opts)?;
        self.evaluated.fetch_add(t.len() as u64, Ordering::Relaxed);
        let temb = self.time_embedding(be, p, sde, t)?;
        let mut pass = self.pass(be, p, &temb.act, opts, false);
        let out = self
            .layers(&mut pass, x)?
            .ok_or_else(|| Error::Invalid("internal: a whole forward pass stopped early".into()))?;
        let (taps, steps) = (pass.taps, pass.steps);
        let tape = opts.record.then_some(Tape { temb, steps });
        Ok(Forward { out, taps, tape })
    }

    /// The layers over `x`: the network's output, or None when the pass
    /// stopped at its last wanted tap (`stop_at_taps`).
    fn layers<'m, B: NnBackend>(
        &'m self,
        pass: &mut Pass<'_, 'm, B>,
        x: &B::Tensor,
    ) -> Result<Option<B::Tensor>> {
        let h = pass.conv(&self.conv_in, x)?;
        let mut hs = Vec::new();
        pass.push_skip(&mut hs, &h);
        let h = self.encode(pass, h, &mut hs)?;
        if pass.has_every_tap() {
            return Ok(None);
        }
        let h = self.middle(pass, h)?;
        if pass.has_every_tap() {
            return Ok(None);
        }
        let h = self.decode(pass, h, &mut hs)?;
        if pass.has_every_tap() {
            return Ok(None);
        }
        let h = pass.norm(&self.norm_out, &h, NormAct::Silu)?;
        Ok(Some(pass.conv(&self.conv_out, &h)?))
    }

    /// Only the feature maps `opts.taps` of `x` (no output, no tape): the
    /// pass stops at the last of them, so layers after it never run —
    /// Score-DD's feature pass with encoder taps skips the whole decoder.
    /// Runs in chunks of `opts.max_batch` (by default memory-sized) samples
    /// as an inference [`UNet::forward`] does.
    pub fn features<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        sde: &dyn Sde,
        x: &B::Tensor,
        t: &[f64],
        opts: &ForwardOpts,
    ) -> Result<BTreeMap<String, B::Tensor>> {
        if opts.record {
            return Err(Error::Invalid(
                "a features-only pass keeps no tape: use forward to record".into(),
            ));
        }
        self.check_forward_input(be.shape(x), t, opts)?;
        let limit = self.chunk_limit(be.shape(x), opts);
        if t.len() <= limit {
            return self.features_whole(be, p, sde, x, t, opts);
        }
        let parts = over_chunks(be, x, t, limit, |chunk, tc| {
            self.features_whole(be, p, sde, chunk, tc, opts)
        })?;
        concat_taps(be, opts.taps, parts.iter())
    }

    /// Most samples one inference pass takes: `opts.max_batch`, else the
    /// memory budget of [`UNet::inference_batch_limit`].
    fn chunk_limit(&self, shape: &[usize], opts: &ForwardOpts) -> usize {
        match (opts.max_batch, shape) {
            (Some(m), _) => m.max(1),
            (None, [_, _, h, w]) => self.inference_batch_limit(*h, *w),
            _ => usize::MAX, // the pass reports the bad shape
        }
    }

    /// [`UNet::features`] over the whole batch at once.
    fn features_whole<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        sde: &dyn Sde,
        x: &B::Tensor,
        t: &[f64],
        opts: &ForwardOpts,
    ) -> Result<BTreeMap<String, B::Tensor>> {
        self.evaluated.fetch_add(t.len() as u64, Ordering::Relaxed);
        let temb = self.time_embedding(be, p, sde, t)?;
        let mut pass = self.pass(be, p, &temb.act, opts, true);
        self.layers(&mut pass, x)?;
        Ok(pass.taps)
    }

    /// A pass's shared state; `stop_at_taps`: it only wants the taps.
    fn pass<'a, B: NnBackend>(
        &self,
        be: &'a B,
        p: &'a ParamStore<B::Tensor>,
        temb_act: &'a B::Tensor,
        opts: &'a ForwardOpts,
        stop_at_taps: bool,
    ) -> Pass<'a, '_, B> {
        Pass {
            be,
            p,
            ctx: BlockCtx {
                temb_act,
                dropout: opts.dropout.map(|r| (self.config.dropout, r)),
            },
            record: opts.record,
            steps: Vec::new(),
            wanted: opts.taps,
            taps: BTreeMap::new(),
            stop_at_taps,
        }
    }

    /// Checks a forward pass's input shape, times and requested taps.
    fn check_forward_input(&self, shape: &[usize], t: &[f64], opts: &ForwardOpts) -> Result<()> {
        let c = &self.config;
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
        Ok(())
    }

    /// The time embedding on the backend: input → dense → SiLU → dense → SiLU.
    fn time_embedding<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        sde: &dyn Sde,
        t: &[f64],
    ) -> Result<TimeEmbeddingPass<B::Tensor>> {
        // The fixed frequencies come from the store's host copy: no readback.
        let fw = match self.fourier_w {
            Some(id) => match p.fixed_host.get(id.0).and_then(|h| h.as_ref()) {
                Some(h) => h.clone(),
                None => be.read(p.get(id))?,
            },
            None => vec![],
        };
        let input = be.upload(
            &self.embed_times(sde, t, &fw),
            &[t.len(), self.config.emb_in()],
        )?;
        let t0 = self.temb0.forward(be, p, &input)?;
        let t1_in = be.silu(&t0)?;
        let t1 = self.temb1.forward(be, p, &t1_in)?;
        let act = be.silu(&t1)?;
        Ok(TimeEmbeddingPass {
            input,
            t0,
            t1_in,
            t1,
            act,
        })
    }

    /// The encoder from `conv_in`'s output `h`: its output; every block's
    /// and downsampler's output is pushed onto the skip stack `hs`.
    fn encode<'m, B: NnBackend>(
        &'m self,
        pass: &mut Pass<'_, 'm, B>,
        mut h: B::Tensor,
        hs: &mut Vec<B::Tensor>,
    ) -> Result<B::Tensor> {
        for (i, level) in self.down.iter().enumerate() {
            for (j, (rb, at)) in level.blocks.iter().enumerate() {
                h = pass.block(rb, at.as_ref(), &h)?;
                pass.tap(format!("down.{i}.block.{j}"), &h);
                if pass.has_every_tap() {
                    return Ok(h);
                }
                pass.push_skip(hs, &h);
            }
            if let Some(d) = &level.down {
                let (y, saved) = d.forward(pass.be, pass.p, &h)?;
                pass.record(Step::Down(d, saved));
                h = y;
                pass.push_skip(hs, &h);
            }
        }
        Ok(h)
    }

    /// The middle: residual block, attention (if any), residual block.
    fn middle<'m, B: NnBackend>(
        &'m self,
        pass: &mut Pass<'_, 'm, B>,
        h: B::Tensor,
    ) -> Result<B::Tensor> {
        let h = pass.block(&self.mid.0, self.mid.1.as_ref(), &h)?;
        let h = pass.res(&self.mid.2, &h)?;
        pass.tap("mid".into(), &h);
        Ok(h)
    }

    /// The decoder, each block taking the top skip tensor from `hs`.
    fn decode<'m, B: NnBackend>(
        &'m self,
        pass: &mut Pass<'_, 'm, B>,
        mut h: B::Tensor,
        hs: &mut Vec<B::Tensor>,
    ) -> Result<B::Tensor> {
        for (k, level) in self.up.iter().enumerate() {
            let i = self.up.len() - 1 - k;
            for (j, (rb, at)) in level.blocks.iter().enumerate() {
                let cat = pass.concat_skip(hs, &h)?;
                h = pass.block(rb, at.as_ref(), &cat)?;
                pass.tap(format!("up.{i}.block.{j}"), &h);
                if pass.has_every_tap() {
                    return Ok(h);
                }
            }
            pass.tap(format!("up.{i}"), &h);
            if pass.has_every_tap() {
                return Ok(h);
            }
            if let Some(u) = &level.up {
                let (y, saved) = u.forward(pass.be, pass.p, &h)?;
                pass.record(Step::Up(u, saved));
                h = y;
            }
        }
        Ok(h)
    }

    /// Gradients of every trainable parameter given d(loss)/d(out): the
    /// tape's steps replayed in reverse, then the time embedding, which
    /// collects every residual block's share.
    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        tape: &Tape<B::Tensor>,
        dout: &B::Tensor,
    ) -> Result<Grads<B::Tensor>> {
        let mut g = Grads::new(p.len());
        let mut grad = BackwardState {
            dh: dout.clone(),
            dtemb: None,
            dskips: Vec::new(),
        };
        for step in tape.steps.iter().rev() {
            grad.step(be, p, step, &tape.temb.act, &mut g)?;
        }
        if let Some(dt) = grad.dtemb {
            self.time_embedding_backward(be, p, &tape.temb, &dt, &mut g)?;
        }
        Ok(g)
    }

    /// The time embedding's backward from the gradient of its activated output.
    fn time_embedding_backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        temb: &TimeEmbeddingPass<B::Tensor>,
        dact: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<()> {
        let d = be.silu_backward(&temb.t1, dact)?;
        let d = self.temb1.backward(be, p, &temb.t1_in, &d, g)?;
        let d = be.silu_backward(&temb.t0, &d)?;
        self.temb0.backward(be, p, &temb.input, &d, g)?;
        Ok(())
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

/// The gradients a backward replay carries from step to step.
struct BackwardState<T> {
    /// Gradient of the current activation.
    dh: T,
    /// Σ of the residual blocks' time-embedding gradients so far.
    dtemb: Option<T>,
    /// Gradients of concatenated skips, waiting for their push.
    dskips: Vec<T>,
}

impl<T: Clone> BackwardState<T> {
    /// Takes `dh` back through one recorded step.
    fn step<B: NnBackend<Tensor = T>>(
        &mut self,
        be: &B,
        p: &ParamStore<T>,
        step: &Step<T>,
        temb_act: &T,
        g: &mut Grads<T>,
    ) -> Result<()> {
        let dh = &self.dh;
        self.dh = match step {
            Step::Conv(c, x) => c.backward(be, p, x, dh, g)?,
            Step::Norm(n, saved) => n.backward(be, p, saved, dh, g)?,
            Step::Res(rb, saved) => {
                let (dx, dt) = rb.backward(be, p, saved, temb_act, dh, g)?;
                self.dtemb = Some(match self.dtemb.take() {
                    None => dt,
                    Some(prev) => be.axpby(1.0, &prev, 1.0, &dt)?,
                });
                dx
            }
            Step::Attn(a, saved) => a.backward(be, p, saved, dh, g)?,
            Step::Down(d, saved) => d.backward(be, p, saved, dh, g)?,
            Step::Up(u, saved) => u.backward(be, p, saved, dh, g)?,
            Step::ConcatSkip(skip_channels) => {
                let ch = be.shape(dh)[1] - skip_channels;
                let (dprev, dskip) = be.split_channels(dh, ch)?;
                self.dskips.push(dskip);
                dprev
            }
            Step::PushSkip => {
                let dskip = self.dskips.pop().ok_or_else(|| {
                    Error::Invalid("internal: a skip's gradient is missing".into())
                })?;
                be.axpby(1.0, dh, 1.0, &dskip)?
            }
        };
        Ok(())
    }
}

impl<T> Tape<'_, T> {
    /// Every tensor the tape holds (the same buffer may appear more than once).
    pub fn tensors(&self) -> Vec<&T> {
        let e = &self.temb;
        let mut v = vec![&e.input, &e.t0, &e.t1_in, &e.t1, &e.act];
        for step in &self.steps {
            match step {
                Step::Conv(_, x) => v.push(x),
                Step::Norm(_, s) => v.extend(s.tensors()),
                Step::Res(_, s) => v.extend(s.tensors()),
                Step::Attn(_, s) => v.extend(s.tensors()),
                Step::Down(_, s) | Step::Up(_, s) => v.extend(s.tensors()),
                Step::PushSkip | Step::ConcatSkip(_) => {}
            }
        }
        v
    }
}

/// `[B, …]` → (`[k, …]`, `[B − k, …]`), through the channel split of a
/// `[1, B, rest]` view.
fn split_batch<B: NnBackend>(be: &B, x: &B::Tensor, k: usize) -> Result<(B::Tensor, B::Tensor)> {
    let shape = be.shape(x).to_vec();
    let rest: usize = shape[1..].iter().product();
    let (a, b) = be.split_channels(&be.reshape(x, &[1, shape[0], rest])?, k)?;
    let with_batch = |n: usize| {
        let mut s = shape.clone();
        s[0] = n;
        s
    };
    Ok((
        be.reshape(&a, &with_batch(k))?,
        be.reshape(&b, &with_batch(shape[0] - k))?,
    ))
}

/// The tensors `[b_i, …]` stacked along the batch: `[Σ b_i, …]`.
fn concat_batch<'a, B: NnBackend>(
    be: &B,
    parts: impl Iterator<Item = &'a B::Tensor>,
) -> Result<B::Tensor>
where
    B::Tensor: 'a,
{
    let mut acc: Option<(B::Tensor, Vec<usize>)> = None;
    for t in parts {
        let shape = be.shape(t).to_vec();
        let rest: usize = shape[1..].iter().product();
        let flat = be.reshape(t, &[1, shape[0], rest])?;
        acc = Some(match acc {
            None => (flat, shape),
            Some((a, mut s)) => {
                s[0] += shape[0];
                (be.concat_channels(&a, &flat)?, s)
            }
        });
    }
    let (flat, shape) =
        acc.ok_or_else(|| Error::Invalid("internal: no batch to concatenate".into()))?;
    be.reshape(&flat, &shape)
}

/// `f` over `x` in chunks of at most `limit` samples (with their times), in
/// order: the chunks' results.
fn over_chunks<B: NnBackend, R>(
    be: &B,
    x: &B::Tensor,
    t: &[f64],
    limit: usize,
    mut f: impl FnMut(&B::Tensor, &[f64]) -> Result<R>,
) -> Result<Vec<R>> {
    let mut parts = Vec::new();
    let mut rest = x.clone();
    for (k, tc) in t.chunks(limit.max(1)).enumerate() {
        let chunk = if (k + 1).saturating_mul(limit) >= t.len() {
            rest.clone()
        } else {
            let (a, b) = split_batch(be, &rest, tc.len())?;
            rest = b;
            a
        };
        parts.push(f(&chunk, tc)?);
    }
    Ok(parts)
}

/// Each tap in `names`, its chunks' tensors concatenated back into one batch.
fn concat_taps<'t, B: NnBackend>(
    be: &B,
    names: &[String],
    parts: impl Iterator<Item = &'t BTreeMap<String, B::Tensor>> + Clone,
) -> Result<BTreeMap<String, B::Tensor>>
where
    B::Tensor: 't,
{
    let mut tapped = BTreeMap::new();
    for name in names {
        let t = concat_batch(be, parts.clone().filter_map(|f| f.get(name)))?;
        tapped.insert(name.clone(), t);
    }
    Ok(tapped)
}
