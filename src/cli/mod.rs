//! The subcommands, one module each.

pub mod bench;
pub mod calibrate;
pub mod console;
pub mod demo;
pub mod detect;
pub mod eval;
pub mod sample;
pub mod synth;
pub mod toy;
pub mod train;

use scoredd::backend::Sampler;

pub fn sampler_name(s: Sampler) -> &'static str {
    match s {
        Sampler::Ode => "ode",
        Sampler::Sde => "sde",
    }
}
