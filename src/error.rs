//! The library's error type. Every fallible public function returns [`Result`];
//! the CLI turns these into explanations, the library never panics on bad input.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// Operands whose shapes do not fit the op.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A request larger than the device (or the address space) can hold.
    #[error("{op}: {bytes} bytes requested, but the {what} limit is {limit} bytes")]
    TooLarge {
        op: &'static str,
        bytes: u64,
        what: &'static str,
        limit: u64,
    },

    /// An argument outside its valid range (a negative step count, σmin ≥ σmax …).
    #[error("invalid argument: {0}")]
    Invalid(String),

    /// No GPU adapter could be found (or none matching the request).
    #[error("no GPU adapter found{0}")]
    NoAdapter(String),

    /// The adapter refused to give us a device (missing limits or features).
    #[error("could not open the GPU device: {0}")]
    RequestDevice(String),

    /// The GPU ran out of memory while allocating or executing.
    #[error("GPU out of memory during {0}")]
    OutOfMemory(String),

    /// The device was lost (driver reset, GPU removed, browser tab backgrounded …).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    /// wgpu reported a validation or internal error. This is a bug in scoredd.
    #[error("GPU error during {op}: {detail}")]
    Gpu { op: String, detail: String },

    /// Reading results back from the GPU failed.
    #[error("GPU readback failed: {0}")]
    Readback(String),

    /// Training produced a non-finite loss or gradient.
    #[error("training diverged at step {step}: {detail}")]
    Diverged { step: u64, detail: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A model file that cannot be read or does not describe a valid model.
    #[error("model file {path}: {detail}")]
    ModelFile { path: String, detail: String },

    #[error("image error on {path}: {detail}")]
    Image { path: String, detail: String },

    /// Drawing a chart failed (plotters reported an error while laying out or
    /// rasterising it).
    #[error("drawing {what}: {detail}")]
    Draw { what: &'static str, detail: String },
}

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }
}
