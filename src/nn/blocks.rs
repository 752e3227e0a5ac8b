//! The U-net's blocks: BigGAN-style residual blocks with a time bias, single-head
//! self-attention, and down/up-sampling. Each forward returns a `…Saved` with
//! what its backward needs.

use std::f32::consts::FRAC_1_SQRT_2;

use super::layers::{Conv, GroupNorm, Linear, NormSaved};
use super::{Grads, ParamSpec, ParamStore};
use crate::backend::{NnBackend, NormAct};
use crate::error::Result;
use crate::rng::RngStream;

fn scale<B: NnBackend>(be: &B, s: f32, x: &B::Tensor) -> Result<B::Tensor> {
    be.axpby(s, x, 0.0, x)
}

/// Everything a block needs besides its input: the activated time embedding
/// (SiLU(temb), `[B, tdim]`), and dropout when training.
pub struct BlockCtx<'a, T> {
    pub temb_act: &'a T,
    /// Dropout probability and the stream its masks come from (training only).
    pub dropout: Option<(f32, RngStream)>,
}

/// GroupNorm → SiLU → conv3×3 → + Dense(SiLU(temb)) → GroupNorm → SiLU →
/// dropout → conv3×3, plus a 1×1 conv on the skip path when channels change;
/// output (skip + h)/√2.
pub struct ResBlock {
    pub name: String,
    norm0: GroupNorm,
    conv0: Conv,
    temb: Linear,
    norm1: GroupNorm,
    conv1: Conv,
    skip: Option<Conv>,
}

/// The norms fuse their SiLU, so the pre-activations are not kept: the
/// backward recomputes them from the norms' inputs and statistics.
pub struct ResSaved<T> {
    x: T,
    n0: NormSaved<T>,
    a0: T,
    n1: NormSaved<T>,
    a1: T,
    mask: Option<T>,
}

impl<T> ResSaved<T> {
    pub fn tensors(&self) -> Vec<&T> {
        let mut v = vec![&self.x, &self.a0, &self.a1];
        v.extend(self.n0.tensors());
        v.extend(self.n1.tensors());
        v.extend(self.mask.as_ref());
        v
    }
}

impl<T> AttnSaved<T> {
    pub fn tensors(&self) -> Vec<&T> {
        let mut v = vec![&self.hn, &self.q, &self.k, &self.v, &self.w, &self.h];
        v.extend(self.n.tensors());
        v
    }
}

impl<T> ResampleSaved<T> {
    pub fn tensors(&self) -> Vec<&T> {
        vec![&self.conv_in]
    }
}

impl ResBlock {
    /// Forward FLOPs per image at `res`×`res` (2·MAC of convs and the time Dense).
    pub fn flops(&self, sh: &[Vec<usize>], res: usize) -> f64 {
        let mut f = self.conv0.flops(sh, 1, res, res) + self.conv1.flops(sh, 1, res, res);
        f += 2.0 * sh[self.temb.weight.0].iter().product::<usize>() as f64;
        if let Some(s) = &self.skip {
            f += s.flops(sh, 1, res, res);
        }
        f
    }

