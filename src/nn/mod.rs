//! The score network: parameters, layers with their backward passes, blocks
//! and the U-net. Code here is generic over [`NnBackend`]; the layer that
//! records a forward pass is the one that knows its backward.

pub mod blocks;
pub mod layers;
pub mod score_model;
pub mod unet;

use crate::backend::{Backend, NnBackend};
use crate::error::{Error, Result};
use crate::rng::RngStream;

/// Index of a parameter in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// How a parameter starts (before any training).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform with variance scale·2/(fan_in + fan_out) (DDPM/NCSN++'s `default_init`).
    FanAvg {
        scale: f32,
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
    /// Not trained: set by the model after init (e.g. Fourier frequencies). The
    /// store keeps a host copy so forward passes need no device readback.
    Fixed,
}

/// Named parameter tensors. Names follow a stable, readable scheme such as
/// `down.1.block.0.conv0.weight`; they are the keys of the model file.
pub struct ParamStore<T> {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub inits: Vec<Init>,
    pub values: Vec<T>,
    /// Host copies of the [`Init::Fixed`] parameters (None for trained ones).
    pub fixed_host: Vec<Option<Vec<f32>>>,
}

impl<T> Default for ParamStore<T> {
    fn default() -> Self {
        ParamStore {
            names: Vec::new(),
            shapes: Vec::new(),
            inits: Vec::new(),
            values: Vec::new(),
            fixed_host: Vec::new(),
        }
    }
}

impl<T: Clone> ParamStore<T> {
    pub fn get(&self, id: ParamId) -> &T {
        &self.values[id.0]
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Total number of scalars.
    pub fn count(&self) -> usize {
        self.shapes
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum()
    }

    /// Whether training updates parameter `i` ([`Init::Fixed`] ones are not).
    pub fn is_trainable(&self, i: usize) -> bool {
        self.inits.get(i) != Some(&Init::Fixed)
    }

    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name).map(ParamId)
    }
}

/// A parameter layout being declared: names, shapes, inits; values come later.
#[derive(Default)]
pub struct ParamSpec {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub inits: Vec<Init>,
}

impl ParamSpec {
    pub fn add(&mut self, name: String, shape: Vec<usize>, init: Init) -> ParamId {
        self.names.push(name);
        self.shapes.push(shape);
        self.inits.push(init);
        ParamId(self.names.len() - 1)
    }

    /// Initial values, reproducible from `seed`: parameter i draws from its own
    /// Philox stream, so adding a parameter does not change the others.
    pub fn init_values(&self, seed: u64) -> Vec<Vec<f32>> {
        let root = RngStream::new(seed, 0x1417);
        self.shapes
            .iter()
            .zip(&self.inits)
            .enumerate()
            .map(|(i, (shape, init))| {
                let n: usize = shape.iter().product();
                match *init {
                    Init::Zeros | Init::Fixed => vec![0.0; n],
                    Init::Ones => vec![1.0; n],
                    Init::FanAvg {
                        scale,
                        fan_in,
                        fan_out,
                    } => {
                        // Uniform(−a, a) has variance a²/3.
                        let var = scale.max(1e-10) * 2.0 / (fan_in + fan_out).max(1) as f32;
                        let a = (3.0 * var).sqrt();
                        let mut v = vec![0.0; n];
                        root.derive(i as u64).fill_uniform(0, &mut v);
                        v.iter_mut().for_each(|x| *x = a * (2.0 * *x - 1.0));
                        v
                    }
                }
            })
            .collect()
    }

    /// Uploads values (one per declared parameter, shapes checked) to a backend.
    pub fn store<B: Backend>(
        &self,
        backend: &B,
        values: &[Vec<f32>],
    ) -> Result<ParamStore<B::Tensor>> {
        if values.len() != self.names.len() {
            return Err(Error::Invalid(format!(
                "{} parameter tensors for a model with {}",
                values.len(),
                self.names.len()
            )));
        }
        let mut out = ParamStore::default();
        for (i, v) in values.iter().enumerate() {
            out.values.push(backend.upload(v, &self.shapes[i])?);
        }
        out.fixed_host = self
            .inits
            .iter()
            .zip(values)
            .map(|(i, v)| (*i == Init::Fixed).then(|| v.clone()))
            .collect();
        out.names = self.names.clone();
        out.shapes = self.shapes.clone();
        out.inits = self.inits.clone();
        Ok(out)
    }
}

/// Gradients, one slot per parameter, accumulated over uses.
pub struct Grads<T> {
    pub values: Vec<Option<T>>,
    /// Factor every [`Grads::add`] applies: see [`Grads::scaled`].
    scale: f32,
}

impl<T: Clone> Grads<T> {
    pub fn new(n: usize) -> Self {
        Grads {
            values: vec![None; n],
            scale: 1.0,
        }
    }

    /// Adds `g` (times the current scale) into the slot of `id`.
    pub fn add<B: NnBackend<Tensor = T>>(&mut self, be: &B, id: ParamId, g: T) -> Result<()> {
        let s = self.scale;
        let slot = &mut self.values[id.0];
        *slot = Some(match slot.take() {
            None if s == 1.0 => g,
            None => be.axpby(s, &g, 0.0, &g)?,
            Some(prev) => be.axpby(1.0, &prev, s, &g)?,
        });
        Ok(())
    }

    /// Runs `f` with every parameter gradient it adds multiplied by `s`. A
    /// block whose output is scaled (a residual's (skip + h)/√2) backpropagates
    /// the unscaled output gradient through its layers and scales only what
    /// leaves it: the weights' gradients here (small tensors) and its input
    /// gradient in the final sum, instead of a pass over the activation-sized
    /// output gradient. Every backward op is linear in its incoming gradient.
    pub fn scaled<R>(&mut self, s: f32, f: impl FnOnce(&mut Self) -> R) -> R {
        let outer = self.scale;
        self.scale = outer * s;
        let r = f(self);
        self.scale = outer;
        r
    }

    pub fn get(&self, id: ParamId) -> Option<&T> {
        self.values[id.0].as_ref()
    }
}
