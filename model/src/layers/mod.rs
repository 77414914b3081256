//! The model's layers as candle ops: the causal conv, RMSNorm, the projections, the Mamba-1
//! mixer that combines them with the selective scan, and the residual block around either
//! architecture's mixer.

pub(crate) mod block;
pub mod conv;
pub(crate) mod linear;
pub mod mixer;
pub mod norm;
pub mod ops;
