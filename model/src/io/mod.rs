//! Checkpoint I/O: transformers-layout `config.json` + safetensors, both ways.

pub mod weights;
