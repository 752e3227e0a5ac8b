//! The core of Score-DD, written once over any [`Backend`] and any score:
//! noise a batch to per-sample times, walk back r steps along two paths — the
//! learned ("whole") score and the sample's own analytic score −z/σ — and
//! compare. The U-net detector and the exact-score toy both run through here.

use crate::backend::{Backend, PairedState, Sampler, ScoreDdOps};
use crate::error::{Error, Result};
use crate::rng::RngStream;
use crate::sde::Sde;

/// A score function s(x, t) ≈ ∇ₓ log p_t(x), evaluated on a batch with one t per sample.
pub trait ScoreFn<B: Backend> {
    fn score(&self, backend: &B, x: &B::Tensor, t: &[f64]) -> Result<B::Tensor>;
}

/// Called with (step index, state) during a paired run.
pub type Observer<'a, T> = dyn FnMut(usize, &PairedState<T>) -> Result<()> + 'a;

/// Random-stream tags: the perturbation and each reverse step draw from their
/// own derived stream, and each sample from its own stream within those.
const PERTURB_TAG: u64 = 0;
const STEP_TAG_BASE: u64 = 1;

/// Where a paired run ended: the state at t_r and each sample's t_r.
pub struct PairedRun<T> {
    pub state: PairedState<T>,
    pub t_end: Vec<f64>,
}

/// Noises every sample of `x0` to its own `t[i]` and takes `r` paired reverse
/// steps of Δt = 1/N (the last one shortened so no sample passes the SDE's ε).
///
/// `streams[i]` names sample i's random stream: the same (seed, stream) gives the
/// same noise whatever batch the sample travels in and on every backend.
#[allow(clippy::too_many_arguments)]
pub fn paired_reverse<B: ScoreDdOps, S: ScoreFn<B> + ?Sized>(
    backend: &B,
    sde: &dyn Sde,
    score: &S,
    x0: &B::Tensor,
    t: &[f64],
    r: usize,
    sampler: Sampler,
    rng: RngStream,
    streams: &[u64],
) -> Result<PairedRun<B::Tensor>> {
    paired_reverse_observed(
        backend,
        sde,
        score,
        x0,
        t,
        r,
        sampler,
        rng,
        streams,
        &mut |_, _| Ok(()),
    )
}

/// [`paired_reverse`], calling `observe(i, state)` after the perturbation (i = 0)
/// and after every step (i = 1..=r) — for plots of the trajectories.
#[allow(clippy::too_many_arguments)]
pub fn paired_reverse_observed<B: ScoreDdOps, S: ScoreFn<B> + ?Sized>(
    backend: &B,
    sde: &dyn Sde,
    score: &S,
    x0: &B::Tensor,
    t: &[f64],
    r: usize,
    sampler: Sampler,
    rng: RngStream,
    streams: &[u64],
    observe: &mut Observer<B::Tensor>,
) -> Result<PairedRun<B::Tensor>> {
    if t.len() != streams.len() {
        return Err(Error::Invalid(format!(
            "{} times but {} streams",
            t.len(),
            streams.len()
        )));
    }
    if let Some(bad) = t.iter().find(|t| !(**t > sde.eps() && **t <= 1.0)) {
        return Err(Error::Invalid(format!(
            "start time {bad} outside ({}, 1]",
            sde.eps()
        )));
    }
    let coef: Vec<_> = t
        .iter()
        .zip(streams)
        .map(|(&t, &s)| sde.perturb_coef(t, s))
        .collect();
    let (xt, z) = backend.perturb(x0, &coef, rng.derive(PERTURB_TAG))?;
    let mut state = PairedState {
        x0: x0.clone(),
        whole: xt.clone(),
        own: xt,
        z,
    };
    observe(0, &state)?;
    let mut now = t.to_vec();
    let dt = sde.dt();
    for i in 0..r {
        let s = score.score(backend, &state.whole, &now)?;
        let steps: Vec<_> = now
            .iter()
            .zip(streams)
            .map(|(&ti, &st)| sde.step_coef(ti, ti - (ti - dt).max(sde.eps()), st))
            .collect();
        backend.paired_step(
            &mut state,
            &s,
            &steps,
            sampler,
            rng.derive(STEP_TAG_BASE + i as u64),
        )?;
        for ti in now.iter_mut() {
            *ti = (*ti - dt).max(sde.eps());
        }
        observe(i + 1, &state)?;
    }
    Ok(PairedRun { state, t_end: now })
}
