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

/// Seed of the LoRA fixtures `ours_lora_mamba1/` and `ours_lora_mamba2/`.
pub const LORA_SEED: u64 = 5;

/// The seeded adapter of rank 2 on `targets` of the model `cfg`, with B drawn too (a fresh
/// adapter's B is 0 and would change nothing).
pub fn lora(cfg: &Config, targets: &[&str]) -> mamba_model::lora::Adapters {
    use mamba_model::lora::{Adapters, LoraConfig};
    let lcfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        rslora: false,
    };
    let dev = candle_core::Device::Cpu;
    let (adapters, vm) = Adapters::init(cfg, &lcfg, LORA_SEED, &dev).expect("seeded adapters");
    let mut vars: Vec<_> = vm
        .data()
        .lock()
        .expect("vars")
        .clone()
        .into_iter()
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rng = mamba_model::rng::SplitMix64::new(LORA_SEED);
    for (name, v) in vars.iter().filter(|(n, _)| n.contains("lora_B")) {
        let values: Vec<f32> = (0..v.elem_count())
            .map(|_| rng.uniform_in(-0.5, 0.5) as f32)
            .collect();
        let t = candle_core::Tensor::from_vec(values, v.dims(), &dev).expect(name);
        v.set(&t).expect(name);
    }
    adapters
}
