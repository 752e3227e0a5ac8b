//! Parametrised layers. Each `forward` returns its output and what its
//! `backward` needs; `backward` takes that and the upstream gradient, adds the
//! parameter gradients to [`Grads`] and returns the input gradient.

use super::{Grads, Init, ParamId, ParamSpec, ParamStore};
use crate::backend::{Conv2dSpec, ConvEpilogue, NnBackend, NormAct};
use crate::error::Result;

/// 2-D convolution with bias (square kernel, "same" padding for 3×3).
#[derive(Clone, Debug)]
pub struct Conv {
    pub weight: ParamId,
    pub bias: ParamId,
    pub spec: Conv2dSpec,
}

impl Conv {
    /// `init_scale` as in NCSN++: 1 for most convs, ~0 for the last conv of a
    /// residual branch so each block starts as the identity.
    pub fn new(
        ps: &mut ParamSpec,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        init_scale: f32,
    ) -> Self {
        let fan_in = c_in * k * k;
        let fan_out = c_out * k * k;
        Conv {
            weight: ps.add(
                format!("{name}.weight"),
                vec![c_out, c_in, k, k],
                Init::FanAvg {
                    scale: init_scale,
                    fan_in,
                    fan_out,
                },
            ),
            bias: ps.add(format!("{name}.bias"), vec![c_out], Init::Zeros),
            spec: Conv2dSpec::new(stride, k / 2),
        }
    }

    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
    ) -> Result<B::Tensor> {
        be.conv2d(x, p.get(self.weight), Some(p.get(self.bias)), self.spec)
    }

    /// `scale·(conv(x) + sample_bias + residual)` in one pass over the output
    /// (see [`crate::backend::ConvEpilogue`]); its backward is
    /// [`Conv::backward`] of `scale·dy`.
    pub fn forward_fused<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
        sample_bias: Option<&B::Tensor>,
        residual: Option<&B::Tensor>,
        scale: f32,
    ) -> Result<B::Tensor> {
        let epilogue = ConvEpilogue {
            bias: p.get(self.bias),
            sample_bias,
            residual,
            scale,
        };
        be.conv2d_fused(x, p.get(self.weight), epilogue, self.spec)
    }

    /// `x` is the forward input.
    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
        dy: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<B::Tensor> {
        let grads = be.conv2d_backward(x, p.get(self.weight), dy, self.spec)?;
        g.add(be, self.weight, grads.dw)?;
        g.add(be, self.bias, grads.db)?;
        Ok(grads.dx)
    }

    pub fn flops(&self, p_shapes: &[Vec<usize>], batch: usize, h_out: usize, w_out: usize) -> f64 {
        let w = &p_shapes[self.weight.0];
        2.0 * (batch * w[0] * h_out * w_out) as f64 * (w[1] * w[2] * w[3]) as f64
    }
}

/// y = x·Wᵀ + b for `x: [B, in]`, `W: [out, in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: ParamId,
    pub bias: ParamId,
}

impl Linear {
    pub fn new(ps: &mut ParamSpec, name: &str, n_in: usize, n_out: usize) -> Self {
        Linear {
            weight: ps.add(
                format!("{name}.weight"),
                vec![n_out, n_in],
                Init::FanAvg {
                    scale: 1.0,
                    fan_in: n_in,
                    fan_out: n_out,
                },
            ),
            bias: ps.add(format!("{name}.bias"), vec![n_out], Init::Zeros),
        }
    }

    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
    ) -> Result<B::Tensor> {
        let y = be.bmm(x, p.get(self.weight), false, true)?;
        be.add_bias(&y, p.get(self.bias))
    }

    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
        dy: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<B::Tensor> {
        // dW = dyᵀ·x, db = Σ_b dy, dx = dy·W.
        g.add(be, self.weight, be.bmm(dy, x, true, false)?)?;
        g.add(be, self.bias, be.bias_grad(dy)?)?;
        be.bmm(dy, p.get(self.weight), false, false)
    }
}

/// GroupNorm with min(C/4, 32) groups and eps 1e-6, as in NCSN++.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    pub gamma: ParamId,
    pub beta: ParamId,
    pub groups: usize,
}

pub const GROUP_NORM_EPS: f32 = 1e-6;

/// NCSN++'s group count for `c` channels.
pub fn group_count(c: usize) -> usize {
    (c / 4).clamp(1, 32)
}

/// What a GroupNorm backward needs.
pub struct NormSaved<T> {
    pub x: T,
    pub stats: T,
    /// Whether the forward fused a SiLU after the norm.
    pub act: NormAct,
}

impl<T> NormSaved<T> {
    pub fn tensors(&self) -> Vec<&T> {
        vec![&self.x, &self.stats]
    }
}

impl GroupNorm {
    pub fn new(ps: &mut ParamSpec, name: &str, c: usize) -> Self {
        GroupNorm {
            gamma: ps.add(format!("{name}.weight"), vec![c], Init::Ones),
            beta: ps.add(format!("{name}.bias"), vec![c], Init::Zeros),
            groups: group_count(c),
        }
    }

    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
    ) -> Result<(B::Tensor, NormSaved<B::Tensor>)> {
        self.forward_act(be, p, x, NormAct::Identity)
    }

    /// The norm, followed by `act` in the same pass (the U-net's norm → SiLU
    /// pairs: one pass over memory, and no pre-activation kept).
    pub fn forward_act<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
        act: NormAct,
    ) -> Result<(B::Tensor, NormSaved<B::Tensor>)> {
        let (gamma, beta) = (p.get(self.gamma), p.get(self.beta));
        let out = match act {
            NormAct::Identity => be.group_norm(x, gamma, beta, self.groups, GROUP_NORM_EPS)?,
            NormAct::Silu => be.group_norm_silu(x, gamma, beta, self.groups, GROUP_NORM_EPS)?,
        };
        let saved = NormSaved {
            x: x.clone(),
            stats: out.stats,
            act,
        };
        Ok((out.y, saved))
    }

    /// The input gradient (parameter gradients into `g`), for either form.
    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        saved: &NormSaved<B::Tensor>,
        dy: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<B::Tensor> {
        let (gamma, beta) = (p.get(self.gamma), p.get(self.beta));
        let (x, stats) = (&saved.x, &saved.stats);
        let gr = match saved.act {
            NormAct::Identity => be.group_norm_backward(x, gamma, stats, dy, self.groups)?,
            NormAct::Silu => be.group_norm_silu_backward(x, gamma, beta, stats, dy, self.groups)?,
        };
        g.add(be, self.gamma, gr.dgamma)?;
        g.add(be, self.beta, gr.dbeta)?;
        Ok(gr.dx)
    }
}
