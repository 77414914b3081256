//! Causal depthwise conv1d written as shifted slices (candle's grouped conv1d runs one
//! convolution per channel), with document resets: the window never reaches back past the start
//! of the current document.

use candle_core::{DType, IndexOp, Result, Tensor};

/// Per-shift validity masks derived from a reset mask: `masks[s - 1][b, t] = 1` when x[t - s]
/// belongs to the same document as x[t], for s = 1 .. d_conv - 1. Shape of each: (b, l, 1), f32.
#[derive(Clone, Debug)]
pub struct ConvMask {
    masks: Vec<Tensor>,
}

impl ConvMask {
    /// `resets`: (b, l), nonzero at the first position of a document.
    pub fn new(resets: &Tensor, d_conv: usize) -> Result<Self> {
        let (b, l) = resets.dims2()?;
        let r = resets.ne(0f64)?.to_dtype(DType::U8)?.to_vec2::<u8>()?;
        let mut masks = Vec::with_capacity(d_conv.saturating_sub(1));
        for s in 1..d_conv {
            let mut m = vec![0f32; b * l];
            for (bi, row) in r.iter().enumerate() {
                let mut start = 0usize;
                for t in 0..l {
                    if row[t] != 0 {
                        start = t;
                    }
                    m[bi * l + t] = if t >= s && t - s >= start { 1.0 } else { 0.0 };
                }
            }
            masks.push(Tensor::from_vec(m, (b, l, 1), resets.device())?);
        }
        Ok(ConvMask { masks })
    }

    /// Mask for shift `s` (1-based).
    pub fn shift(&self, s: usize) -> &Tensor {
        &self.masks[s - 1]
    }
}

/// y[b, t, c] = bias[c] + sum_k w[c, 0, k] * x[b, t - (K - 1 - k), c], zero before the sequence
/// (and before the document start when `mask` is given). x: (b, l, d), w: (d, 1, K), bias: (d).
pub fn causal_conv1d(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    mask: Option<&ConvMask>,
) -> Result<Tensor> {
    let (_b, l, _d) = x.dims3()?;
    let k = w.dim(2)?;
    let xpad = if k > 1 { x.pad_with_zeros(1, k - 1, 0)? } else { x.clone() };
    let mut acc = x.broadcast_mul(&w.i((.., 0, k - 1))?)?.broadcast_add(bias)?;
    for j in 0..k - 1 {
        let s = k - 1 - j;
        let mut term = xpad.narrow(1, j, l)?.broadcast_mul(&w.i((.., 0, j))?)?;
        if let Some(m) = mask {
            term = term.broadcast_mul(m.shift(s))?;
        }
        acc = (acc + term)?;
    }
    Ok(acc)
}
