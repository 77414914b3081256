//! Small differentiable building blocks made of basic candle ops (candle's fused versions of
//! some of these do not backpropagate).

use candle_core::{CpuStorage, DType, Layout, Result, Storage, StorageRef, Tensor, WithDType, D};

/// The elements of a contiguous CPU tensor, as the fused ops' kernels take them; `what`
/// names the op and input in the error.
pub fn contiguous<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// A tensor's storage held for reading by a fused op's CPU kernel (e.g. the output gradient
/// the op keeps); `what` names the op and tensor in errors.
pub struct CpuRead<'a> {
    storage: StorageRef<'a>,
    layout: &'a Layout,
    what: &'a str,
}

/// Holds `t`'s storage for reading; errors later if it is not on the CPU.
pub fn read_cpu<'a>(t: &'a Tensor, what: &'a str) -> CpuRead<'a> {
    let (storage, layout) = t.storage_and_layout();
    CpuRead {
        storage,
        layout,
        what,
    }
}

impl CpuRead<'_> {
    /// The CPU storage and its layout.
    pub fn storage(&self) -> Result<(&CpuStorage, &Layout)> {
        match &*self.storage {
            Storage::Cpu(cs) => Ok((cs, self.layout)),
            _ => candle_core::bail!("{} not on the cpu", self.what),
        }
    }

    /// The elements as f32, if contiguous.
    pub fn f32s(&self) -> Result<&[f32]> {
        let (s, l) = self.storage()?;
        contiguous(s, l, self.what)
    }
}

/// Numerically stable softplus: max(x, 0) + log(1 + exp(-|x|)). Differentiable.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let e = x.abs()?.neg()?.exp()?;
    x.relu()? + (e + 1.0)?.log()?
}

/// x @ w^T for x (.., k) and w (m, k), flattening the leading dims into one matmul.
/// On the CPU in f32 this is one autograd node (see [`crate::layers::linear`]). Weights held
/// in another dtype than x (bf16 for generation) are cast to x's for the product.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if let Some(y) = crate::layers::linear::linear_fused(x, w)? {
        return Ok(y);
    }
    if w.dtype() != x.dtype() {
        return linear(x, &w.to_dtype(x.dtype())?);
    }
    let dims = x.dims();
    let k = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let y = x.reshape((rows, k))?.matmul(&w.t()?)?;
    let mut out = dims[..dims.len() - 1].to_vec();
    out.push(w.dim(0)?);
    y.reshape(out)
}

/// x @ w^T computed in `dt` (inputs and weight cast to it), returned in f32. The casts are
/// differentiable, so the gradients of f32 parameters arrive in f32.
pub fn linear_in(x: &Tensor, w: &Tensor, dt: DType) -> Result<Tensor> {
    linear_as(x, w, dt)?.to_dtype(DType::F32)
}

/// x @ w^T computed and returned in `dt` (inputs and weight cast to it, differentiably).
pub fn linear_as(x: &Tensor, w: &Tensor, dt: DType) -> Result<Tensor> {
    match dt == DType::F32 && x.dtype() == DType::F32 {
        true => linear(x, w),
        false => linear(&x.to_dtype(dt)?, &w.to_dtype(dt)?),
    }
}

/// log-softmax over the last dimension (differentiable; the max is detached, which does not
/// change the value or the gradient).
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let diff = x.broadcast_sub(&max)?;
    let lse = diff.exp()?.sum_keepdim(D::Minus1)?.log()?;
    diff.broadcast_sub(&lse)
}
