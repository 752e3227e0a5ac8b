//! Plain configuration and metadata types: the U-net's architecture, what a
//! model file stores besides its weights, and the training recipe. Data and
//! validation only, so that the modules which build, save and train models
//! (`nn`, `model_file`, `train`) can all use them without depending on each
//! other in a circle. Each type is also re-exported from its old path
//! (`nn::unet::UNetConfig`, `model_file::ModelMeta`, `train::TrainConfig`, …).

use serde::{Deserialize, Serialize};

use crate::backend::train_ops::Reduce;
use crate::backend::Sampler;
use crate::error::{Error, Result};
use crate::sde::SdeConfig;

// --- the network's architecture ------------------------------------------------

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

    pub fn tdim(&self) -> usize {
        4 * self.nf
    }
}

/// How the U-net changes resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    /// Stride-2 3×3 conv down; nearest ×2 then 3×3 conv up (DDPM++ style).
    #[default]
    Conv,
    /// FIR [1,3,3,1] filter down/up (NCSN++), then a 3×3 conv.
    Fir,
    /// 2×2 average pooling down; nearest ×2 up; then a 3×3 conv.
    Avg,
}

// --- the model file's metadata -------------------------------------------------

/// Bumped when the file layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// Score-DD settings stored with the model (the detector's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionSettings {
    /// Start times {t} as fractions of [0, 1].
    pub ts: Vec<f64>,
    /// Reverse steps per start time.
    pub r: usize,
    pub sampler: Sampler,
    /// Feature maps compared (names from `UNet::tap_names`; `NAME~rel` is NAME
    /// compared by relative distance, see `detect::RELATIVE`).
    pub taps: Vec<String>,
    /// Gaussian smoothing of the map, σ in model pixels (0 = off).
    #[serde(default)]
    pub smooth: f32,
    /// Each tap's distances divided by their usual size at each position on
    /// good images (chosen by `calibrate --auto` when it helps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<NormalProfile>,
    /// How the image score is read from the map: the mean of this fraction
    /// of its highest pixels (0 = the map's maximum, the default, which model
    /// files written before this field existed mean).
    #[serde(default)]
    pub score_top: f32,
    /// Independent noise draws per start time whose maps are averaged (1 in
    /// model files written before this field existed). Each draw costs a
    /// full detection run.
    #[serde(default = "one_draw")]
    pub draws: usize,
    /// Test-time flip: the horizontally mirrored image is detected too and
    /// its map, mirrored back, averaged in (doubles the cost; off by default).
    #[serde(default)]
    pub flip: bool,
    /// A second reading of the same network runs for the image score, when
    /// the best taps for a verdict are not the best for a map (chosen by
    /// `calibrate --auto --objective both`). None: the score is read from
    /// the map itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictReading>,
}

/// How the image score is read when it has its own reading: feature maps,
/// smoothing, normal profile and top fraction of their own, over the same
/// start times, noise draws and flips as the map. Taps cost next to nothing
/// once the network has run, so a verdict reading adds almost no time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictReading {
    pub taps: Vec<String>,
    /// Gaussian smoothing of the verdict map, σ in model pixels.
    pub smooth: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<NormalProfile>,
    /// The image score: mean of this fraction of the verdict map's highest
    /// pixels (0 = its maximum).
    pub score_top: f32,
}

fn one_draw() -> usize {
    1
}

/// Most noise draws detection accepts (each is a full run).
pub const MAX_DRAWS: usize = 16;

/// Per-position mean of each tap's Σ_t distance map over held-out normal
/// images, measured at `ts`. Dividing a map by it makes a position that is
/// busy on every good image (a border, a periodic streak) count as normal,
/// and a quiet position where something appears count more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalProfile {
    /// The start times the means were measured at: the profile applies only
    /// to detection at exactly these times.
    pub ts: Vec<f64>,
    pub taps: std::collections::BTreeMap<String, ProfileMap>,
}

/// One tap's mean distance map, `h × w` row-major, at the tap's resolution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileMap {
    pub h: usize,
    pub w: usize,
    pub mean: Vec<f32>,
}

impl Default for DetectionSettings {
    fn default() -> Self {
        // The paper's {250, 200, 150, 100, 50}/2000 with one step; decoder level taps.
        DetectionSettings {
            ts: vec![0.125, 0.1, 0.075, 0.05, 0.025],
            r: 1,
            sampler: Sampler::Ode,
            taps: vec!["up.1".into(), "up.2".into()],
            smooth: 0.0,
            profile: None,
            score_top: 0.0,
            draws: 1,
            flip: false,
            verdict: None,
        }
    }
}

