//! The model's shared building blocks as candle ops, below every layer kind: the causal conv,
//! RMSNorm, the projections and the table that declares a kind's parameters.

pub mod conv;
pub(crate) mod linear;
pub mod norm;
pub mod ops;
pub mod params;
