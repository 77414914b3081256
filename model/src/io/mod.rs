//! Checkpoint I/O: transformers-layout `config.json` + safetensors both ways, and the other
//! layouts pretrained Mamba checkpoints come in.

pub mod config;
pub mod gguf;
pub mod hybrid;
pub mod mapped;
pub mod peft;
pub mod safetensors;
pub mod torch_save;
pub mod weights;