/// How raw image scores map to a [0, 1] score and a verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Raw score at or above which an image is called defective.
    pub threshold: f64,
    /// Raw scores mapped to 0 and 1 (e.g. median and a high quantile of normal images).
    pub low: f64,
    pub high: f64,
    /// Quantile of the held-out normal scores the threshold sits at.
    #[serde(default)]
    pub quantile: f64,
    /// How many held-out normal images the threshold came from.
    #[serde(default)]
    pub normals: usize,
    /// Guaranteed bound on the false-alarm rate for new normal images
    /// (split conformal, `calibrate::conformal_threshold`): 1 − q when there
    /// were enough normals, else 1/(normals + 1). None in older files.
    #[serde(default)]
    pub false_alarm_bound: Option<f64>,
    /// With a verdict reading the score and the map have different scales:
    /// this is the map's own, calibrated on the same normals by the map's
    /// reading, and masks, outlines and heat-map colours use it. None: the
    /// map is on the score's scale (this calibration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<Box<Calibration>>,
    /// Set on tiled detection (`calibrate --tile`): the normals were
    /// detected at their own size in tiles of this side and overlap, as
    /// `detect --tile` does. None: on whole images at the model's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<TileLayout>,
}

/// The tiling a threshold was set with (px).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileLayout {
    pub tile: usize,
    pub overlap: usize,
}

impl Calibration {
    /// The calibration of the map's values: [`Calibration::map`] or this one.
    pub fn map_scale(&self) -> &Calibration {
        self.map.as_deref().unwrap_or(self)
    }

    /// A raw score mapped piecewise-linearly to [0, 1]: `low` → 0, the
    /// threshold → 0.5, `high` → 1 (clamped), so 0.5 is the verdict line.
    pub fn normalise(&self, score: f64) -> f64 {
        let v = if score < self.threshold {
            0.5 * (score - self.low) / (self.threshold - self.low).max(f64::MIN_POSITIVE)
        } else {
            0.5 + 0.5 * (score - self.threshold)
                / (self.high - self.threshold).max(f64::MIN_POSITIVE)
        };
        if v.is_nan() {
            1.0
        } else {
            v.clamp(0.0, 1.0)
        }
    }

    /// Whether a raw score is called defective.
    pub fn is_defect(&self, score: f64) -> bool {
        score >= self.threshold
    }
}

/// How the detector's {t} and taps were chosen (by `scoredd calibrate --auto`):
/// pixel/image AUROC on synthetic defects pasted onto held-out normal images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub normals: usize,
    pub defects: usize,
    pub default_ts: Vec<f64>,
    pub default_taps: Vec<String>,
    pub default_pixel_auroc: f64,
    pub default_image_auroc: f64,
    pub chosen_pixel_auroc: f64,
    pub chosen_image_auroc: f64,
    /// Combinations scored.
    pub candidates: usize,
    /// What the search maximised.
    #[serde(default)]
    pub objective: Objective,
    /// The normal-profile trial: the objective's best AUROC of the search
    /// without and with a profile, each image's map divided by a profile
    /// measured on the half of the normals it does not come from
    /// (cross-fitted). None when too few normals to try it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_trial: Option<[f64; 2]>,
    /// The score-reading trial: each `[fraction of top pixels, image AUROC]`
    /// tried on the synthetic set (fraction 0 = the map's maximum). Empty in
    /// model files calibrated before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reading_trial: Vec<[f64; 2]>,
    /// The noise-draw and flip trial (stage 6): every (draws, flip) tried,
    /// with its estimated cost, scored on noise draws stages 1–5 did not see
    /// (so its one-run AUROC is not `chosen_*_auroc`, which is draw 0's).
    /// Empty in older model files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub augment_trial: Vec<AugmentTrial>,
    /// Detection time per image the network took on the calibrating
    /// backend per start time and run, in ms (what cost estimates scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_per_time: Option<f64>,
    /// The time budget the search respected (`calibrate --budget-ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<f64>,
    /// Objective `both`: the search of the verdict reading (image AUROC, at
    /// the map's times, draws and flip), recorded as this one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Box<Selection>>,
}

/// One (draws, flip) candidate of the search's stage 6.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentTrial {
    pub draws: usize,
    pub flip: bool,
    /// Estimated detection time, ms per image, on the calibrating backend
    /// (None where it had no clock: the browser).
    pub ms_per_image: Option<f64>,
    /// The objective's AUROC on the synthetic set; None when the estimate
    /// was over the budget and the candidate was not run.
    pub auroc: Option<f64>,
}

