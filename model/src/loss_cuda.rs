//! CUDA side of the cross-entropy op (`loss.rs` holds the op and its CPU kernels): `loss.cu`
//! compiled at run time with NVRTC, one warp per row.

use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

use crate::kernels::nvrtc::{view, Kernels};

static KERNELS: Kernels = Kernels::new(include_str!("loss.cu"), "cross-entropy");
const MODULE: &str = "cross_entropy";

/// The kernels as PTX, or NVRTC's log if they do not compile.
pub fn ptx() -> std::result::Result<&'static str, String> {
    KERNELS.ptx()
}

/// (rows, vocabulary) of logits laid out as `l`, as the kernels' ints.
fn sizes(l: &Layout) -> Result<(usize, i32, i32)> {
    let (n, v) = l.shape().dims2()?;
    let int = |x: usize| {
        i32::try_from(x)
            .map_err(|_| candle_core::Error::Msg(format!("cross_entropy: {x} too large")))
    };
    Ok((n, int(n)?, int(v)?))
}

fn targets<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, u32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<u32>()?.slice(a..b)),
        None => candle_core::bail!("cross_entropy: targets must be contiguous"),
    }
}

fn warps(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
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
        let ptx = ptx().map_err(candle_core::Error::Msg)?;
        let func = dev.get_or_load_custom_func("ce_fwd", MODULE, ptx)?;
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
        let ptx = ptx().map_err(candle_core::Error::Msg)?;
        let func = dev.get_or_load_custom_func("ce_bwd", MODULE, ptx)?;
        let mut b = func.builder();
        b.arg(&xs).arg(&ts).arg(&gs).arg(&mut dx).arg(&ni).arg(&vi);
        unsafe { b.launch(warps(n)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(dx, dev), x.1.shape().clone()))
}
