//! The model's shared building blocks as candle ops, below every layer kind: the causal conv,
//! RMSNorm, the projections, the table that declares a kind's parameters, and recomputation
//! in backward (what keeps a layer's memory small off the CPU's fused ops).

pub mod conv;
#[cfg(feature = "cuda")]
pub mod conv_cuda;
pub(crate) mod linear;
pub mod norm;
#[cfg(feature = "cuda")]
pub mod norm_cuda;
pub mod ops;
pub mod params;
pub mod recompute;