/// What `calibrate::select_settings` maximises on the synthetic defects; the other
/// AUROC breaks ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// Pixel AUROC: maps that outline defects (localisation).
    #[default]
    Pixel,
    /// Image AUROC: good/defective verdicts per image.
    Image,
    /// Image AUROC against whole-image anomalies — the wrong object or
    /// class (one-class tasks such as MNIST digits) rather than a local
    /// mark: the synthetic anomalies are smooth deformations of the whole
    /// normal image, whose parts look right and whose overall shape does not.
    Semantic,
    /// Both readings from one calibration: the map chosen for pixel AUROC,
    /// then the image score given its own taps, smoothing, profile and
    /// reading, chosen for image AUROC over the map's network runs.
    Both,
}

impl Objective {
    /// Whether candidates are ranked by image AUROC first (`both` ranks its
    /// map by pixel AUROC; its verdict search is an `image` one).
    pub fn ranks_images(self) -> bool {
        matches!(self, Objective::Image | Objective::Semantic)
    }

    /// What candidates are ranked by, in words ("… AUROC").
    pub fn auroc_words(self) -> &'static str {
        match self {
            Objective::Pixel => "Pixel AUROC",
            Objective::Image => "Image AUROC",
            Objective::Semantic => "Image AUROC on morphs",
            Objective::Both => "Pixel AUROC",
        }
    }
}

/// Everything but the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format: u32,
    pub model: UNetConfig,
    pub sde: SdeConfig,
    /// Training steps taken.
    pub step: u64,
    #[serde(default)]
    pub detection: DetectionSettings,
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// Present when {t} and taps were chosen automatically.
    #[serde(default)]
    pub selection: Option<Selection>,
    /// The training recipe, in files written by `scoredd train` (for resuming).
    #[serde(default)]
    pub training: Option<TrainConfig>,
}

// --- the training recipe -------------------------------------------------------

/// The training recipe, stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch: usize,
    pub lr: f32,
    /// Linear learning-rate warm-up over this many steps.
    pub warmup: u64,
    pub seed: u64,
    #[serde(default)]
    pub reduce: Reduce,
    #[serde(default)]
    pub likelihood_weighting: bool,
    /// EMA rate (0.999 for VE, 0.9999 for VP/sub-VP), with the warm-up
    /// min(rate, (1 + n)/(10 + n)).
    pub ema_rate: f32,
    /// Global gradient-norm clip.
    pub max_norm: f32,
    /// Fraction of the training images left out (every k-th, see
    /// `data::holdout_split`) for the detector's calibration.
    #[serde(default)]
    pub holdout: f64,
    /// Divergence rollbacks so far: each halves `lr` and reseeds the data
    /// loader ([`TrainConfig::loader_seed`]). Kept so resuming is exact.
    #[serde(default)]
    pub rollbacks: u64,
    /// Non-finite steps skipped in a row at the last step (run state, kept
    /// in the checkpoint for the same reason).
    #[serde(default)]
    pub skipped_in_a_row: u64,
}

impl TrainConfig {
    /// DESIGN.md's recipe for an SDE named `sde` ("ve", "vp", "subvp").
    pub fn recipe(sde: &str, batch: usize, seed: u64) -> Self {
        TrainConfig {
            batch,
            lr: 2e-4,
            warmup: 5000,
            seed,
            reduce: Reduce::Mean,
            likelihood_weighting: false,
            ema_rate: if sde == "ve" { 0.999 } else { 0.9999 },
            max_norm: 1.0,
            holdout: 0.0,
            rollbacks: 0,
            skipped_in_a_row: 0,
        }
    }

    /// The data loader's seed: the run's seed, changed by each rollback so
    /// the batches that led to a divergence are not replayed.
    pub fn loader_seed(&self) -> u64 {
        self.seed ^ self.rollbacks
    }

    /// The learning rate applied at `step` (1-based): `lr` after a linear
    /// warm-up over `warmup` steps.
    pub fn learning_rate(&self, step: u64) -> f32 {
        if self.warmup == 0 {
            self.lr
        } else {
            self.lr * (step as f32 / self.warmup as f32).min(1.0)
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::Invalid("--batch must be at least 1".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Invalid(format!(
                "learning rate must be positive, got {}",
                self.lr
            )));
        }
        if !(0.0..1.0).contains(&self.ema_rate) {
            return Err(Error::Invalid(format!(
                "EMA rate must be in [0, 1), got {}",
                self.ema_rate
            )));
        }
        Ok(())
    }
}
