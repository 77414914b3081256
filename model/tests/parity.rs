//! Parity with transformers' `MambaForCausalLM` (slow PyTorch path, f32, CPU), both ways.
//! Fixtures and the script that made them: tests/fixtures/ (make_fixtures.py).

mod common;
#[path = "common/seeded.rs"]
mod seeded;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::*;
use mamba_model::MambaLM;

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
        (
            cfg.d_model,
            cfg.n_layer(),
            cfg.vocab_size,
            cfg.padded_vocab()
        ),
        (24, 2, 48, 48)
    );
    let (ids, logits) = load_logits("hf_tiny_logits.safetensors");
    let ours = model.forward(&ids, None).unwrap();
    assert_rel("logits (transformers model)", &ours, &logits);
}

#[test]
fn our_model_loads_in_transformers_with_same_logits() {
    let (model, _) = MambaLM::init(&seeded::mamba1(true), seeded::SEED, &Device::Cpu).unwrap();
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

/// A transformers model with its own `lm_head.weight`: with `tie_word_embeddings: false`, and
/// with config.json silent about it (transformers keeps a head that differs from the
/// embedding whatever the config says).
#[test]
fn untied_transformers_heads_are_used() {
    for (dir, logits) in [
        ("hf_untied", "hf_untied_logits.safetensors"),
        ("hf_untied_unsaid", "hf_untied_unsaid_logits.safetensors"),
    ] {
        let (model, vars) = MambaLM::load(fixtures().join(dir), &Device::Cpu).unwrap();
        assert!(!model.config().tie_embeddings, "{dir}: head tied");
        assert!(vars.data().lock().unwrap().contains_key("lm_head.weight"));
        let (ids, want) = load_logits(logits);
        let ours = model.forward(&ids, None).unwrap();
        assert_rel(&format!("logits ({dir})"), &ours, &want);
        // Generation takes the same head.
        let rows = ids.to_vec2::<u32>().unwrap();
        let dec = model.decoder().unwrap();
        let (_, first) = dec.prefill(&[&rows[0][..4]]).unwrap();
        let first = Tensor::new(first[0].as_slice(), &Device::Cpu).unwrap();
        let want = want.get(0).unwrap().get(3).unwrap();
        assert_rel(&format!("prefill ({dir})"), &first, &want);
    }
    // A copy of the embedding under `lm_head.weight` (what some exporters write) stays tied.
    let (model, _) = MambaLM::load(fixtures().join("hf_tiny"), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut named = model.named_tensors();
    named.push(("lm_head.weight".into(), named[0].1.clone()));
    let json = std::fs::read_to_string(fixtures().join("hf_tiny/config.json")).unwrap();
    let json = json.replace("\"tie_word_embeddings\": true,", "");
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    mamba_model::io::safetensors::write_safetensors(
        &dir.path().join("model.safetensors"),
        &named,
        &[],
    )
    .unwrap();
    let (copy, _) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert!(copy.config().tie_embeddings);
    // `tie_word_embeddings: false` without a head is refused, naming the tensor.
    let json = std::fs::read_to_string(fixtures().join("hf_tiny/config.json")).unwrap();
    let json = json.replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    );
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    named.pop();
    mamba_model::io::safetensors::write_safetensors(
        &dir.path().join("model.safetensors"),
        &named,
        &[],
    )
    .unwrap();
    let e = MambaLM::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");
}

/// Our untied model, saved, loads in transformers with the same logits; it trains its own head.
#[test]
fn our_untied_model_loads_in_transformers_and_trains_its_head() {
    let (model, varmap) =
        MambaLM::init(&seeded::mamba1(false), seeded::SEED, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    for f in ["model.safetensors", "config.json"] {
        let a = std::fs::read(dir.path().join(f)).unwrap();
        let b = std::fs::read(fixtures().join("ours_untied").join(f)).unwrap();
        assert!(a == b, "{f} differs from the committed fixture");
    }
    let (ids, logits) = load_logits("ours_untied_logits.safetensors");
    let ours = model.forward(&ids, None).unwrap();
    assert_rel("logits (our untied model in transformers)", &ours, &logits);
    // One AdamW step moves the head and the embedding apart.
    let mut opt =
        mamba_model::AdamW::from_varmap(&varmap, mamba_model::AdamWConfig::default()).unwrap();
    let targets = ids.roll(-1, 1).unwrap();
    let before = model.tensor("lm_head.weight").unwrap().copy().unwrap();
    opt.backward_step(&model.loss(&ids, &targets, None, None).unwrap())
        .unwrap();
    let after = model.tensor("lm_head.weight").unwrap();
    assert_ne!(vec(&before), vec(&after), "the head did not train");
    model.save(dir.path()).unwrap();
    let (reloaded, _) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(
        vec(&reloaded.forward(&ids, None).unwrap()),
        vec(&model.forward(&ids, None).unwrap())
    );
}
