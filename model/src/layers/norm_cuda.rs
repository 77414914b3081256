//! CUDA side of the RMSNorm op (`norm.rs` holds the op and its CPU kernels): `norm.cu` compiled
//! at run time with NVRTC, one warp per row.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

use crate::kernels::nvrtc::{view, Kernels};

static KERNELS: Kernels = Kernels::new(include_str!("norm.cu"), "RMSNorm");
const MODULE: &str = "rms_norm";

/// The kernels as PTX, or NVRTC's log if they do not compile.
pub fn ptx() -> std::result::Result<&'static str, String> {
    KERNELS.ptx()
}

fn int(v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("rms_norm: {v} too large for the kernels")))
}

/// One warp per row.
fn warps(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The norm of every row of x (rows, d) times w (d).
pub fn forward(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (n, d) = (x.1.shape().elem_count(), w.1.shape().elem_count());
    let rows = n.checked_div(d).unwrap_or(0);
    let (xs, ws) = (
        view(x.0, x.1, "rms_norm: input")?,
        view(w.0, w.1, "rms_norm: weight")?,
    );
    let mut out = dev.alloc_zeros::<f32>(n.max(1))?;
    if rows > 0 {
        let ptx = ptx().map_err(candle_core::Error::Msg)?;
        let func = dev.get_or_load_custom_func("rms_fwd", MODULE, ptx)?;
        let (ri, di) = (int(rows)?, int(d)?);
        let mut b = func.builder();
        b.arg(&xs)
            .arg(&ws)
            .arg(&mut out)
            .arg(&ri)
            .arg(&di)
            .arg(&eps);
        unsafe { b.launch(warps(rows)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), x.1.shape().clone()))
}

/// [dx (rows d) | dw (d)] of the output gradient `g`, as the CPU's backward op lays it out.
pub fn backward(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (n, d) = (x.1.shape().elem_count(), w.1.shape().elem_count());
    let rows = n.checked_div(d).unwrap_or(0);
    let xs = view(x.0, x.1, "rms_norm: input")?;
    let ws = view(w.0, w.1, "rms_norm: weight")?;
    let gs = view(g.0, g.1, "rms_norm: output gradient")?;
    let mut out = dev.alloc_zeros::<f32>((n + d).max(1))?;
    if rows > 0 {
        let ptx = ptx().map_err(candle_core::Error::Msg)?;
        let (ri, di) = (int(rows)?, int(d)?);
        let mut dx = dev.alloc_zeros::<f32>(n)?;
        let mut rinv = dev.alloc_zeros::<f32>(rows)?;
        let func = dev.get_or_load_custom_func("rms_dx", MODULE, ptx)?;
        let mut b = func.builder();
        b.arg(&xs).arg(&ws).arg(&gs).arg(&mut dx).arg(&mut rinv);
        b.arg(&ri).arg(&di).arg(&eps);
        unsafe { b.launch(warps(rows)) }.w()?;
        let mut dw = dev.alloc_zeros::<f32>(d)?;
        let func = dev.get_or_load_custom_func("rms_dw", MODULE, ptx)?;
        let mut b = func.builder();
        b.arg(&xs)
            .arg(&gs)
            .arg(&rinv)
            .arg(&mut dw)
            .arg(&ri)
            .arg(&di);
        unsafe { b.launch(LaunchConfig::for_num_elems(d as u32)) }.w()?;
        dev.memcpy_dtod(&dx.slice(..n), &mut out.slice_mut(..n))?;
        dev.memcpy_dtod(&dw.slice(..d), &mut out.slice_mut(n..n + d))?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n + d)))
}
