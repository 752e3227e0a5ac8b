//! scoredd — unsupervised visual defect detection with score-based diffusion
//! models (Score-DD, Teng et al.), on any GPU through wgpu and on the CPU.
//!
//! Rooms, with data flowing one way: kernels (`shaders/` + [`backend`]) →
//! method ([`sde`], [`method`]) → apps (the `scoredd` CLI).

pub mod backend;
pub mod error;
pub mod method;
pub mod plot;
pub mod rng;
pub mod sde;
pub mod toy;

pub use backend::{Backend, BackendChoice};
pub use error::{Error, Result};
