//! Score-DD detection (paper Algorithms 1 and 2, DESIGN.md §1): noise each
//! image to every t in {t}, take r paired reverse steps (learned score and the
//! image's own score), feed both results to the U-net and compare its feature
//! maps. All T scales and both paths of all images of a call go through the
//! network as one batch with per-sample t, so an image costs T·(r+2) network
//! evaluations: T·r for the learned-score steps and 2T for the feature pass.
//! Settings may ask for several runs per image, whose maps are averaged:
//! `draws` independent noise draws, each also on the mirrored image with
//! `flip` (draws · (2 if flip) times the cost).
//!
//! The per-pixel distances are computed on the backend (`pair_distance`); the
//! aggregation (Σ over t, bilinear upsampling, product over taps, optional
//! blur) is B·H·W work on the host, where it is shared with the browser build.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::{NnBackend, Sampler};
use crate::config::{NormalProfile, ProfileMap, VerdictReading, MAX_DRAWS};
use crate::error::{Error, Result};
use crate::method::paired_reverse;
use crate::model_file::DetectionSettings;
use crate::nn::score_model::ScoreModel;
use crate::nn::unet::ForwardOpts;
use crate::rng::RngStream;

/// What is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Mode {
    /// The method: T scales, r steps, feature distances at t_r.
    #[default]
    ScoreDd,
    /// Ablation: one full reverse run from max{t} to ε on both paths, then the
    /// squared pixel difference ‖x'(0) − x''(0)‖² (summed over channels).
    Reconstruction,
    /// Ablation: one full reverse run from max{t} to ε, then feature distances at ε.
    NoScales,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::ScoreDd => "score-dd",
            Mode::Reconstruction => "reconstruction",
            Mode::NoScales => "no-scales",
        }
    }
}

/// Everything that decides a map, besides the model and the image.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectOptions {
    pub settings: DetectionSettings,
    pub mode: Mode,
    /// Seed of the noise; with the same seed an image always gets the same map,
    /// whatever batch it is in and on every backend.
    pub seed: u64,
    /// Side of the (square) images and maps, if not the model's `image_size`:
    /// the U-net is fully convolutional, so a model trained on 32 px images
    /// can map a 64 px image in one pass.
    pub size: Option<usize>,
}

impl DetectOptions {
    /// Score-DD with the given settings, seed 0.
    pub fn from_settings(settings: DetectionSettings) -> Self {
        DetectOptions {
            settings,
            mode: Mode::ScoreDd,
            seed: 0,
            size: None,
        }
    }

    /// Side of the images this detection takes and the maps it returns.
    pub fn size_for<B: NnBackend>(&self, model: &ScoreModel<B>) -> usize {
        self.size.unwrap_or(model.net.config.image_size)
    }
}

