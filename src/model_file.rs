//! One portable model file: safetensors weights with the JSON metadata (model
//! config, SDE, training step, detection settings, score calibration) in the
//! safetensors header, under the key `scoredd`. The CLI and the browser load
//! the same file. Loading validates everything and never panics on bad bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::backend::Sampler;
use crate::error::{Error, Result};
use crate::nn::unet::{UNet, UNetConfig};
use crate::sde::SdeConfig;

/// Bumped when the file layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "scoredd";

/// Score-DD settings stored with the model (the detector's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionSettings {
    /// Start times {t} as fractions of [0, 1].
    pub ts: Vec<f64>,
    /// Reverse steps per start time.
    pub r: usize,
    pub sampler: Sampler,
    /// Feature maps compared (names from `UNet::tap_names`).
    pub taps: Vec<String>,
    /// Gaussian smoothing of the map, σ in model pixels (0 = off).
    #[serde(default)]
    pub smooth: f32,
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
}

impl Calibration {
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
    pub training: Option<crate::train::TrainConfig>,
}

/// A model in host memory: metadata, one weight vector per parameter of
/// `UNet::new(meta.model)` in declaration order, and extra named tensors
/// (e.g. EMA weights or optimiser state in a training checkpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    pub meta: ModelMeta,
    pub weights: Vec<Vec<f32>>,
    pub extra: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

fn bad(path: &str, detail: impl Into<String>) -> Error {
    Error::ModelFile {
        path: path.to_string(),
        detail: detail.into(),
    }
}

impl ModelFile {
    /// Serialises to bytes (what `save` writes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let net = UNet::new(self.meta.model.clone())?;
        if self.weights.len() != net.spec.names.len() {
            return Err(bad(
                "<memory>",
                format!(
                    "{} weight tensors for a model with {}",
                    self.weights.len(),
                    net.spec.names.len()
                ),
            ));
        }
        let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for ((name, shape), w) in net
            .spec
            .names
            .iter()
            .zip(&net.spec.shapes)
            .zip(&self.weights)
        {
            if w.len() != shape.iter().product::<usize>() {
                return Err(bad(
                    "<memory>",
                    format!("{name}: {} values for shape {shape:?}", w.len()),
                ));
            }
            bytes.push((
                name.clone(),
                shape.clone(),
                w.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        }
        for (name, (shape, w)) in &self.extra {
            if net.spec.names.contains(name) {
                return Err(bad(
                    "<memory>",
                    format!("extra tensor {name} shadows a model parameter"),
                ));
            }
            bytes.push((
                name.clone(),
                shape.clone(),
                w.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        }
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| bad("<memory>", e.to_string()))?;
        let meta = serde_json::to_string(&self.meta).map_err(|e| bad("<memory>", e.to_string()))?;
        safetensors::serialize(views, Some(HashMap::from([(META_KEY.to_string(), meta)])))
            .map_err(|e| bad("<memory>", e.to_string()))
    }

    /// Parses and validates bytes; `path` only names the file in errors.
    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(path, format!("not a valid safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(path, format!("unreadable header ({e})")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad(path, "no scoredd metadata: is this a scoredd model?"))?;
        let meta: ModelMeta =
            serde_json::from_str(meta_json).map_err(|e| bad(path, format!("bad metadata: {e}")))?;
        if meta.format != FORMAT_VERSION {
            return Err(bad(
                path,
                format!(
                    "format version {} (this scoredd reads {FORMAT_VERSION})",
                    meta.format
                ),
            ));
        }
        meta.sde.build().map_err(|e| bad(path, e.to_string()))?;
        let net = UNet::new(meta.model.clone()).map_err(|e| bad(path, e.to_string()))?;
        let mut tensors: BTreeMap<String, TensorView> = st.tensors().into_iter().collect();
        let read = |name: &str, v: &TensorView| -> Result<Vec<f32>> {
            if v.dtype() != Dtype::F32 {
                return Err(bad(
                    path,
                    format!("{name}: dtype {:?}, expected F32", v.dtype()),
                ));
            }
            let vals: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if let Some(i) = vals.iter().position(|x| !x.is_finite()) {
                return Err(bad(
                    path,
                    format!(
                        "{name}: element {i} is {} (the weights are corrupt)",
                        vals[i]
                    ),
                ));
            }
            Ok(vals)
        };
        let mut weights = Vec::with_capacity(net.spec.names.len());
        for (name, shape) in net.spec.names.iter().zip(&net.spec.shapes) {
            let v = tensors
                .remove(name)
                .ok_or_else(|| bad(path, format!("missing tensor {name}")))?;
            if v.shape() != shape.as_slice() {
                return Err(bad(
                    path,
                    format!(
                        "{name}: shape {:?}, but the config needs {shape:?}",
                        v.shape()
                    ),
                ));
            }
            weights.push(read(name, &v)?);
        }
        let mut extra = BTreeMap::new();
        for (name, v) in tensors {
            extra.insert(name.clone(), (v.shape().to_vec(), read(&name, &v)?));
        }
        Ok(ModelFile {
            meta,
            weights,
            extra,
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Writes through a temporary file and a rename, so a crash never leaves a
    /// half-written model where a good one was.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        let tmp = path.with_extension("safetensors.tmp");
        let io = |source| Error::Io {
            path: tmp.display().to_string(),
            source,
        };
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })
    }
}
