//! Fused ops with their own backward: the selective scan (CPU, and CUDA behind the `cuda`
//! feature), the whole SSM path of a mixer, and the LM head fused with the cross-entropy. Each
//! is one autograd node where separate candle ops would allocate and accumulate much more.

pub(crate) mod head;
#[cfg(feature = "cuda")]
pub(crate) mod nvrtc;
pub mod scan;
pub(crate) mod ssm;
