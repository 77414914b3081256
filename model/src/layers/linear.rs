//! `x @ w^T` as one autograd node on the CPU. Built from reshape + transpose + matmul, every
//! linear layer adds three more nodes to candle's graph, and candle accumulates each node's
//! gradient as zeros + add; as one custom op with its own backward the activations' gradients
//! pass through a single accumulation and no transposed copy of `w` is made.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// x @ w^T for x (.., k) f32 and w (n, k) f32, bf16 or f16 on the CPU, as one op; `None` if
/// the inputs are not of that kind (the caller falls back to basic ops). A half-precision
/// weight is widened inside the op, forward and backward alike, so no f32 copy of it outlives
/// the product (a frozen bf16 base under adapters).
pub(crate) fn linear_fused(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if !(crate::kernels::cpu_fused(x.device())
        && x.dtype() == DType::F32
        && is_float_weight(w.dtype()))
    {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    if x.dims().last() != Some(&k) {
        candle_core::bail!("linear: input {:?} for weight {:?}", x.dims(), [n, k])
    }
    Ok(Some(x.contiguous()?.apply_op2(&w.contiguous()?, LinearOp)?))
}

/// A weight dtype the CPU ops widen to f32 inside themselves.
pub(crate) fn is_float_weight(dt: DType) -> bool {
    matches!(dt, DType::F32 | DType::BF16 | DType::F16)
}

/// A weight's storage and layout as f32: itself, or a widened contiguous copy.
pub(crate) fn f32_weight<'a>(
    s: &'a CpuStorage,
    l: &'a Layout,
) -> Result<(std::borrow::Cow<'a, CpuStorage>, Layout)> {
    match s {
        CpuStorage::F32(_) => Ok((std::borrow::Cow::Borrowed(s), l.clone())),
        _ => Ok((
            std::borrow::Cow::Owned(s.to_dtype(l, DType::F32)?),
            Layout::contiguous(l.shape()),
        )),
    }
}

/// The gradient of `x @ w^T` with respect to `w` when `w` is trained (`None` for a frozen
/// weight, which is not a variable: nothing would read it), and the weight in f32 for the
/// gradient of `x`.
pub(crate) fn weight_for_backward(w: &Tensor) -> Result<(Tensor, bool)> {
    Ok((w.detach().to_dtype(DType::F32)?, w.track_op()))
}

/// Layouts of the 2-d product `x (m, k) @ w^T (k, n)` over the storages' own offsets.
pub(crate) fn matmul_xwt(
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
) -> Result<(CpuStorage, usize, usize)> {
    let (n, k) = wl.shape().dims2()?;
    let m = xl.shape().elem_count() / k.max(1);
    let Some((xo, _)) = xl.contiguous_offsets() else {
        candle_core::bail!("linear: input must be contiguous")
    };
    let lhs = Layout::contiguous_with_offset((m, k), xo);
    let rhs = wl.transpose(0, 1)?;
    Ok((xs.matmul(ws, (1, m, n, k), &lhs, &rhs)?, m, n))
}

struct LinearOp;

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (s2, l2) = f32_weight(s2, l2)?;
        let (out, _, n) = matmul_xwt(s1, l1, &s2, &l2)?;
        let mut dims = l1.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, (w, trained)) = (x.detach(), weight_for_backward(w)?);
        let (n, k) = w.dims2()?;
        let m = x.elem_count() / k.max(1);
        let g = grad.contiguous()?.reshape((m, n))?;
        let dx = g.matmul(&w)?.reshape(x.shape())?;
        let dw = match trained {
            true => Some(g.t()?.matmul(&x.reshape((m, k))?)?),
            false => None,
        };
        Ok((Some(dx), dw))
    }
}

/// x @ w^T + down @ b^T as one op, for a frozen `w` under a LoRA adapter (`down` = s x A^T,
/// (.., r); `b`, (n, r)), f32 on the CPU; `None` otherwise. Backward keeps x, down and b only:
/// as separate ops the two products and their sum would each stay alive for it.
pub(crate) fn linear_lora(
    x: &Tensor,
    w: &Tensor,
    down: &Tensor,
    b: &Tensor,
) -> Result<Option<Tensor>> {
    let f32s = [x, down, b].iter().all(|t| t.dtype() == DType::F32);
    // A trained `w` would get no gradient here: those take the separate ops.
    if !(crate::kernels::cpu_fused(x.device())
        && f32s
        && is_float_weight(w.dtype())
        && !w.track_op())
    {
        return Ok(None);
    }
    let op = LoraLinear { w: w.contiguous()? };
    Ok(Some(x.contiguous()?.apply_op3(
        &down.contiguous()?,
        &b.contiguous()?,
        op,
    )?))
}

