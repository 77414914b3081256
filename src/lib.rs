//! The training side of `mamba` as a library: the shard loader, packing and shuffling, the
//! training loop with its checkpoints, evaluation, generation and the run report. The `mamba`
//! binary (`src/main.rs`, `cli`, `commands`) only parses flags and wires these together; the
//! benchmarks call them directly.

pub mod evaluate;
pub mod export;
pub mod generate;
pub mod report;
pub mod train;
