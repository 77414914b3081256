//! The seeded models behind the "ours -> transformers" fixtures, shared by
//! `examples/make_fixture.rs` (which writes them) and the tests (which check that saving the
//! same model again gives the committed bytes). Each includer uses part of it.
#![allow(dead_code)]

use mamba_model::mamba2::Mamba2Config;
use mamba_model::Config;

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
pub fn mamba2() -> Mamba2Config {
    Mamba2Config {
        d_model: 32,
        n_layer: 2,
        vocab_size: 40,
        d_state: 8,
        d_conv: 4,
        expand: 2,
        head_dim: 16,
        n_groups: 2,
        norm_eps: 1e-5,
        dt_limit: (0.0, f64::INFINITY),
        tie_embeddings: true,
    }
}