struct LoraLinear {
    w: Tensor,
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "linear-lora"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let w = crate::layers::ops::read_cpu(&self.w, "linear-lora weight");
        let (ws, wl) = w.storage()?;
        let (ws, wl) = f32_weight(ws, wl)?;
        let (y, _, n) = matmul_xwt(xs, xl, &ws, &wl)?;
        let (d, _, _) = matmul_xwt(ds, dl, bs, bl)?;
        let (CpuStorage::F32(mut y), CpuStorage::F32(d)) = (y, d) else {
            candle_core::bail!("linear-lora: products are not f32")
        };
        y.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        let mut dims = xl.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        down: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (w, _) = weight_for_backward(&self.w)?;
        let (x, down, b) = (x.detach(), down.detach(), b.detach());
        let (n, k) = w.dims2()?;
        let r = b.dim(1)?;
        let m = x.elem_count() / k.max(1);
        let g = grad.contiguous()?.reshape((m, n))?;
        let dx = g.matmul(&w)?.reshape(x.shape())?;
        let ddown = g.matmul(&b)?.reshape(down.shape())?;
        let db = g.t()?.matmul(&down.reshape((m, r))?)?;
        Ok((Some(dx), Some(ddown), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        let n: usize = shape.iter().product();
        (0..n)
            .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn matches_matmul_in_value_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(rand(&[2, 5, 7], 1), (2, 5, 7), &dev)?;
        // A narrowed weight (non-zero offset), as the mixer's in_proj halves are.
        let wfull = Var::from_vec(rand(&[9, 7], 2), (9, 7), &dev)?;
        let w = wfull.narrow(0, 3, 6)?;
        let fused = linear_fused(x.as_tensor(), &w)?.expect("cpu f32 takes the fused path");
        let plain = x.reshape((10, 7))?.matmul(&w.t()?)?.reshape((2, 5, 6))?;
        let diff = (&fused - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let coef = Tensor::from_vec(rand(&[2, 5, 6], 3), (2, 5, 6), &dev)?;
        let gf = (fused * &coef)?.sum_all()?.backward()?;
        let gp = (plain * &coef)?.sum_all()?.backward()?;
        for v in [x.as_tensor(), wfull.as_tensor()] {
            let a = gf.get(v).expect("fused gradient");
            let b = gp.get(v).expect("plain gradient");
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "gradient differs by {d}");
        }
        Ok(())
    }

    #[test]
    fn lora_linear_matches_separate_ops_over_a_frozen_half_weight() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(rand(&[2, 5, 7], 4), (2, 5, 7), &dev)?;
        let down = Var::from_vec(rand(&[2, 5, 3], 5), (2, 5, 3), &dev)?;
        let b = Var::from_vec(rand(&[6, 3], 6), (6, 3), &dev)?;
        let w = Tensor::from_vec(rand(&[6, 7], 7), (6, 7), &dev)?.to_dtype(DType::BF16)?;
        let fused = linear_lora(&x, &w, &down, &b)?.expect("cpu f32 takes the fused path");
        let wf = w.to_dtype(DType::F32)?;
        let plain = (x.reshape((10, 7))?.matmul(&wf.t()?)?
            + down.reshape((10, 3))?.matmul(&b.t()?)?)?
        .reshape((2, 5, 6))?;
        let diff = (&fused - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let coef = Tensor::from_vec(rand(&[2, 5, 6], 8), (2, 5, 6), &dev)?;
        let gf = (fused * &coef)?.sum_all()?.backward()?;
        let gp = (plain * &coef)?.sum_all()?.backward()?;
        for v in [x.as_tensor(), down.as_tensor(), b.as_tensor()] {
            let d = (gf.get(v).unwrap() - gp.get(v).unwrap())?
                .abs()?
                .max_all()?;
            assert!(d.to_scalar::<f32>()? < 1e-5, "gradient differs");
        }
        assert!(gf.get(&w).is_none(), "the frozen weight gets no gradient");
        Ok(())
    }
}
