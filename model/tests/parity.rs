//! Parity with transformers' `MambaForCausalLM` (slow PyTorch path, f32, CPU), both ways.
//! Fixtures and the script that made them: tests/fixtures/ (make_fixtures.py).

mod common;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::*;
use mamba_model::{Config, MambaLM};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_logits(name: &str) -> (Tensor, Tensor) {
    let t = candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).unwrap();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    (ids, t["logits"].clone())
}

fn assert_rel(what: &str, ours: &Tensor, theirs: &Tensor) {
    // 1e-4 relative to the logits' scale (elementwise relative error is meaningless near 0).
    let scale = vec(theirs).iter().fold(0f64, |m, x| m.max(x.abs()));
    assert_close(what, ours, theirs, 1e-4 * scale, 1e-4);
}

#[test]
fn loads_transformers_model_and_matches_logits() {
    let (model, _) = MambaLM::load(fixtures().join("hf_tiny"), &Device::Cpu).unwrap();
    let cfg = model.config();
    assert_eq!(
        (cfg.d_model, cfg.n_layer, cfg.vocab_size, cfg.padded_vocab()),
        (24, 2, 48, 48)
    );
    let (ids, logits) = load_logits("hf_tiny_logits.safetensors");
    let ours = model.forward(&ids, None).unwrap();
    assert_rel("logits (transformers model)", &ours, &logits);
}

/// Must match `config()` / `SEED` in examples/make_fixture.rs.
fn ours_config() -> Config {
    Config::new(32, 2, 61)
}

#[test]
fn our_model_loads_in_transformers_with_same_logits() {
    let (model, _) = MambaLM::init(&ours_config(), 1234, &Device::Cpu).unwrap();
    // The seeded model is reproduced bit for bit: saving it gives the committed files.
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    for f in ["model.safetensors", "config.json"] {
        let a = std::fs::read(dir.path().join(f)).unwrap();
        let b = std::fs::read(fixtures().join("ours_tiny").join(f)).unwrap();
        assert!(a == b, "{f} differs from the committed fixture");
    }
    // transformers' logits for the committed model (see make_fixtures.py).
    let (ids, logits) = load_logits("ours_tiny_logits.safetensors");
    assert_eq!(logits.dims(), &[2, 13, 64]);
    let ours = model.forward(&ids, None).unwrap();
    assert_rel("logits (our model in transformers)", &ours, &logits);
}