    pub fn new(ps: &mut ParamSpec, name: &str, c_in: usize, c_out: usize, tdim: usize) -> Self {
        ResBlock {
            name: name.to_string(),
            norm0: GroupNorm::new(ps, &format!("{name}.norm0"), c_in),
            conv0: Conv::new(ps, &format!("{name}.conv0"), c_in, c_out, 3, 1, 1.0),
            temb: Linear::new(ps, &format!("{name}.temb"), tdim, c_out),
            norm1: GroupNorm::new(ps, &format!("{name}.norm1"), c_out),
            conv1: Conv::new(ps, &format!("{name}.conv1"), c_out, c_out, 3, 1, 0.0),
            skip: (c_in != c_out)
                .then(|| Conv::new(ps, &format!("{name}.skip"), c_in, c_out, 1, 1, 1.0)),
        }
    }

    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
        ctx: &BlockCtx<B::Tensor>,
    ) -> Result<(B::Tensor, ResSaved<B::Tensor>)> {
        let (a0, n0) = self.norm0.forward_act(be, p, x, NormAct::Silu)?;
        // conv0 + the time embedding, in one pass.
        let tb = self.temb.forward(be, p, ctx.temb_act)?;
        let h1 = self.conv0.forward_fused(be, p, &a0, Some(&tb), None, 1.0)?;
        let (mut a1, n1) = self.norm1.forward_act(be, p, &h1, NormAct::Silu)?;
        let mut mask = None;
        if let Some((rate, rng)) = ctx.dropout {
            if rate > 0.0 {
                let m =
                    be.dropout_mask(be.shape(&a1), rate, rng.derive(self.conv1.weight.0 as u64))?;
                a1 = be.mul(&a1, &m)?;
                mask = Some(m);
            }
        }
        let skip = match &self.skip {
            Some(c) => c.forward(be, p, x)?,
            None => x.clone(),
        };
        // (skip + conv1(a1)) / √2, in the conv's pass over its output.
        let out = self
            .conv1
            .forward_fused(be, p, &a1, None, Some(&skip), FRAC_1_SQRT_2)?;
        Ok((
            out,
            ResSaved {
                x: x.clone(),
                n0,
                a0,
                n1,
                a1,
                mask,
            },
        ))
    }

    /// Returns (dx, d temb_act).
    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        s: &ResSaved<B::Tensor>,
        temb_act: &B::Tensor,
        dout: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<(B::Tensor, B::Tensor)> {
        // out = (skip + h)/√2: backpropagate dout itself, scale what leaves.
        let (dx, dskip, dtemb) = g.scaled(FRAC_1_SQRT_2, |g| -> Result<_> {
            let mut da1 = self.conv1.backward(be, p, &s.a1, dout, g)?;
            if let Some(m) = &s.mask {
                da1 = be.mul(&da1, m)?;
            }
            let dh1 = self.norm1.backward(be, p, &s.n1, &da1, g)?;
            let dtb = be.sample_bias_grad(&dh1)?;
            let dtemb = self.temb.backward(be, p, temb_act, &dtb, g)?;
            let da0 = self.conv0.backward(be, p, &s.a0, &dh1, g)?;
            let dx = self.norm0.backward(be, p, &s.n0, &da0, g)?;
            let dskip = match &self.skip {
                Some(c) => Some(c.backward(be, p, &s.x, dout, g)?),
                None => None,
            };
            Ok((dx, dskip, dtemb))
        })?;
        let dskip = dskip.as_ref().unwrap_or(dout);
        let dx = be.axpby(FRAC_1_SQRT_2, &dx, FRAC_1_SQRT_2, dskip)?;
        Ok((dx, scale(be, FRAC_1_SQRT_2, &dtemb)?))
    }
}

/// GroupNorm → q, k, v (1×1) → softmax(qᵀk/√C) → v·wᵀ → proj (1×1); output (x + h)/√2.
pub struct AttnBlock {
    pub name: String,
    norm: GroupNorm,
    q: Conv,
    k: Conv,
    v: Conv,
    proj: Conv,
}

pub struct AttnSaved<T> {
    n: NormSaved<T>,
    hn: T,
    q: T,
    k: T,
    v: T,
    w: T,
    h: T,
}

impl AttnBlock {
    /// Forward FLOPs per image: four 1×1 convs and the two HW×HW×C matmuls.
    pub fn flops(&self, sh: &[Vec<usize>], res: usize) -> f64 {
        let c = sh[self.q.weight.0][0] as f64;
        let hw = (res * res) as f64;
        [&self.q, &self.k, &self.v, &self.proj]
            .iter()
            .map(|cv| cv.flops(sh, 1, res, res))
            .sum::<f64>()
            + 4.0 * hw * hw * c
    }

    pub fn new(ps: &mut ParamSpec, name: &str, c: usize) -> Self {
        AttnBlock {
            name: name.to_string(),
            norm: GroupNorm::new(ps, &format!("{name}.norm"), c),
            q: Conv::new(ps, &format!("{name}.q"), c, c, 1, 1, 1.0),
            k: Conv::new(ps, &format!("{name}.k"), c, c, 1, 1, 1.0),
            v: Conv::new(ps, &format!("{name}.v"), c, c, 1, 1, 1.0),
            proj: Conv::new(ps, &format!("{name}.proj"), c, c, 1, 1, 0.0),
        }
    }

    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
    ) -> Result<(B::Tensor, AttnSaved<B::Tensor>)> {
        let shape = be.shape(x).to_vec();
        let (b, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
        let flat = [b, c, hw];
        let (hn, n) = self.norm.forward(be, p, x)?;
        let q = be.reshape(&self.q.forward(be, p, &hn)?, &flat)?;
        let k = be.reshape(&self.k.forward(be, p, &hn)?, &flat)?;
        let v = be.reshape(&self.v.forward(be, p, &hn)?, &flat)?;
        let scores = scale(be, (c as f32).powf(-0.5), &be.bmm(&q, &k, true, false)?)?;
        let w = be.softmax(&scores)?;
        let h = be.reshape(&be.bmm(&v, &w, false, true)?, &shape)?;
        let out = self
            .proj
            .forward_fused(be, p, &h, None, Some(x), FRAC_1_SQRT_2)?;
        Ok((
            out,
            AttnSaved {
                n,
                hn,
                q,
                k,
                v,
                w,
                h,
            },
        ))
    }

    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        s: &AttnSaved<B::Tensor>,
        dout: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<B::Tensor> {
        let shape = be.shape(&s.h).to_vec();
        let c = shape[1];
        let flat = be.shape(&s.q).to_vec();
        // out = (x + h)/√2: backpropagate dout itself, scale what leaves.
        let dx = g.scaled(FRAC_1_SQRT_2, |g| -> Result<_> {
            let dh = be.reshape(&self.proj.backward(be, p, &s.h, dout, g)?, &flat)?;
            // h = v·wᵀ: dv = dh·w, dw = dhᵀ·v.
            let dv = be.bmm(&dh, &s.w, false, false)?;
            let dw = be.bmm(&dh, &s.v, true, false)?;
            let ds = scale(be, (c as f32).powf(-0.5), &be.softmax_backward(&s.w, &dw)?)?;
            // scores = qᵀ·k: dq = k·dsᵀ, dk = q·ds.
            let dq = be.bmm(&s.k, &ds, false, true)?;
            let dk = be.bmm(&s.q, &ds, false, false)?;
            // q, k and v all read hn: their input gradients add up.
            let mut dhn = self
                .q
                .backward(be, p, &s.hn, &be.reshape(&dq, &shape)?, g)?;
            for (conv, d) in [(&self.k, &dk), (&self.v, &dv)] {
                let dpart = conv.backward(be, p, &s.hn, &be.reshape(d, &shape)?, g)?;
                dhn = be.axpby(1.0, &dhn, 1.0, &dpart)?;
            }
            self.norm.backward(be, p, &s.n, &dhn, g)
        })?;
        be.axpby(FRAC_1_SQRT_2, &dx, FRAC_1_SQRT_2, dout)
    }
}

