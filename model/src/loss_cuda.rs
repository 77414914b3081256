//! CUDA side of the cross-entropy op (`loss.rs` holds the op and its CPU kernels): `loss.cu`
//! compiled at run time with NVRTC, one warp per row.

use candle_core::cuda_backend::cudarc::driver::{CudaView, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

use crate::kernels::nvrtc::{int, view, warps, Kernels};

static KERNELS: Kernels = Kernels::new(include_str!("loss.cu"), "cross-entropy", "cross_entropy");

/// The kernels as PTX, or NVRTC's log if they do not compile.
pub fn ptx() -> std::result::Result<&'static str, String> {
    KERNELS.ptx()
}

/// (rows, vocabulary) of logits laid out as `l`, and the same as the kernels' ints.
fn sizes(l: &Layout) -> Result<(usize, i32, i32)> {
    let (n, v) = l.shape().dims2()?;
    Ok((n, int(n, "cross_entropy")?, int(v, "cross_entropy")?))
}

fn targets<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, u32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<u32>()?.slice(a..b)),
        None => candle_core::bail!("cross_entropy: targets must be contiguous"),
    }
}

/// The nll (N) of each row of logits x (N, V) at targets t (N).
pub fn forward(
    x: (&CudaStorage, &Layout),
    t: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (n, ni, vi) = sizes(x.1)?;
    let xs = view(x.0, x.1, "cross_entropy: logits")?;
    let ts = targets(t.0, t.1)?;
    let mut out = dev.alloc_zeros::<f32>(n.max(1))?;
    if n > 0 {
        let func = KERNELS.func(&dev, "ce_fwd")?;
        let mut b = func.builder();
        b.arg(&xs).arg(&ts).arg(&mut out).arg(&ni).arg(&vi);
        unsafe { b.launch(warps(n)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n)))
}

/// The logits' gradient (N, V), (softmax - onehot) g, for the nll's gradient `g` (N).
pub fn backward(
    x: (&CudaStorage, &Layout),
    t: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (n, ni, vi) = sizes(x.1)?;
    let xs = view(x.0, x.1, "cross_entropy: logits")?;
    let ts = targets(t.0, t.1)?;
    let gs = view(g.0, g.1, "cross_entropy: gradient")?;
    let mut dx = dev.alloc_zeros::<f32>(x.1.shape().elem_count().max(1))?;
    if n > 0 {
        let func = KERNELS.func(&dev, "ce_bwd")?;
        let mut b = func.builder();
        b.arg(&xs).arg(&ts).arg(&gs).arg(&mut dx).arg(&ni).arg(&vi);
        unsafe { b.launch(warps(n)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(dx, dev), x.1.shape().clone()))
}
