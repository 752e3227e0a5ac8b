//! scoredd — unsupervised visual defect detection with score-based diffusion
//! models (Score-DD, Teng et al.), on any GPU through wgpu and on the CPU.
//!
//! Rooms, with data flowing one way: kernels (`shaders/` + [`backend`]) →
//! method ([`sde`], [`method`]) → apps (the `scoredd` CLI).
//!
//! Code is written once over [`Backend`]; the same lines run on the CPU or the GPU:
//!
//! ```
//! use scoredd::backend::{cpu::CpuBackend, Backend, Distribution};
//! use scoredd::rng::RngStream;
//!
//! let b = CpuBackend::new();
//! let a = b.upload(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?;
//! let c = b.matmul(&a, &a)?;
//! assert_eq!(b.read(&c)?, vec![7.0, 10.0, 15.0, 22.0]);
//!
//! // Element i of a Philox stream, the same on every backend.
//! let z = b.random(&[3], Distribution::Normal, RngStream::new(42, 0))?;
//! assert_eq!(b.read(&z)?[2], RngStream::new(42, 0).normal(2));
//! # Ok::<(), scoredd::Error>(())
//! ```

pub mod backend;
pub mod calibrate;
pub mod config;
pub mod data;
pub mod detect;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod evaluate;
pub mod method;
pub mod metrics;
pub mod model_file;
pub mod nn;
pub mod pipeline;
pub mod plot;
pub mod rng;
pub mod sample;
pub mod sde;
#[cfg(not(target_arch = "wasm32"))]
pub mod synth;
pub mod text;
pub mod tiles;
pub mod toy;
pub mod train;
pub mod viz;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use backend::{Backend, BackendChoice};
pub use error::{Error, Result};
