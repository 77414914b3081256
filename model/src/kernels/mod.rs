//! Fused ops with their own backward: the selective scan (CPU, and CUDA behind the `cuda`
//! feature) and the LM head fused with the cross-entropy. Each
//! is one autograd node where separate candle ops would allocate and accumulate much more.
//! Below them the CPU's vector lanes ([`simd`]), and the pieces of the recurrent CPU step
//! ([`matvec`], [`rows`]).

pub(crate) mod head;
pub(crate) mod matvec;
#[cfg(feature = "cuda")]
pub(crate) mod nvrtc;
pub(crate) mod rows;
pub mod scan;
pub(crate) mod simd;
