//! Fused ops with their own backward: the selective scan (CPU, and CUDA behind the `cuda`
//! feature) and the LM head fused with the cross-entropy. Each
//! is one autograd node where separate candle ops would allocate and accumulate much more.
//! Below them the CPU's vector lanes ([`simd`]), and the pieces of the recurrent CPU step
//! ([`matvec`], [`rows`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use candle_core::Device;

pub(crate) mod head;
pub(crate) mod matvec;
#[cfg(feature = "cuda")]
pub(crate) mod nvrtc;
pub(crate) mod rows;
pub mod scan;
pub(crate) mod simd;

/// Whether the ops with both CPU and CUDA kernels (conv + SiLU, RMSNorm, cross-entropy, the
/// scans) can run on `dev`: the CPU, and NVIDIA GPUs in a CUDA build.
pub(crate) fn has_kernels(dev: &Device) -> bool {
    dev.is_cpu() || (cfg!(feature = "cuda") && dev.is_cuda())
}

static CPU_FUSED: AtomicBool = AtomicBool::new(true);

/// Whether the CPU's own fused ops (norm, conv + SiLU, the projections, Mamba-1's SSM path,
/// Mamba-2's SSD recurrence, the head with its loss) compute on `dev`: on the CPU, unless
/// [`compute_as_gpu`] turned them off. Elsewhere the ops every device has compute.
pub(crate) fn cpu_fused(dev: &Device) -> bool {
    dev.is_cpu() && CPU_FUSED.load(Relaxed)
}

/// With `true`, the CPU computes a model as a GPU does: the ops every device has, Mamba-2's
/// SSD in its chunked form. Process-wide; for measuring the GPU's path (its memory, above
/// all) on a machine without one.
pub fn compute_as_gpu(on: bool) {
    CPU_FUSED.store(!on, Relaxed);
}

/// Whether [`compute_as_gpu`] is on.
pub fn computes_as_gpu() -> bool {
    !CPU_FUSED.load(Relaxed)
}
