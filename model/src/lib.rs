//! Mamba-1 language model on candle: a trainable `MambaForCausalLM` with a fused selective scan
//! (CPU kernel with its own backward), document resets inside packed sequences,
//! transformers-compatible weights, recurrent generation and a checkpointable AdamW.
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use mamba_model::{AdamW, AdamWConfig, Config, MambaLM};
//! # fn main() -> mamba_model::Result<()> {
//! let dev = Device::Cpu;
//! let cfg = Config::preset("tiny", 256)?;
//! let (model, varmap) = MambaLM::init(&cfg, 42, &dev)?;
//! let mut opt = AdamW::from_varmap(&varmap, AdamWConfig::default())?;
//! let ids = Tensor::zeros((2, 16), candle_core::DType::U32, &dev)?;
//! let loss = model.loss(&ids, &ids, None, None)?;
//! opt.backward_step(&loss)?;
//! model.save("out/")?;
//! # Ok(()) }
//! ```

#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::redundant_locals
)]
#![allow(clippy::excessive_precision)]

pub mod config;
pub mod conv;
pub mod error;
mod head;
pub mod info;
pub mod init;
mod linear;
pub mod loss;
pub mod mixer;
pub mod model;
pub mod norm;
pub mod ops;
pub mod optim;
pub mod scan;
mod ssm;
pub mod step;
pub mod weights;

pub use config::{Config, PRESETS};
pub use error::{Error, Result};
pub use loss::cross_entropy;
pub use model::MambaLM;
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
pub use scan::{selective_scan, ScanOptions};
pub use step::State;
