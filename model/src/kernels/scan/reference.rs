//! Naive step-by-step selective scan built from basic candle ops: any float dtype (tests run it in
//! f64), differentiable through candle's autograd, O(b * d * n) memory per step. It is the
//! definition the fused op is tested against, not something to train with.

use candle_core::{DType, IndexOp, Result, Tensor};

use super::ScanOptions;
use crate::layers::ops::softplus;

/// Same contract as [`super::selective_scan`], but in any float dtype and slow.
pub fn selective_scan_ref(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: &Tensor,
    opts: &ScanOptions,
) -> Result<Tensor> {
    let (bs, l, di) = u.dims3()?;
    let n = a.dim(1)?;
    let dtype = u.dtype();
    let mut dt = delta.clone();
    if let Some(bias) = opts.delta_bias {
        dt = dt.broadcast_add(bias)?;
    }
    if opts.delta_softplus {
        dt = softplus(&dt)?;
    }
    let keep = match opts.resets {
        Some(r) => Some(r.ne(0f64)?.to_dtype(dtype)?.affine(-1.0, 1.0)?),
        None => None,
    };
    let mut h = Tensor::zeros((bs, di, n), dtype, u.device())?;
    let mut ys = Vec::with_capacity(l);
    for t in 0..l {
        let dt_t = dt.i((.., t, ..))?;
        let u_t = u.i((.., t, ..))?;
        let b_t = b.i((.., t, ..))?;
        let c_t = c.i((.., t, ..))?;
        if let Some(k) = &keep {
            h = h.broadcast_mul(&k.i((.., t))?.reshape((bs, 1, 1))?)?;
        }
        let da = dt_t.unsqueeze(2)?.broadcast_mul(&a.unsqueeze(0)?)?.exp()?;
        let dbu = (&dt_t * &u_t)?
            .unsqueeze(2)?
            .broadcast_mul(&b_t.unsqueeze(1)?)?;
        h = ((da * &h)? + dbu)?;
        let y_t = (h.broadcast_mul(&c_t.unsqueeze(1)?)?.sum(2)? + u_t.broadcast_mul(d)?)?;
        ys.push(y_t);
    }
    let mut y = Tensor::stack(&ys, 1)?;
    if let Some(z) = opts.z {
        y = (y * z.silu()?)?;
    }
    let _ = DType::F32;
    Ok(y)
}
