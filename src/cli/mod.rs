//! The subcommands, one module each.

pub mod sample;
pub mod toy;
pub mod train;

use scoredd::backend::Sampler;

pub fn sampler_name(s: Sampler) -> &'static str {
    match s {
        Sampler::Ode => "ode",
        Sampler::Sde => "sde",
    }
}
