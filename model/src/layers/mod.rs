//! The model's layers as candle ops: the causal conv, RMSNorm, the projections and the mixer
//! that combines them with the selective scan.

pub mod conv;
pub(crate) mod linear;
pub mod mixer;
pub mod norm;
pub mod ops;
