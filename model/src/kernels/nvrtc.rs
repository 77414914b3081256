//! The project's CUDA kernels are compiled at run time with NVRTC (no nvcc is needed to run the
//! binary), once per process and source, with the CPU kernels' math: IEEE division and square
//! root, no flush to zero.

use std::sync::OnceLock;

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, CudaView, LaunchArgs, LaunchConfig,
};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{CudaStorage, Layout, Result, Storage, Tensor};

/// A kernel source and its PTX, compiled on first use, loaded as the module `module`.
pub struct Kernels {
    source: &'static str,
    what: &'static str,
    module: &'static str,
    ptx: OnceLock<std::result::Result<String, String>>,
}

impl Kernels {
    /// `what` names the kernels in NVRTC's error; `module` is their module's name on a device.
    pub const fn new(source: &'static str, what: &'static str, module: &'static str) -> Kernels {
        Kernels {
            source,
            what,
            module,
            ptx: OnceLock::new(),
        }
    }

    /// The kernel `name` on `dev` (the source compiled and loaded on first use).
    pub fn func(&'static self, dev: &CudaDevice, name: &str) -> Result<Kernel> {
        let ptx = self.ptx().map_err(candle_core::Error::Msg)?;
        let func = dev.get_or_load_custom_func(name, self.module, ptx)?;
        Ok(Kernel {
            func: func.into_cuda_function(),
            stream: dev.cuda_stream(),
        })
    }

    /// The PTX, or NVRTC's log if the source does not compile.
    pub fn ptx(&'static self) -> std::result::Result<&'static str, String> {
        self.ptx
            .get_or_init(|| {
                let opts = CompileOptions {
                    ftz: Some(false),
                    prec_div: Some(true),
                    prec_sqrt: Some(true),
                    fmad: Some(true),
                    ..Default::default()
                };
                compile_ptx_with_opts(self.source, opts)
                    .map(|p| p.to_src())
                    .map_err(|e| format!("{} kernels do not compile: {e:?}", self.what))
            })
            .as_ref()
            .map(String::as_str)
            .map_err(Clone::clone)
    }
}

/// One kernel, to launch on candle's stream.
pub struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// The launch's arguments, pushed in the kernel's order.
    pub fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

/// `v` as a kernel's `int`; `what` names the op in the error.
pub fn int(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("{what}: {v} too large for the CUDA kernels")))
}

/// `blocks` blocks of one warp each: the kernels that give a warp a row.
pub fn warps(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A contiguous f32 tensor's elements on the device; `what` names the op and input in the error.
pub fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<f32>()?.slice(a..b)),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// `f` on the GPU storage of `t` (a tensor a custom op holds, such as the gradient its
/// backward op was given); `what` names it in the error when it is elsewhere.
pub fn on_gpu<T>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaStorage, &Layout) -> Result<T>,
) -> Result<T> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cuda(s) => f(s, l),
        _ => candle_core::bail!("{what} is not on the GPU"),
    }
}
