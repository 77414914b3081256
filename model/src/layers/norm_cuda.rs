//! CUDA side of the RMSNorm op (`norm.rs` holds the op and its CPU kernels): `norm.cu` compiled
//! at run time with NVRTC, one warp per row.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

use crate::kernels::nvrtc::{int, view, warps, Kernels};

static KERNELS: Kernels = Kernels::new(include_str!("norm.cu"), "RMSNorm", "rms_norm");

/// The kernels as PTX, or NVRTC's log if they do not compile.
pub fn ptx() -> std::result::Result<&'static str, String> {
    KERNELS.ptx()
}

/// Elements, rows and width of x (rows, d) normed by w (d).
fn sizes(x: &Layout, w: &Layout) -> (usize, usize, usize) {
    let (n, d) = (x.shape().elem_count(), w.shape().elem_count());
    (n, n.checked_div(d).unwrap_or(0), d)
}

/// The norm of every row of x (rows, d) times w (d).
pub fn forward(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (n, rows, d) = sizes(x.1, w.1);
    let (xs, ws) = (
        view(x.0, x.1, "rms_norm: input")?,
        view(w.0, w.1, "rms_norm: weight")?,
    );
    let mut out = dev.alloc_zeros::<f32>(n.max(1))?;
    if rows > 0 {
        let (ri, di) = (int(rows, "rms_norm")?, int(d, "rms_norm")?);
        let func = KERNELS.func(&dev, "rms_fwd")?;
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

/// [dx (rows d) | dw (d)] of the output gradient `g`, as the CPU's backward op lays it out; the
/// kernels write the two parts in place.
pub fn backward(
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (n, rows, d) = sizes(x.1, w.1);
    let xs = view(x.0, x.1, "rms_norm: input")?;
    let ws = view(w.0, w.1, "rms_norm: weight")?;
    let gs = view(g.0, g.1, "rms_norm: output gradient")?;
    let mut out = dev.alloc_zeros::<f32>((n + d).max(1))?;
    if rows > 0 {
        let (ri, di) = (int(rows, "rms_norm")?, int(d, "rms_norm")?);
        let mut rinv = dev.alloc_zeros::<f32>(rows)?;
        {
            let func = KERNELS.func(&dev, "rms_dx")?;
            let mut dx = out.slice_mut(..n);
            let mut b = func.builder();
            b.arg(&xs).arg(&ws).arg(&gs).arg(&mut dx).arg(&mut rinv);
            b.arg(&ri).arg(&di).arg(&eps);
            unsafe { b.launch(warps(rows)) }.w()?;
        }
        let func = KERNELS.func(&dev, "rms_dw")?;
        let mut dw = out.slice_mut(n..n + d);
        let mut b = func.builder();
        b.arg(&xs)
            .arg(&gs)
            .arg(&rinv)
            .arg(&mut dw)
            .arg(&ri)
            .arg(&di);
        unsafe { b.launch(LaunchConfig::for_num_elems(d as u32)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n + d)))
}
