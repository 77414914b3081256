//! Mamba language models on candle, Mamba-1 (`MambaForCausalLM`) and Mamba-2
//! (`Mamba2ForCausalLM`): trainable, with a fused selective scan (CPU and CUDA kernels with
//! their own backward), Mamba-2's SSD, document resets inside packed sequences,
//! transformers-compatible weights, recurrent generation and a checkpointable AdamW.
//!
//! The one place the model is computed, from the bottom floor up: [`layers`] (conv, norm,
//! projections, the parameter tables every kind declares) and [`kernels`] (fused ops with
//! their own backward, the CPU's vector lanes); [`mixers`] (a module per layer kind: Mamba-1,
//! Mamba-2); [`model`] (the residual stack of layers, each of its kind: the forward for
//! training, eval and prefill); [`decode`] (recurrent generation) and [`io`] (checkpoints).
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
pub mod decode;
pub mod error;
pub mod info;
pub mod init;
pub mod io;
pub mod kernels;
pub mod layers;
pub mod lora;
pub mod loss;
#[cfg(feature = "cuda")]
pub mod loss_cuda;
pub mod memory;
pub mod mixers;
pub mod model;
pub mod optim;
pub mod rng;

pub use config::{Config, Family, LayerKind, PRESETS};
pub use decode::{Decoder, State};
pub use error::{Error, Result};
pub use io::mapped::MapAware;
pub use kernels::scan::{selective_scan, ScanOptions};
pub use loss::cross_entropy;
pub use model::{block_kept_per_token, head_bytes, ForwardOptions, MambaLM};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig};
