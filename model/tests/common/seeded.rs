//! The seeded models behind the "ours -> transformers" fixtures, shared by
//! `examples/make_fixture.rs` (which writes them) and the tests (which check that saving the
//! same model again gives the committed bytes). Each includer uses part of it.
#![allow(dead_code)]

use mamba_model::{Config, LayerKind};

/// Seed of the Mamba-1 fixtures `ours_tiny/` (tied) and `ours_untied/`.
pub const SEED: u64 = 1234;

/// Seed of the Mamba-2 fixture `ours_mamba2/`.
pub const MAMBA2_SEED: u64 = 77;

/// The Mamba-1 fixture model, tied or not.
pub fn mamba1(tie_embeddings: bool) -> Config {
    Config {
        tie_embeddings,
        ..Config::new(32, 2, 61)
    }
}

/// The Mamba-2 fixture model: 4 heads of 16 channels in 2 groups, state 8.
pub fn mamba2() -> Config {
    Config {
        d_state: 8,
        head_dim: 16,
        n_groups: 2,
        ..Config::of(LayerKind::Mamba2, 32, 2, 40)
    }
}
