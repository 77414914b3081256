//! CUDA side of the fused selective scan: `scan.cu` compiled at run time with NVRTC (no nvcc
//! needed to run the binary), launched on candle's stream with the CPU op's packed layout.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, CudaStorage, Layout, Result, Shape, Storage, Tensor};

use super::cpu::Dims;
use crate::kernels::nvrtc::{int, view, Kernels};

static KERNELS: Kernels = Kernels::new(
    include_str!("scan.cu"),
    "selective scan",
    "mamba_selective_scan",
);
/// Time steps between the backward's state checkpoints on the GPU (the buffer of recomputed
/// states is this many steps per thread).
const GPU_CHUNK: usize = 32;
/// The smallest checkpoint interval used, whatever the op asks: the checkpoints take
/// l / chunk states per thread.
const MIN_CHUNK: usize = 16;
const WARP: u32 = 32;

/// The kernels as PTX, or NVRTC's log if they do not compile.
pub fn ptx() -> std::result::Result<&'static str, String> {
    KERNELS.ptx()
}

/// `Dims` of scan.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelDims {
    b: i32,
    l: i32,
    d: i32,
    has_z: i32,
    softplus: i32,
    has_resets: i32,
    chunk: i32,
}

unsafe impl DeviceRepr for KernelDims {}

impl KernelDims {
    fn new(dm: &Dims, has_z: bool, has_resets: bool) -> Result<KernelDims> {
        let int = |v| int(v, "selective_scan");
        Ok(KernelDims {
            b: int(dm.b)?,
            l: int(dm.l)?,
            d: int(dm.d)?,
            has_z: has_z as i32,
            softplus: dm.softplus as i32,
            has_resets: has_resets as i32,
            chunk: int(dm.chunk.clamp(MIN_CHUNK, GPU_CHUNK))?,
        })
    }
}

/// The reset mask on the device, or a one-byte stand-in when there is none.
fn resets_slice(dev: &CudaDevice, resets: Option<&Tensor>) -> Result<(CudaSlice<u8>, bool)> {
    match resets {
        Some(r) => {
            let r = r.to_dtype(candle_core::DType::U8)?.contiguous()?;
            let (st, l) = r.storage_and_layout();
            let Storage::Cuda(cs) = &*st else {
                candle_core::bail!("selective_scan: resets not on the GPU")
            };
            let (a, b) = l.contiguous_offsets().unwrap_or((0, 0));
            let mut out = unsafe { dev.alloc::<u8>(b - a) }?;
            dev.memcpy_dtod(&cs.as_cuda_slice::<u8>()?.slice(a..b), &mut out)?;
            Ok((out, true))
        }
        None => Ok((dev.alloc_zeros::<u8>(1)?, false)),
    }
}

fn grid(dm: &Dims) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((dm.d as u32).div_ceil(WARP), dm.b as u32, 1),
        block_dim: (WARP, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn linear(len: usize) -> LaunchConfig {
    LaunchConfig::for_num_elems(len as u32)
}

/// The op's packed inputs on the device, each with its layout.
pub struct Operands<'a> {
    pub x: (&'a CudaStorage, &'a Layout),
    pub bc: (&'a CudaStorage, &'a Layout),
    pub params: (&'a CudaStorage, &'a Layout),
}

/// What both passes launch with.
struct Prepared<'a> {
    dev: CudaDevice,
    xs: CudaView<'a, f32>,
    bcs: CudaView<'a, f32>,
    ps: CudaView<'a, f32>,
    rs: CudaSlice<u8>,
    kd: KernelDims,
}

fn prepare<'a>(
    dm: &Dims,
    has_z: bool,
    resets: Option<&Tensor>,
    ops: &Operands<'a>,
) -> Result<Prepared<'a>> {
    if dm.b == 0 || dm.l == 0 || dm.d == 0 {
        candle_core::bail!(
            "selective_scan: empty input {:?} on the GPU",
            (dm.b, dm.l, dm.d)
        )
    }
    let dev = ops.x.0.device.clone();
    let (rs, has_resets) = resets_slice(&dev, resets)?;
    Ok(Prepared {
        xs: view(ops.x.0, ops.x.1, "selective_scan: u/delta/z")?,
        bcs: view(ops.bc.0, ops.bc.1, "selective_scan: B/C")?,
        ps: view(ops.params.0, ops.params.1, "selective_scan: A/D/bias")?,
        rs,
        kd: KernelDims::new(dm, has_z, has_resets)?,
        dev,
    })
}