/// Per-pixel feature distances of one tap for a batch of images at several
/// start times: `data[(image·T + j)·h·w + p]` for t = ts[j].
#[derive(Clone, Debug, PartialEq)]
pub struct TapGrid {
    pub images: usize,
    pub times: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl TapGrid {
    /// Image i's distance map at time index j.
    pub fn at(&self, i: usize, j: usize) -> &[f32] {
        let hw = self.h * self.w;
        &self.data[(i * self.times + j) * hw..][..hw]
    }
}

/// Random stream of image `id` started at time `t`: noise depends only on
/// (seed, id, t) — never on batch position or on which other times run
/// alongside, so a search over many {t} sees exactly the noise that detection
/// with the chosen {t} will draw. Times closer than 1e-5 share a stream.
fn stream(id: u64, t: f64) -> u64 {
    (id << 20) | (t * 100_000.0).round() as u64
}

/// Number of reverse steps of Δt = 1/N from t down to ε.
pub fn steps_to_eps(sde: &dyn crate::sde::Sde, t: f64) -> usize {
    ((t - sde.eps()) / sde.dt()).ceil().max(1.0) as usize
}

/// Suffix of a tap compared by relative distance
/// ([`crate::backend::ScoreDdOps::pair_relative_distance`]): `mid~rel` is the
/// feature map `mid`, its distance divided by the features' norms.
pub const RELATIVE: &str = "~rel";

/// A tap as settings name it: the network's feature map, and whether its
/// distance is relative.
pub fn tap_parts(tap: &str) -> (&str, bool) {
    match tap.strip_suffix(RELATIVE) {
        Some(base) => (base, true),
        None => (tap, false),
    }
}

/// Every feature map of `names` with each distance: the plain ones, then
/// the relative ones.
pub fn tap_variants(names: &[String]) -> Vec<String> {
    let rel = names.iter().map(|n| format!("{n}{RELATIVE}"));
    names.iter().cloned().chain(rel).collect()
}

/// Checks settings against a model: times in (ε, 1], r ≥ 1, known non-empty taps.
pub fn validate<B: NnBackend>(model: &ScoreModel<B>, opts: &DetectOptions) -> Result<()> {
    let s = &opts.settings;
    let eps = model.sde.eps();
    if s.ts.is_empty() {
        return Err(Error::Invalid(
            "detection needs at least one start time t".into(),
        ));
    }
    if let Some(bad) = s.ts.iter().find(|t| !(**t > eps && **t <= 1.0)) {
        return Err(Error::Invalid(format!(
            "start time {bad} is outside ({eps}, 1]"
        )));
    }
    let size = opts.size_for(model);
    model.net.config.check_input_size(size, size)?;
    if s.r == 0 {
        return Err(Error::Invalid(
            "r (reverse steps) must be at least 1".into(),
        ));
    }
    check_reading(s.smooth, s.score_top)?;
    if let Some(v) = &s.verdict {
        check_reading(v.smooth, v.score_top)?;
    }
    if !(1..=MAX_DRAWS).contains(&s.draws) {
        return Err(Error::Invalid(format!(
            "noise draws must be between 1 and {MAX_DRAWS}, got {}",
            s.draws
        )));
    }
    if opts.mode != Mode::Reconstruction {
        check_taps(model, &s.taps)?;
        if let Some(v) = &s.verdict {
            check_taps(model, &v.taps)?;
        }
    }
    Ok(())
}

/// A reading's smoothing σ in [0, 64] px and top fraction in [0, 1].
fn check_reading(smooth: f32, score_top: f32) -> Result<()> {
    if !(smooth >= 0.0 && smooth.is_finite() && smooth <= 64.0) {
        return Err(Error::Invalid(format!(
            "smoothing σ must be in [0, 64] pixels, got {smooth}"
        )));
    }
    if !(0.0..=1.0).contains(&score_top) {
        return Err(Error::Invalid(format!(
            "the image score's top fraction must be in [0, 1], got {score_top}"
        )));
    }
    Ok(())
}

/// At least one tap, each a feature map of the model.
fn check_taps<B: NnBackend>(model: &ScoreModel<B>, taps: &[String]) -> Result<()> {
    if taps.is_empty() {
        return Err(Error::Invalid("detection needs at least one tap".into()));
    }
    let known = model.net.tap_names();
    if let Some(bad) = taps
        .iter()
        .find(|t| !known.iter().any(|k| k == tap_parts(t).0))
    {
        return Err(Error::Invalid(format!(
            "unknown feature map {bad:?}; this model has {}",
            known.join(", ")
        )));
    }
    Ok(())
}

/// Every tap detection with these settings computes: the map's, then the
/// verdict reading's that the map does not use.
pub fn taps_computed(s: &DetectionSettings) -> Vec<String> {
    let mut taps = s.taps.clone();
    for t in s.verdict.iter().flat_map(|v| &v.taps) {
        if !taps.contains(t) {
            taps.push(t.clone());
        }
    }
    taps
}

/// Uploads images `[n, C, S, S]` each repeated `times` times (image-major);
/// S is the side of the first image (the model's `image_size` or any side
/// the U-net takes), and every image must have it.
fn upload_repeated<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    images: &[&[f32]],
    times: usize,
) -> Result<B::Tensor> {
    let c = &model.net.config;
    let size = images.first().map_or(c.image_size, |img| {
        ((img.len() / c.channels) as f64).sqrt().round() as usize
    });
    let numel = c.channels * size * size;
    let mut host = Vec::with_capacity(images.len() * times * numel);
    for (i, img) in images.iter().enumerate() {
        if img.len() != numel {
            return Err(Error::Invalid(format!(
                "image {i} has {} values; detection at {size} px takes {}×{size}×{size} = {numel}",
                img.len(),
                c.channels,
            )));
        }
        for _ in 0..times {
            host.extend_from_slice(img);
        }
    }
    be.upload(&host, &[images.len() * times, c.channels, size, size])
}

/// Stacks two `[n, …]` tensors into `[2n, …]` (the batch [x'; x'']).
fn stack_pair<B: NnBackend>(be: &B, a: &B::Tensor, b: &B::Tensor) -> Result<B::Tensor> {
    let shape = be.shape(a).to_vec();
    let rest: usize = shape[1..].iter().product();
    let flat = [1, shape[0], rest];
    let both = be.concat_channels(&be.reshape(a, &flat)?, &be.reshape(b, &flat)?)?;
    let mut out = shape;
    out[0] *= 2;
    be.reshape(&both, &out)
}

/// Feature distances left on the backend by [`tap_distances_device`]: one
/// `[n·T, h, w]` tensor per tap, in `taps` order.
pub struct DeviceDistances<T> {
    pub taps: Vec<String>,
    pub tensors: Vec<T>,
    pub shapes: Vec<(usize, usize)>,
    pub images: usize,
    pub times: usize,
}

