//! CUDA side of the causal conv + SiLU op (`conv.rs` holds the op and its CPU kernels):
//! `conv.cu` compiled at run time with NVRTC, launched on candle's stream with the CPU op's
//! layouts.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{CudaStorage, Layout, Result, Shape};

use crate::kernels::nvrtc::{int, view, Kernels};

static KERNELS: Kernels = Kernels::new(include_str!("conv.cu"), "causal conv", "causal_conv_silu");

/// The kernels as PTX, or NVRTC's log if they do not compile.
pub fn ptx() -> std::result::Result<&'static str, String> {
    KERNELS.ptx()
}

/// (b, l, d, k) of the op and its document starts.
pub struct Conv<'a> {
    pub dims: (usize, usize, usize, usize),
    pub starts: Option<&'a [u32]>,
}

impl Conv<'_> {
    /// The starts on the device (one dummy element without resets).
    fn starts(&self, dev: &CudaDevice) -> Result<CudaSlice<u32>> {
        match self.starts {
            Some(s) if !s.is_empty() => dev.clone_htod(s),
            _ => dev.alloc_zeros::<u32>(1),
        }
    }

    /// Launches `name` over `n` threads: (inputs.., starts, output, sizes), conv.cu's order.
    fn launch(
        &self,
        dev: &CudaDevice,
        name: &str,
        inputs: &[&CudaView<'_, f32>],
        starts: &CudaSlice<u32>,
        mut out: CudaViewMut<'_, f32>,
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (b, l, d, k) = self.dims;
        let what = "conv1d";
        let sizes = [
            int(b, what)?,
            int(l, what)?,
            int(d, what)?,
            int(k, what)?,
            i32::from(self.starts.is_some()),
        ];
        let func = KERNELS.func(dev, name)?;
        let mut builder = func.builder();
        for input in inputs {
            builder.arg(*input);
        }
        builder.arg(starts).arg(&mut out);
        for v in &sizes {
            builder.arg(v);
        }
        unsafe { builder.launch(LaunchConfig::for_num_elems(n as u32)) }.w()?;
        Ok(())
    }
}

/// silu(conv(x)), (b, l, d), of x (b, l, d) and p (d, k + 1) on the device.
pub fn forward(
    c: &Conv,
    x: (&CudaStorage, &Layout),
    p: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (b, l, d, _) = c.dims;
    let n = b * l * d;
    let xs = view(x.0, x.1, "conv1d: input")?;
    let ps = view(p.0, p.1, "conv1d: weights")?;
    let starts = c.starts(&dev)?;
    let mut out = dev.alloc_zeros::<f32>(n.max(1))?;
    c.launch(
        &dev,
        "conv_silu_fwd",
        &[&xs, &ps],
        &starts,
        out.slice_mut(..),
        n,
    )?;
    Ok((
        CudaStorage::wrap_cuda_slice(out, dev),
        Shape::from((b, l, d)),
    ))
}

/// [dx (b l d) | dp (d (k + 1))] of the output gradient `g`, as the CPU's backward op lays it
/// out; the kernels write the two parts in place.
pub fn backward(
    c: &Conv,
    x: (&CudaStorage, &Layout),
    p: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let dev = x.0.device.clone();
    let (b, l, d, k) = c.dims;
    let (n, np) = (b * l * d, d * (k + 1));
    let xs = view(x.0, x.1, "conv1d: input")?;
    let ps = view(p.0, p.1, "conv1d: weights")?;
    let gs = view(g.0, g.1, "conv1d: output gradient")?;
    let starts = c.starts(&dev)?;
    let mut dpre = dev.alloc_zeros::<f32>(n.max(1))?;
    let grads = [&xs, &ps, &gs];
    c.launch(
        &dev,
        "conv_silu_dpre",
        &grads,
        &starts,
        dpre.slice_mut(..),
        n,
    )?;
    let dv = dpre.slice(..);
    let mut out = dev.alloc_zeros::<f32>((n + np).max(1))?;
    c.launch(
        &dev,
        "conv_silu_dx",
        &[&ps, &dv],
        &starts,
        out.slice_mut(..n),
        n,
    )?;
    let dp = out.slice_mut(n..n + np);
    c.launch(&dev, "conv_silu_dparams", &[&xs, &dv], &starts, dp, np)?;
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(n + np)))
}