/// Forward: y (b, l, d).
pub fn forward(
    dm: &Dims,
    has_z: bool,
    resets: Option<&Tensor>,
    ops: &Operands,
) -> Result<(CudaStorage, Shape)> {
    let p = prepare(dm, has_z, resets, ops)?;
    let dev = p.dev.clone();
    let func = KERNELS.func(&dev, &format!("scan_fwd_{}", dm.n))?;
    let mut y = unsafe { dev.alloc::<f32>(dm.b * dm.l * dm.d) }?;
    let mut builder = func.builder();
    builder.arg(&p.xs).arg(&p.bcs).arg(&p.ps).arg(&p.rs);
    builder.arg(&mut y).arg(&p.kd);
    unsafe { builder.launch(grid(dm)) }.w()?;
    let shape = Shape::from((dm.b, dm.l, dm.d));
    Ok((CudaStorage::wrap_cuda_slice(y, dev), shape))
}

/// Backward: the flat [du | ddelta | dz?] [dB | dC] [dA | dD | d_bias] of the CPU op.
pub fn backward(
    dm: &Dims,
    has_z: bool,
    resets: Option<&Tensor>,
    grad: &Tensor,
    ops: &Operands,
) -> Result<(CudaStorage, Shape)> {
    let p = prepare(dm, has_z, resets, ops)?;
    let (dev, kd) = (p.dev.clone(), p.kd);
    let func = KERNELS.func(&dev, &format!("scan_bwd_{}", dm.n))?;
    let grad = grad.contiguous()?;
    let (gst, gl) = grad.storage_and_layout();
    let Storage::Cuda(gcs) = &*gst else {
        candle_core::bail!("selective_scan: gradient not on the GPU")
    };
    let dout = view(gcs, gl, "selective_scan: output gradient")?;

    let (b, l, d, n) = (dm.b, dm.l, dm.d, dm.n);
    let bld = b * l * d;
    let s = if has_z { 3 } else { 2 };
    let warps = d.div_ceil(WARP as usize);
    let threads = warps * WARP as usize * b;
    let chunk = kd.chunk as usize;
    let nchunks = l.div_ceil(chunk);
    // Every element of these is written by the kernels below before it is read.
    let mut out = unsafe { dev.alloc::<f32>(s * bld + b * l * 2 * n + d * (n + 2)) }?;
    let mut dbc_part = unsafe { dev.alloc::<f32>(b * warps * l * 2 * n) }?;
    let mut dpar_part = unsafe { dev.alloc::<f32>(b * d * (n + 2)) }?;
    let mut ckpt = unsafe { dev.alloc::<f32>(nchunks.max(1) * n * threads) }?;
    let mut hbuf = unsafe { dev.alloc::<f32>(chunk * n * threads) }?;
    {
        let mut gx = out.slice_mut(0..s * bld);
        let mut builder = func.builder();
        builder.arg(&p.xs).arg(&p.bcs).arg(&p.ps).arg(&p.rs);
        builder.arg(&dout).arg(&mut gx);
        builder
            .arg(&mut dbc_part)
            .arg(&mut dpar_part)
            .arg(&mut ckpt)
            .arg(&mut hbuf)
            .arg(&kd);
        unsafe { builder.launch(grid(dm)) }.w()?;
    }
    {
        let reduce = KERNELS.func(&dev, "scan_reduce_dbc")?;
        let mut dst = out.slice_mut(s * bld..s * bld + b * l * 2 * n);
        let (bi, wi, row) = (b as i32, warps as i32, (l * 2 * n) as i64);
        let mut builder = reduce.builder();
        builder
            .arg(&dbc_part)
            .arg(&mut dst)
            .arg(&bi)
            .arg(&wi)
            .arg(&row);
        unsafe { builder.launch(linear(b * l * 2 * n)) }.w()?;
    }
    {
        let reduce = KERNELS.func(&dev, "scan_reduce_params")?;
        let start = s * bld + b * l * 2 * n;
        let mut dst = out.slice_mut(start..start + d * (n + 2));
        let (bi, len) = (b as i32, (d * (n + 2)) as i64);
        let mut builder = reduce.builder();
        builder.arg(&dpar_part).arg(&mut dst).arg(&bi).arg(&len);
        unsafe { builder.launch(linear(d * (n + 2))) }.w()?;
    }
    let len = s * bld + b * l * 2 * n + d * (n + 2);
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(len)))
}
