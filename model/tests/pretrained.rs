//! Pretrained checkpoints in the layouts people publish, made by transformers
//! (tests/fixtures/make_pretrained_fixtures.py): a padded vocabulary with a GPT-NeoX-style
//! tokenizer, f16 weights, sharded safetensors and mamba_ssm's own config.json +
//! pytorch_model.bin. Each gives transformers' logits, fine-tunes, and what it saves loads in
//! transformers with the logits we compute.

mod common;
#[path = "common/finetune.rs"]
mod finetune;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::*;
use mamba_model::MambaLM;

/// Shard size the fine-tuned f32 checkpoint was saved with (examples/finetune_fixtures.rs).
const SHARD_BYTES: usize = 40_000;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pretrained")
}

fn logits(name: &str) -> (Tensor, Tensor) {
    let t = candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).unwrap();
    (
        t["input_ids"].to_dtype(DType::U32).unwrap(),
        t["logits"].clone(),
    )
}

fn assert_rel(what: &str, ours: &Tensor, theirs: &Tensor) {
    let scale = vec(theirs).iter().fold(0f64, |m, x| m.max(x.abs()));
    assert_close(what, ours, theirs, 1e-4 * scale, 1e-4);
}

#[test]
fn every_layout_loads_with_transformers_logits() {
    for (dir, want) in [
        ("padded", "logits.safetensors"),
        ("sharded", "logits.safetensors"),
        ("mamba_ssm", "logits.safetensors"),
        ("f16", "f16_logits.safetensors"),
    ] {
        let (model, _) = MambaLM::load(fixtures().join(dir), &Device::Cpu).unwrap();
        let cfg = model.config();
        assert_eq!((cfg.padded_vocab(), cfg.d_model), (304, 24), "{dir}");
        assert!(cfg.tie_embeddings, "{dir}");
        let (ids, want) = logits(want);
        let ours = model.forward(&ids, None).unwrap();
        assert_rel(&format!("logits of {dir}"), &ours, &want);
    }
}

#[test]
fn fine_tuned_checkpoints_load_in_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, saved, shard, want) in [
        (
            "padded",
            "finetuned",
            SHARD_BYTES,
            "finetuned_logits.safetensors",
        ),
        (
            "sharded",
            "finetuned",
            SHARD_BYTES,
            "finetuned_logits.safetensors",
        ),
        (
            "mamba_ssm",
            "finetuned",
            SHARD_BYTES,
            "finetuned_logits.safetensors",
        ),
        (
            "f16",
            "finetuned_f16",
            usize::MAX,
            "finetuned_f16_logits.safetensors",
        ),
    ] {
        let (model, varmap) = MambaLM::load(fixtures().join(dir), &Device::Cpu).unwrap();
        let losses = finetune::finetune(&model, &varmap);
        assert!(losses[2] < losses[0], "{dir}: {losses:?}");
        let out = tmp.path().join(dir);
        model.save_sharded(&out, shard).unwrap();
        // mamba_ssm's config.json keeps the unpadded vocabulary: the same model, other keys.
        let skip: &[&str] = if dir == "mamba_ssm" {
            &["config.json"]
        } else {
            &[]
        };
        same_files(&out, &fixtures().join(saved), skip);
        let (ids, want) = logits(want);
        let (reloaded, _) = MambaLM::load(&out, &Device::Cpu).unwrap();
        let ours = reloaded.forward(&ids, None).unwrap();
        assert_rel(&format!("{dir} fine-tuned, in transformers"), &ours, &want);
    }
}

#[test]
fn broken_layouts_are_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(
        fixtures().join("sharded/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let e = MambaLM::load(dir, &Device::Cpu).err().unwrap().to_string();
    assert!(
        e.contains("no weights") && e.contains("model.safetensors"),
        "{e}"
    );
    // An index naming a shard that does not hold the tensor.
    let index =
        std::fs::read_to_string(fixtures().join("sharded/model.safetensors.index.json")).unwrap();
    for f in std::fs::read_dir(fixtures().join("sharded")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    let v: serde_json::Value = serde_json::from_str(&index).unwrap();
    let (name, file) = v["weight_map"].as_object().unwrap().iter().next().unwrap();
    let other = if file.as_str() == Some("model-00001-of-00003.safetensors") {
        "model-00002-of-00003.safetensors"
    } else {
        "model-00001-of-00003.safetensors"
    };
    let broken = index.replacen(
        &format!("\"{name}\": {file}"),
        &format!("\"{name}\": \"{other}\""),
        1,
    );
    assert_ne!(broken, index);
    std::fs::write(dir.join("model.safetensors.index.json"), broken).unwrap();
    let e = MambaLM::load(dir, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("index.json") && e.contains(name.as_str()), "{e}");
    // mamba_ssm configs of other models are refused by name.
    let ssm = std::fs::read_to_string(fixtures().join("mamba_ssm/config.json")).unwrap();
    std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
    for (from, to, says) in [
        (
            "\"ssm_cfg\": {}",
            "\"ssm_cfg\": {\"layer\": \"Mamba4\"}",
            "Mamba4",
        ),
        (
            "\"d_intermediate\": 0",
            "\"d_intermediate\": 96",
            "d_intermediate",
        ),
        ("\"rms_norm\": true", "\"rms_norm\": false", "rms_norm"),
    ] {
        std::fs::write(dir.join("config.json"), ssm.replace(from, to)).unwrap();
        let e = MambaLM::load(dir, &Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("config.json") && e.contains(says), "{e}");
    }
}