pub use crate::config::Resample;

pub struct Downsample {
    kind: Resample,
    conv: Conv,
}

pub struct ResampleSaved<T> {
    conv_in: T,
}

impl Downsample {
    /// FLOPs per image of the conv, whose output is `res_out`².
    pub fn flops(&self, sh: &[Vec<usize>], res_out: usize) -> f64 {
        self.conv.flops(sh, 1, res_out, res_out)
    }

    pub fn new(ps: &mut ParamSpec, name: &str, c: usize, kind: Resample) -> Self {
        let stride = if kind == Resample::Conv { 2 } else { 1 };
        Downsample {
            kind,
            conv: Conv::new(ps, &format!("{name}.conv"), c, c, 3, stride, 1.0),
        }
    }

    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
    ) -> Result<(B::Tensor, ResampleSaved<B::Tensor>)> {
        let conv_in = match self.kind {
            Resample::Conv => x.clone(),
            Resample::Fir => be.fir_down(x)?,
            Resample::Avg => be.avgpool2x(x)?,
        };
        Ok((
            self.conv.forward(be, p, &conv_in)?,
            ResampleSaved { conv_in },
        ))
    }

    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        s: &ResampleSaved<B::Tensor>,
        dy: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<B::Tensor> {
        let d = self.conv.backward(be, p, &s.conv_in, dy, g)?;
        match self.kind {
            Resample::Conv => Ok(d),
            Resample::Fir => be.fir_down_backward(&d),
            // avgpool's adjoint is upsample/4.
            Resample::Avg => scale(be, 0.25, &be.upsample2x(&d)?),
        }
    }
}

pub struct Upsample {
    kind: Resample,
    conv: Conv,
}

impl Upsample {
    pub fn flops(&self, sh: &[Vec<usize>], res_out: usize) -> f64 {
        self.conv.flops(sh, 1, res_out, res_out)
    }

    pub fn new(ps: &mut ParamSpec, name: &str, c: usize, kind: Resample) -> Self {
        Upsample {
            kind,
            conv: Conv::new(ps, &format!("{name}.conv"), c, c, 3, 1, 1.0),
        }
    }

    pub fn forward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        x: &B::Tensor,
    ) -> Result<(B::Tensor, ResampleSaved<B::Tensor>)> {
        let conv_in = match self.kind {
            Resample::Conv | Resample::Avg => be.upsample2x(x)?,
            Resample::Fir => be.fir_up(x)?,
        };
        Ok((
            self.conv.forward(be, p, &conv_in)?,
            ResampleSaved { conv_in },
        ))
    }

    pub fn backward<B: NnBackend>(
        &self,
        be: &B,
        p: &ParamStore<B::Tensor>,
        s: &ResampleSaved<B::Tensor>,
        dy: &B::Tensor,
        g: &mut Grads<B::Tensor>,
    ) -> Result<B::Tensor> {
        let d = self.conv.backward(be, p, &s.conv_in, dy, g)?;
        match self.kind {
            // nearest ×2's adjoint sums each 2×2 block: 4·avgpool.
            Resample::Conv | Resample::Avg => scale(be, 4.0, &be.avgpool2x(&d)?),
            Resample::Fir => be.fir_up_backward(&d),
        }
    }
}
