//! One portable model file: safetensors weights with the JSON metadata (model
//! config, SDE, training step, detection settings, score calibration) in the
//! safetensors header, under the key `scoredd`. The CLI and the browser load
//! the same file. Loading validates everything and never panics on bad bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::backend::NnBackend;
use crate::error::{Error, Result};
use crate::nn::score_model::ScoreModel;
use crate::nn::unet::UNet;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

pub use crate::config::{
    Calibration, DetectionSettings, ModelMeta, Selection, VerdictReading, FORMAT_VERSION,
};

const META_KEY: &str = "scoredd";

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

// A score model to and from its file. Here rather than in `nn::score_model`
// so that `nn` does not depend on this module (which depends on `nn`).
impl<B: NnBackend> ScoreModel<B> {
    /// A model on `be` from a loaded file.
    pub fn from_file(be: &B, file: &ModelFile) -> Result<Self> {
        let net = UNet::new(file.meta.model.clone())?;
        let params = net.spec.store(be, &file.weights)?;
        Ok(ScoreModel {
            net,
            params,
            sde: file.meta.sde.build()?,
            meta: file.meta.clone(),
        })
    }

    /// The model as a file (weights read back from the backend).
    pub fn to_file(&self, be: &B) -> Result<ModelFile> {
        let weights = self
            .params
            .values
            .iter()
            .map(|t| be.read(t))
            .collect::<Result<Vec<_>>>()?;
        Ok(ModelFile {
            meta: self.meta.clone(),
            weights,
            extra: Default::default(),
        })
    }
}
