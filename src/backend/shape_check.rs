//! Shape validation shared by both backends' layer ops, so the CPU oracle and
//! the GPU kernels accept and refuse exactly the same inputs.

use super::numel;
use crate::error::{Error, Result};

/// `[B, C, …]` → (B, C, elements per channel plane).
pub(crate) fn channel_dims(op: &'static str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::shape(
            op,
            format!("{shape:?}: need at least [batch, channels]"),
        ));
    }
    numel(op, shape)?;
    // Row lengths C·S are used even when B = 0.
    numel(op, &shape[1..])?;
    Ok((shape[0], shape[1], numel(op, &shape[2..])?))
}

/// `[B, C, H, W]` → (B·C, H, W).
pub(crate) fn image_dims(op: &'static str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    if shape.len() != 4 {
        return Err(Error::shape(
            op,
            format!("{shape:?}: need a 4-D [B, C, H, W] tensor"),
        ));
    }
    numel(op, shape)?;
    Ok((shape[0] * shape[1], shape[2], shape[3]))
}

pub(crate) fn same_shape(op: &'static str, what: &str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("{what}: {a:?} vs {b:?}")));
    }
    Ok(())
}

/// Channels per group, checking that `groups` divides `c`.
pub(crate) fn group_size(op: &'static str, c: usize, groups: usize) -> Result<usize> {
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::shape(
            op,
            format!("{c} channels cannot form {groups} equal groups"),
        ));
    }
    Ok(c / groups)
}

/// `[2N, C, H, W]` (a batch of pairs) → (N, C, H·W).
pub(crate) fn pair_dims(op: &'static str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    image_dims(op, shape)?;
    if !shape[0].is_multiple_of(2) {
        return Err(Error::shape(
            op,
            format!("{shape:?}: the batch must hold pairs (an even count)"),
        ));
    }
    Ok((shape[0] / 2, shape[1], shape[2] * shape[3]))
}
