//! CUDA side of Mamba-3's trapezoid op (`trap_cpu.rs` holds the op and its CPU kernels):
//! `trap.cu` compiled at run time with NVRTC, launched on candle's stream with the CPU op's
//! layouts, one warp per (batch row, head).

use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Layout, Result, Shape};

use crate::kernels::nvrtc::{int, view, warps, Kernels};

static KERNELS: Kernels = Kernels::new(
    include_str!("trap.cu"),
    "Mamba-3 trapezoid",
    "mamba3_trapezoid",
);
/// Positions between the states the backward keeps (SPAN of trap.cu).
const SPAN: usize = 16;

/// The kernels as PTX, or NVRTC's log if they do not compile.
pub fn ptx() -> std::result::Result<&'static str, String> {
    KERNELS.ptx()
}

/// (b, l, H, R, P, N) of the op.
pub type Sizes = (usize, usize, usize, usize, usize, usize);

fn ints(s: Sizes) -> Result<[i32; 6]> {
    let int = |v| int(v, "mamba3");
    Ok([
        int(s.0)?,
        int(s.1)?,
        int(s.2)?,
        int(s.3)?,
        int(s.4)?,
        int(s.5)?,
    ])
}

/// y (b, l, H, R, P) of qk, v, coef on the device.
pub fn forward(
    s: Sizes,
    qk: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
    coef: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let (b, l, h, r, p, n) = s;
    let dev = qk.0.device.clone();
    let func = KERNELS.func(&dev, "trap_fwd")?;
    let (qs, vs, cs) = (
        view(qk.0, qk.1, "mamba3: q, k")?,
        view(v.0, v.1, "mamba3: v")?,
        view(coef.0, coef.1, "mamba3: coefficients")?,
    );
    let mut y = dev.alloc_zeros::<f32>(b * l * h * r * p)?;
    let mut state = unsafe { dev.alloc::<f32>((b * h * p * n).max(1)) }?;
    if b * h > 0 {
        let sizes = ints(s)?;
        let mut builder = func.builder();
        builder
            .arg(&qs)
            .arg(&vs)
            .arg(&cs)
            .arg(&mut y)
            .arg(&mut state);
        for x in &sizes {
            builder.arg(x);
        }
        unsafe { builder.launch(warps(s.0 * s.2)) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(y, dev),
        Shape::from((b, l, h, r, p)),
    ))
}

/// The flat [dqk | dv | dcoef] of the op from `vdy`, v and dy stacked (2, b, l, H, R, P).
pub fn backward(
    s: Sizes,
    qk: (&CudaStorage, &Layout),
    vdy: (&CudaStorage, &Layout),
    coef: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let (b, l, h, r, p, n) = s;
    let dev = qk.0.device.clone();
    let func = KERNELS.func(&dev, "trap_bwd")?;
    let both = view(vdy.0, vdy.1, "mamba3: v and dy")?;
    let half = b * l * h * r * p;
    let (vs, dys) = (both.slice(0..half), both.slice(half..2 * half));
    let (qs, cs) = (
        view(qk.0, qk.1, "mamba3: q, k")?,
        view(coef.0, coef.1, "mamba3: coefficients")?,
    );
    let (lqk, lv, lc) = (b * l * h * 2 * r * n, half, b * l * h * 3);
    let mut out = dev.alloc_zeros::<f32>(lqk + lv + lc)?;
    let spans = l.div_ceil(SPAN);
    let mut ws = unsafe { dev.alloc::<f32>((b * h * (spans + SPAN + 4) * p * n).max(1)) }?;
    if b * h > 0 {
        let sizes = ints(s)?;
        let (mut dqk, mut rest) = out.split_at_mut(lqk);
        let (mut dv, mut dcoef) = rest.split_at_mut(lv);
        let mut builder = func.builder();
        builder.arg(&qs).arg(&vs).arg(&cs).arg(&dys);
        builder
            .arg(&mut dqk)
            .arg(&mut dv)
            .arg(&mut dcoef)
            .arg(&mut ws);
        for x in &sizes {
            builder.arg(x);
        }
        unsafe { builder.launch(warps(s.0 * s.2)) }.w()?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev),
        Shape::from(lqk + lv + lc),
    ))
}