impl<T> DeviceDistances<T> {
    /// The grids, given each tensor's values read back.
    pub fn into_grids(self, host: Vec<Vec<f32>>) -> Result<BTreeMap<String, TapGrid>> {
        if host.len() != self.taps.len() {
            return Err(Error::Invalid(format!(
                "{} tensors read back for {} taps",
                host.len(),
                self.taps.len()
            )));
        }
        let mut out = BTreeMap::new();
        for ((name, (h, w)), data) in self.taps.into_iter().zip(self.shapes).zip(host) {
            if data.len() != self.images * self.times * h * w {
                return Err(Error::Invalid(format!(
                    "tap {name}: {} values read back, expected {}",
                    data.len(),
                    self.images * self.times * h * w
                )));
            }
            out.insert(
                name,
                TapGrid {
                    images: self.images,
                    times: self.times,
                    h,
                    w,
                    data,
                },
            );
        }
        Ok(out)
    }
}

/// What a paired run is asked: the images and the ids naming their noise,
/// the start times, the reverse steps and sampler, the seed and the noise
/// draw (0 is the one detection has always used; draw k > 0 takes other
/// streams of the same seed).
#[derive(Clone, Copy, Debug)]
pub struct PairedQuery<'a> {
    pub images: &'a [&'a [f32]],
    pub ids: &'a [u64],
    pub ts: &'a [f64],
    pub r: usize,
    pub sampler: Sampler,
    pub seed: u64,
    pub draw: u64,
}

/// Every image noised to every t in `q.ts` (image-major, noise from
/// [`stream`]) and walked back `q.r` paired steps: the run both Score-DD and
/// the reconstruction ablation start from.
fn paired_run<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    q: &PairedQuery,
) -> Result<crate::method::PairedRun<B::Tensor>> {
    let (images, ids, ts) = (q.images, q.ids, q.ts);
    if images.len() != ids.len() {
        return Err(Error::Invalid(format!(
            "{} images but {} ids",
            images.len(),
            ids.len()
        )));
    }
    let x0 = upload_repeated(be, model, images, ts.len())?;
    let t: Vec<f64> = (0..images.len()).flat_map(|_| ts.iter().copied()).collect();
    let streams: Vec<u64> = ids
        .iter()
        .flat_map(|&id| ts.iter().map(move |&t| stream(id, t)))
        .collect();
    paired_reverse(
        be,
        model.sde.as_ref(),
        model,
        &x0,
        &t,
        q.r,
        q.sampler,
        RngStream::new(q.seed, q.draw),
        &streams,
    )
}

/// For every image and every t, r paired steps and one feature pass over
/// [x'; x''] at t_r: each tap's features `[2·n·T, C, h, w]`, the
/// learned-score path first. One network batch of n·T samples per step and
/// one of 2·n·T for the features.
pub fn pair_features<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    q: &PairedQuery,
    taps: &[String],
) -> Result<BTreeMap<String, B::Tensor>> {
    let run = paired_run(be, model, q)?;
    let both = stack_pair(be, &run.state.whole, &run.state.own)?;
    let t2: Vec<f64> = run.t_end.iter().chain(&run.t_end).copied().collect();
    // Runs in memory-sized chunks (the paper's 256 px model takes one sample
    // at a time) and stops at the last tap: the layers after it never run.
    let opts = ForwardOpts {
        taps,
        ..Default::default()
    };
    let sde = model.sde.as_ref();
    model
        .net
        .features(be, &model.params, sde, &both, &t2, &opts)
}

/// The costly part of Score-DD, queued on the backend: [`pair_features`] and
/// the per-pixel distance of each tap in `taps`.
pub fn tap_distances_device<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    q: &PairedQuery,
    taps: &[String],
) -> Result<DeviceDistances<B::Tensor>> {
    let mut bases: Vec<String> = Vec::new();
    for t in taps {
        let b = tap_parts(t).0;
        if !bases.iter().any(|x| x == b) {
            bases.push(b.to_string());
        }
    }
    let f = pair_features(be, model, q, &bases)?;
    let mut out = DeviceDistances {
        taps: taps.to_vec(),
        tensors: Vec::new(),
        shapes: Vec::new(),
        images: q.images.len(),
        times: q.ts.len(),
    };
    for name in taps {
        let (base, relative) = tap_parts(name);
        let feat = f
            .get(base)
            .ok_or_else(|| Error::Invalid(format!("the network did not return tap {base:?}")))?;
        let d = match relative {
            true => be.pair_relative_distance(feat)?,
            false => be.pair_distance(feat)?,
        };
        let shape = be.shape(&d).to_vec();
        out.shapes.push((shape[1], shape[2]));
        out.tensors.push(d);
    }
    Ok(out)
}

