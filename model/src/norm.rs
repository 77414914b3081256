//! RMSNorm built from basic ops (candle_nn::RmsNorm does not backpropagate).

use candle_core::{Result, Tensor, D};

/// x / sqrt(mean(x^2, last dim) + eps) * weight, in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}
