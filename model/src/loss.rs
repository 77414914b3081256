//! Cross-entropy that backpropagates (candle's softmax_last_dim has no backward).

use candle_core::{DType, Result, Tensor, D};

use crate::ops::log_softmax_last;

/// Mean cross-entropy. `logits`: (.., V) float; `targets`: same leading shape, u32 in [0, V);
/// `mask`: optional, same shape as targets, positions with 0 are ignored (mean over the rest).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?;
    if targets.dim(0)? != logits.dim(0)? {
        candle_core::bail!(
            "cross_entropy: {} targets for {} positions",
            targets.dim(0)?,
            logits.dim(0)?
        )
    }
    let logp = log_softmax_last(&logits)?;
    let nll = logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    match mask {
        None => nll.mean_all(),
        Some(m) => {
            let m = m.flatten_all()?.to_dtype(logits.dtype())?;
            let denom = m.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?.max(1.0);
            (nll * m)?.sum_all()? / denom
        }
    }
}