/// [`tap_distances_device`], read back.
pub fn tap_distances<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    q: &PairedQuery,
    taps: &[String],
) -> Result<BTreeMap<String, TapGrid>> {
    let d = tap_distances_device(be, model, q, taps)?;
    let host = d
        .tensors
        .iter()
        .map(|t| be.read(t))
        .collect::<Result<Vec<_>>>()?;
    d.into_grids(host)
}

/// Bilinear resize of an `h×w` map to `oh×ow` with half-pixel centres (as
/// PyTorch's `interpolate(mode="bilinear", align_corners=False)`).
pub fn bilinear_resize(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    if (h, w) == (oh, ow) {
        return src.to_vec();
    }
    let axis = |o: usize, n: usize, on: usize| -> (usize, usize, f32) {
        let x = ((o as f32 + 0.5) * n as f32 / on as f32 - 0.5).max(0.0);
        let i0 = (x.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, x - i0 as f32)
    };
    let cols: Vec<_> = (0..ow).map(|x| axis(x, w, ow)).collect();
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let (y0, y1, fy) = axis(y, h, oh);
        for &(x0, x1, fx) in &cols {
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bot = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bot * fy);
        }
    }
    out
}

/// Separable Gaussian blur of a `size×size` map (σ in pixels, edges clamped).
pub fn gaussian_blur(map: &[f32], size: usize, sigma: f32) -> Vec<f32> {
    gaussian_blur_rect(map, size, size, sigma)
}

/// Separable Gaussian blur of a `width × height` row-major map (σ in pixels,
/// edges clamped).
pub fn gaussian_blur_rect(map: &[f32], width: usize, height: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 || map.is_empty() {
        return map.to_vec();
    }
    let rad = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-rad..=rad)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / norm).collect();
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    let mut tmp = vec![0f32; map.len()];
    for y in 0..height {
        for x in 0..width {
            tmp[y * width + x] = k
                .iter()
                .enumerate()
                .map(|(o, kv)| kv * map[y * width + clamp(x as isize + o as isize - rad, width)])
                .sum();
        }
    }
    let mut out = vec![0f32; map.len()];
    for y in 0..height {
        for x in 0..width {
            out[y * width + x] = k
                .iter()
                .enumerate()
                .map(|(o, kv)| kv * tmp[clamp(y as isize + o as isize - rad, height) * width + x])
                .sum();
        }
    }
    out
}

/// Score-DD's aggregation for image `i`: for each tap Σ over the time indices
/// `js`, bilinear upsampling to `size`, then the product over taps.
pub fn combine(
    grids: &BTreeMap<String, TapGrid>,
    taps: &[String],
    js: &[usize],
    i: usize,
    size: usize,
) -> Result<Vec<f32>> {
    combine_profiled(grids, taps, js, i, size, None)
}

/// [`combine`], each tap's Σ_t map first divided by the normal profile's
/// mean at each position (see [`NormalProfile`]) when one is given.
pub fn combine_profiled(
    grids: &BTreeMap<String, TapGrid>,
    taps: &[String],
    js: &[usize],
    i: usize,
    size: usize,
    profile: Option<&NormalProfile>,
) -> Result<Vec<f32>> {
    let mut map = vec![1f32; size * size];
    for name in taps {
        let (mut sum, g) = tap_sum(grids, name, js, i)?;
        if let Some(pm) = profile.and_then(|p| p.taps.get(name)) {
            standardise(&mut sum, g.h, g.w, pm);
        }
        let up = bilinear_resize(&sum, g.h, g.w, size, size);
        map.iter_mut().zip(&up).for_each(|(m, &u)| *m *= u);
    }
    Ok(map)
}

/// Σ over the time indices `js` of tap `name`'s distances for image `i`,
/// with the tap's grid (for its size).
fn tap_sum<'g>(
    grids: &'g BTreeMap<String, TapGrid>,
    name: &str,
    js: &[usize],
    i: usize,
) -> Result<(Vec<f32>, &'g TapGrid)> {
    let g = grids
        .get(name)
        .ok_or_else(|| Error::Invalid(format!("no distances for tap {name:?}")))?;
    let mut sum = vec![0f32; g.h * g.w];
    for &j in js {
        sum.iter_mut().zip(g.at(i, j)).for_each(|(s, &v)| *s += v);
    }
    Ok((sum, g))
}

/// Divides an `h × w` map by the profile's mean (resized to it when the
/// detection size differs from the calibration's) plus a floor of a tenth of
/// its average, so a position that is nearly always quiet cannot blow up.
fn standardise(map: &mut [f32], h: usize, w: usize, pm: &ProfileMap) {
    let mean: std::borrow::Cow<[f32]> = if (pm.h, pm.w) == (h, w) {
        (&pm.mean[..]).into()
    } else {
        bilinear_resize(&pm.mean, pm.h, pm.w, h, w).into()
    };
    let avg = mean.iter().map(|&v| v as f64).sum::<f64>() / mean.len().max(1) as f64;
    let floor = (0.1 * avg) as f32 + f32::MIN_POSITIVE;
    map.iter_mut()
        .zip(mean.iter())
        .for_each(|(v, &m)| *v /= m + floor);
}

/// The normal profile of `taps` at the time indices `js` (times `ts`): the
/// per-position mean over the images `normals` of each tap's Σ_t map.
pub fn normal_profile(
    grids: &BTreeMap<String, TapGrid>,
    taps: &[String],
    js: &[usize],
    ts: &[f64],
    normals: &[usize],
) -> Result<NormalProfile> {
    if normals.is_empty() {
        return Err(Error::Invalid(
            "a normal profile needs at least one image".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for name in taps {
        let (first, g) = tap_sum(grids, name, js, normals[0])?;
        let mut acc: Vec<f64> = first.iter().map(|&v| v as f64).collect();
        for &i in &normals[1..] {
            let (sum, _) = tap_sum(grids, name, js, i)?;
            acc.iter_mut().zip(&sum).for_each(|(a, &v)| *a += v as f64);
        }
        let n = normals.len() as f64;
        let mean = acc.into_iter().map(|a| (a / n) as f32).collect();
        out.insert(
            name.clone(),
            ProfileMap {
                h: g.h,
                w: g.w,
                mean,
            },
        );
    }
    Ok(NormalProfile {
        ts: ts.to_vec(),
        taps: out,
    })
}

/// The map's maximum (NaN-free maps; NaN would propagate). A model's image
/// score is [`read_score`], which is this unless its settings say otherwise.
pub fn image_score(map: &[f32]) -> f32 {
    map.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// The image score of a map under a model's detection settings: the mean of
/// the `settings.score_top` fraction of its highest pixels (at least one, so
/// 0 — the default — reads the maximum). Settings with a verdict reading
/// score from their own map, not this one: front ends take the scores of
/// [`Detections`], which call this only when there is none, so CLI,
/// evaluation, pipeline and browser give an image the same score.
pub fn read_score(map: &[f32], settings: &DetectionSettings) -> f32 {
    top_mean(map, settings.score_top)
}

/// Anomaly maps and their images' scores: the scores come from the
/// settings' verdict reading when they have one, else from the maps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detections {
    /// One `size×size` row-major map per image.
    pub maps: Vec<Vec<f32>>,
    pub scores: Vec<f32>,
    /// The verdict reading's maps, smoothed by its σ, that the scores were
    /// read from (empty without a verdict reading).
    pub verdict_maps: Vec<Vec<f32>>,
}

impl Detections {
    /// Appends another batch's.
    pub fn extend(&mut self, other: Detections) {
        self.maps.extend(other.maps);
        self.scores.extend(other.scores);
        self.verdict_maps.extend(other.verdict_maps);
    }
}

/// Mean of the `fraction` (clamped to [0, 1]; NaN reads as 0) highest values
/// of `map`, at least one of them; −∞ for an empty map.
pub fn top_mean(map: &[f32], fraction: f32) -> f32 {
    let f = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let k = ((f as f64 * map.len() as f64).ceil() as usize).clamp(1, map.len().max(1));
    if k <= 1 || map.is_empty() {
        return image_score(map);
    }
    let mut v = map.to_vec();
    let cut = v.len() - k;
    v.select_nth_unstable_by(cut, |a, b| a.total_cmp(b));
    (v[cut..].iter().map(|&x| x as f64).sum::<f64>() / k as f64) as f32
}

/// One detection run over a batch: noise draw `draw`, on the images
/// mirrored left to right when `flip`. A map is the mean of its runs' maps.
/// A flipped run draws its noise as the plain run of its draw does, laid
/// out on the mirrored image, so on the image it is that noise mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub draw: u64,
    pub flip: bool,
}

/// The runs settings with `draws` and `flip` ask for, draw by draw (each
/// draw's plain images first): `draws` runs, twice as many with `flip`. The
/// first is always draw 0 unflipped, the only run of the default settings.
pub fn runs(draws: usize, flip: bool) -> Vec<Run> {
    let flips: &[bool] = if flip { &[false, true] } else { &[false] };
    (0..draws as u64)
        .flat_map(|draw| flips.iter().map(move |&flip| Run { draw, flip }))
        .collect()
}

/// Row-major data whose rows are `width` values long (a CHW image, a map)
/// mirrored left to right.
pub fn mirror_rows(data: &[f32], width: usize) -> Vec<f32> {
    data.chunks(width.max(1))
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

/// Every map of a grid mirrored left to right: the distances of mirrored
/// images brought back to the images' own orientation.
pub fn mirror_grid(g: &TapGrid) -> TapGrid {
    TapGrid {
        data: mirror_rows(&g.data, g.w),
        ..*g
    }
}

/// Adds `m` into `acc`, value by value.
fn add_into(acc: &mut [f32], m: &[f32]) {
    acc.iter_mut().zip(m).for_each(|(a, &v)| *a += v);
}

/// A sum of `n` maps made their mean (n = 1 leaves it bit for bit as is).
fn divided(mut sum: Vec<f32>, n: usize) -> Vec<f32> {
    if n > 1 {
        let k = n as f32;
        sum.iter_mut().for_each(|v| *v /= k);
    }
    sum
}

/// Image i's map averaged over runs (noise draws, mirrored images brought
/// back): [`combine_profiled`] of each run's grids, summed in order, divided
/// by their number. Detection and the automatic search both call this, so
/// the search scores exactly the maps detection makes.
pub fn combine_runs(
    runs: &[&BTreeMap<String, TapGrid>],
    taps: &[String],
    js: &[usize],
    i: usize,
    size: usize,
    profile: Option<&NormalProfile>,
) -> Result<Vec<f32>> {
    let (first, rest) = runs
        .split_first()
        .ok_or_else(|| Error::Invalid("no detection runs to combine".into()))?;
    let mut sum = combine_profiled(first, taps, js, i, size, profile)?;
    for g in rest {
        add_into(&mut sum, &combine_profiled(g, taps, js, i, size, profile)?);
    }
    Ok(divided(sum, runs.len()))
}

/// How the tensors of a [`Pending`] detection become maps.
enum Plan {
    /// Score-DD and no-scales: per-tap distances, Σ over all times.
    Features {
        taps: Vec<String>,
        shapes: Vec<(usize, usize)>,
        images: usize,
        times: usize,
    },
    /// Reconstruction: the two end states `[n, C, S, S]`.
    Reconstruction { images: usize, channels: usize },
}

impl Plan {
    /// Tensors one run leaves to read back.
    fn tensors_per_run(&self) -> usize {
        match self {
            Plan::Features { taps, .. } => taps.len(),
            Plan::Reconstruction { .. } => 2,
        }
    }
}

/// Detection queued on the backend: read `tensors` back (synchronously, or
/// asynchronously in the browser) and hand the values to [`Pending::finish`].
pub struct Pending<T> {
    /// Every run's tensors, run after run.
    pub tensors: Vec<T>,
    plan: Plan,
    /// Whether each run saw mirrored images (its results come back mirrored).
    flips: Vec<bool>,
    size: usize,
    smooth: f32,
    /// The settings' normal profile, when it was measured at these times.
    profile: Option<NormalProfile>,
    /// The map's taps (the plan's may add the verdict's).
    map_taps: Vec<String>,
    /// The verdict reading, its profile dropped unless it was measured at
    /// these times; None reads scores from the maps with `score_top`.
    verdict: Option<VerdictReading>,
    score_top: f32,
}

impl<T> Pending<T> {
    /// The anomaly maps, one `size×size` row-major map per image (the mean
    /// over the runs, then smoothed), and the images' scores (see
    /// [`Detections`]).
    pub fn finish(self, host: Vec<Vec<f32>>) -> Result<Detections> {
        let per_run = self.plan.tensors_per_run();
        if host.len() != per_run * self.flips.len() {
            return Err(Error::Invalid(format!(
                "{} tensors read back for {} runs of {per_run}",
                host.len(),
                self.flips.len()
            )));
        }
        let mut values = host.into_iter();
        let parts: Vec<Vec<Vec<f32>>> = (0..self.flips.len())
            .map(|_| values.by_ref().take(per_run).collect())
            .collect();
        let (maps, verdict_maps) = match &self.plan {
            Plan::Features { .. } => {
                let grids = self.feature_grids(parts)?;
                let maps = self.read_maps(&grids, &self.map_taps, self.profile.as_ref())?;
                let verdict = match &self.verdict {
                    Some(v) => Some(self.read_maps(&grids, &v.taps, v.profile.as_ref())?),
                    None => None,
                };
                (maps, verdict)
            }
            Plan::Reconstruction { .. } => (self.reconstruction_maps(parts)?, None),
        };
        let maps: Vec<Vec<f32>> = maps
            .into_iter()
            .map(|m| gaussian_blur(&m, self.size, self.smooth))
            .collect();
        let (scores, verdict_maps) = match (&self.verdict, verdict_maps) {
            (Some(v), Some(vm)) => {
                let vm: Vec<Vec<f32>> = vm
                    .iter()
                    .map(|m| gaussian_blur(m, self.size, v.smooth))
                    .collect();
                (vm.iter().map(|m| top_mean(m, v.score_top)).collect(), vm)
            }
            _ => (
                maps.iter().map(|m| top_mean(m, self.score_top)).collect(),
                Vec::new(),
            ),
        };
        Ok(Detections {
            maps,
            scores,
            verdict_maps,
        })
    }

    /// Score-DD and no-scales: each run's grids, mirrored back when its
    /// images were mirrored.
    fn feature_grids(&self, parts: Vec<Vec<Vec<f32>>>) -> Result<Vec<BTreeMap<String, TapGrid>>> {
        let Plan::Features {
            taps,
            shapes,
            images,
            times,
        } = &self.plan
        else {
            return Err(Error::Invalid("not a feature plan".into()));
        };
        let mut grids = Vec::with_capacity(parts.len());
        for (part, &flip) in parts.into_iter().zip(&self.flips) {
            let g = DeviceDistances::<()> {
                taps: taps.clone(),
                tensors: Vec::new(),
                shapes: shapes.clone(),
                images: *images,
                times: *times,
            }
            .into_grids(part)?;
            grids.push(if flip {
                g.iter().map(|(k, v)| (k.clone(), mirror_grid(v))).collect()
            } else {
                g
            });
        }
        Ok(grids)
    }

    /// Every image's map of `taps` over all times, combined over the runs
    /// by [`combine_runs`], unsmoothed.
    fn read_maps(
        &self,
        grids: &[BTreeMap<String, TapGrid>],
        taps: &[String],
        profile: Option<&NormalProfile>,
    ) -> Result<Vec<Vec<f32>>> {
        let Plan::Features { images, times, .. } = &self.plan else {
            return Err(Error::Invalid("not a feature plan".into()));
        };
        let refs: Vec<&BTreeMap<String, TapGrid>> = grids.iter().collect();
        let js: Vec<usize> = (0..*times).collect();
        (0..*images)
            .map(|i| combine_runs(&refs, taps, &js, i, self.size, profile))
            .collect()
    }

    /// Reconstruction: each run's squared pixel differences (mirrored back
    /// when its images were mirrored), averaged over the runs.
    fn reconstruction_maps(&self, parts: Vec<Vec<Vec<f32>>>) -> Result<Vec<Vec<f32>>> {
        let mut sum: Vec<Vec<f32>> = Vec::new();
        for (part, &flip) in parts.into_iter().zip(&self.flips) {
            let maps = self.squared_differences(part)?;
            let maps = maps.into_iter().map(|m| match flip {
                true => mirror_rows(&m, self.size),
                false => m,
            });
            if sum.is_empty() {
                sum = maps.collect();
            } else {
                sum.iter_mut().zip(maps).for_each(|(s, m)| add_into(s, &m));
            }
        }
        let n = self.flips.len();
        Ok(sum.into_iter().map(|m| divided(m, n)).collect())
    }

    /// One reconstruction run's maps: ‖x'(0) − x''(0)‖² per pixel, summed
    /// over channels.
    fn squared_differences(&self, part: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        let Plan::Reconstruction { images, channels } = self.plan else {
            return Err(Error::Invalid("not a reconstruction plan".into()));
        };
        let [a, b] = <[Vec<f32>; 2]>::try_from(part)
            .map_err(|_| Error::Invalid("reconstruction needs 2 tensors read back".into()))?;
        let hw = self.size * self.size;
        if a.len() != images * channels * hw || b.len() != a.len() {
            return Err(Error::Invalid(
                "reconstruction: wrong sizes read back".into(),
            ));
        }
        Ok((0..images)
            .map(|i| {
                let mut m = vec![0f32; hw];
                for ch in 0..channels {
                    let off = (i * channels + ch) * hw;
                    for (p, v) in m.iter_mut().enumerate() {
                        let d = a[off + p] - b[off + p];
                        *v += d * d;
                    }
                }
                m
            })
            .collect())
    }
}

/// Queues detection of a batch of images (CHW in [0, 1], `opts.size` px
/// square, by default the model's size) on the backend: one run per noise
/// draw, and per draw one on the mirrored images with `flip`. `ids[i]` names
/// image i's noise; pass zeros to give every image the same noise (its map
/// then depends only on the image). The images travel through the network as
/// one batch per run: split big sets with [`detections_batched`].
pub fn start<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    images: &[&[f32]],
    ids: &[u64],
    opts: &DetectOptions,
) -> Result<Pending<B::Tensor>> {
    validate(model, opts)?;
    let s = &opts.settings;
    let size = opts.size_for(model);
    let numel = model.net.config.channels * size * size;
    if let Some(i) = images.iter().position(|img| img.len() != numel) {
        return Err(Error::Invalid(format!(
            "image {i} has {} values; detection at {size} px takes {}×{size}×{size} = {numel}",
            images[i].len(),
            model.net.config.channels
        )));
    }
    let runs = runs(s.draws, s.flip);
    let mut tensors = Vec::new();
    let mut plan = None;
    for run in &runs {
        let mirrored: Vec<Vec<f32>> = match run.flip {
            true => images.iter().map(|x| mirror_rows(x, size)).collect(),
            false => Vec::new(),
        };
        let imgs: Vec<&[f32]> = match run.flip {
            true => mirrored.iter().map(|v| v.as_slice()).collect(),
            false => images.to_vec(),
        };
        let (t, p) = queue_run(be, model, &imgs, ids, opts, run.draw)?;
        tensors.extend(t);
        plan = Some(p);
    }
    Ok(Pending {
        tensors,
        plan: plan.ok_or_else(|| Error::Invalid("detection needs at least one run".into()))?,
        flips: runs.iter().map(|r| r.flip).collect(),
        size,
        smooth: s.smooth,
        profile: profile_in_use(s, opts.mode).cloned(),
        map_taps: s.taps.clone(),
        verdict: verdict_in_use(s, opts.mode),
        score_top: s.score_top,
    })
}

/// One run of [`start`] queued: its tensors and how they become maps.
fn queue_run<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    images: &[&[f32]],
    ids: &[u64],
    opts: &DetectOptions,
    draw: u64,
) -> Result<(Vec<B::Tensor>, Plan)> {
    let s = &opts.settings;
    let tmax = s.ts.iter().copied().fold(f64::MIN, f64::max);
    let features = |d: DeviceDistances<B::Tensor>| {
        let plan = Plan::Features {
            taps: d.taps,
            shapes: d.shapes,
            images: d.images,
            times: d.times,
        };
        (d.tensors, plan)
    };
    let query = PairedQuery {
        images,
        ids,
        ts: &s.ts,
        r: s.r,
        sampler: s.sampler,
        seed: opts.seed,
        draw,
    };
    // The ablations: one full run from max{t} down to ε.
    let full_run = PairedQuery {
        ts: &[tmax],
        r: steps_to_eps(model.sde.as_ref(), tmax),
        ..query
    };
    match opts.mode {
        Mode::ScoreDd => Ok(features(tap_distances_device(
            be,
            model,
            &query,
            &taps_computed(s),
        )?)),
        Mode::NoScales => Ok(features(tap_distances_device(
            be, model, &full_run, &s.taps,
        )?)),
        Mode::Reconstruction => {
            let run = paired_run(be, model, &full_run)?;
            let plan = Plan::Reconstruction {
                images: images.len(),
                channels: model.net.config.channels,
            };
            Ok((vec![run.state.whole, run.state.own], plan))
        }
    }
}

/// The settings' normal profile when it applies: Score-DD at exactly the
/// times it was measured at (not the ablations' single full run, not
/// overridden times).
pub fn profile_in_use(s: &DetectionSettings, mode: Mode) -> Option<&NormalProfile> {
    s.profile
        .as_ref()
        .filter(|p| mode == Mode::ScoreDd && p.ts == s.ts)
}

/// The settings' verdict reading when it applies: Score-DD only (the
/// ablations score their maps), its profile kept only when it was measured
/// at the settings' times.
pub fn verdict_in_use(s: &DetectionSettings, mode: Mode) -> Option<VerdictReading> {
    let v = s.verdict.as_ref().filter(|_| mode == Mode::ScoreDd)?;
    Some(VerdictReading {
        profile: v.profile.clone().filter(|p| p.ts == s.ts),
        ..v.clone()
    })
}

/// Anomaly maps (`size×size`, row-major, one per image): [`start`], read
/// back, [`Pending::finish`].
pub fn anomaly_maps<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    images: &[&[f32]],
    ids: &[u64],
    opts: &DetectOptions,
) -> Result<Vec<Vec<f32>>> {
    Ok(detections(be, model, images, ids, opts)?.maps)
}

/// Maps and scores ([`Detections`]) of a batch: [`start`], read back,
/// [`Pending::finish`].
pub fn detections<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    images: &[&[f32]],
    ids: &[u64],
    opts: &DetectOptions,
) -> Result<Detections> {
    let p = start(be, model, images, ids, opts)?;
    let host = p
        .tensors
        .iter()
        .map(|t| be.read(t))
        .collect::<Result<Vec<_>>>()?;
    p.finish(host)
}

/// [`detections`] over any number of images, `batch` images per network
/// batch, calling `progress(done)` after each batch.
pub fn detections_batched<B: NnBackend>(
    be: &B,
    model: &ScoreModel<B>,
    images: &[&[f32]],
    ids: &[u64],
    opts: &DetectOptions,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Detections> {
    if batch == 0 {
        return Err(Error::Invalid("batch must be at least 1 image".into()));
    }
    let mut out = Detections::default();
    for (chunk, idc) in images.chunks(batch).zip(ids.chunks(batch)) {
        out.extend(detections(be, model, chunk, idc, opts)?);
        progress(out.maps.len());
    }
    Ok(out)
}
