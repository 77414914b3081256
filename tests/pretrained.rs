//! The README's fine-tuning flow on pretrained checkpoints made by transformers
//! (model/tests/fixtures/pretrained/, script there): ingest with the model's tokenizer,
//! `train --init`, `generate`, for mamba_ssm's own layout and an untied head; and
//! `mamba convert` to transformers' layout, which keeps transformers' logits.

// Only the binary runner of the train tests' helpers is used here.
#[allow(dead_code)]
#[path = "train/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::{bin, s};
use mamba_model::MambaLM;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("model/tests/fixtures")
        .join(name)
}

fn ok(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}: {err}", o.status.code());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// ingest -> train --init -> generate, as the README shows it; returns the final checkpoint.
fn fine_tune(model: &Path, dir: &Path) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let shards = dir.join("shards");
    let o = bin()
        .args([
            "ingest",
            s(&data),
            s(&shards),
            "--tokenizer",
            s(model),
            "-q",
        ])
        .args(["--val-fraction", "0.2"])
        .output()
        .unwrap();
    ok(&o);
    let ck = dir.join("ck");
    let o = bin()
        .args(["train", "--shards", s(&shards), "--init", s(model)])
        .args([
            "--checkpoint-dir",
            s(&ck),
            "--max-steps",
            "3",
            "--seq-len",
            "32",
        ])
        .args(["--batch-size", "2", "--eval-every", "3", "-q"])
        .output()
        .unwrap();
    ok(&o);
    let final_dir = ck.join("final");
    let o = bin()
        .args(["generate", "--checkpoint", s(&final_dir), "--prompt", "def"])
        .args(["--max-new-tokens", "8", "--seed", "1"])
        .output()
        .unwrap();
    assert!(ok(&o).starts_with("def"));
    final_dir
}

#[test]
fn mamba_ssm_checkpoints_fine_tune_in_three_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("pretrained/mamba_ssm");
    let out = fine_tune(&model, tmp.path());
    // The fine-tuned model is the pretrained one moved a little, in transformers' layout.
    let (before, _) = MambaLM::load(&model, &Device::Cpu).unwrap();
    let (after, _) = MambaLM::load(&out, &Device::Cpu).unwrap();
    assert_eq!(after.config().padded_vocab(), 304);
    let name = "backbone.layers.0.mixer.in_proj.weight";
    let (a, b) = (before.tensor(name).unwrap(), after.tensor(name).unwrap());
    let moved = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert!(
        moved.to_scalar::<f32>().unwrap() > 0.0,
        "training changed nothing"
    );
    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(cfg.contains("\"hidden_size\": 24"), "{cfg}");
}

#[test]
fn untied_heads_fine_tune_and_stay_untied() {
    let tmp = tempfile::tempdir().unwrap();
    // The padded transformers fixture given a head of its own (half its embedding), as an
    // untied checkpoint is published: config.json says tie_word_embeddings: false.
    let model = tmp.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let src = fixture("pretrained/padded");
    std::fs::copy(src.join("tokenizer.json"), model.join("tokenizer.json")).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    let cfg = cfg.replace(
        "\"tie_word_embeddings\": true",
        "\"tie_word_embeddings\": false",
    );
    std::fs::write(model.join("config.json"), cfg).unwrap();
    let (padded, _) = MambaLM::load(&src, &Device::Cpu).unwrap();
    let mut named = padded.named_tensors();
    named.push(("lm_head.weight".into(), (&named[0].1 * 0.5).unwrap()));
    let weights = model.join("model.safetensors");
    mamba_model::io::safetensors::write_safetensors(&weights, &named, &[]).unwrap();
    let out = fine_tune(&model, tmp.path());
    let (after, _) = MambaLM::load(&out, &Device::Cpu).unwrap();
    assert!(!after.config().tie_embeddings);
    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(cfg.contains("\"tie_word_embeddings\": false"), "{cfg}");
}

#[test]
fn convert_writes_transformers_layout_with_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("hf");
    let o = bin()
        .args(["convert", s(&fixture("pretrained/mamba_ssm")), s(&dst)])
        .output()
        .unwrap();
    assert!(ok(&o).contains("copied tokenizer.json"));
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dst.join(f).is_file(), "{f}");
    }
    let t = candle_core::safetensors::load(fixture("pretrained/logits.safetensors"), &Device::Cpu)
        .unwrap();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let (model, _) = MambaLM::load(&dst, &Device::Cpu).unwrap();
    let diff = (model.forward(&ids, None).unwrap() - &t["logits"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-4, "logits differ from transformers' by {diff}");
    // An existing destination is refused with exit status 2; nothing is half-written.
    let o = bin()
        .args(["convert", s(&fixture("pretrained/padded")), s(&dst)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an empty directory"));
    let o = bin()
        .args([
            "convert",
            s(&tmp.path().join("missing")),
            s(&tmp.path().join("x")),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!tmp.path().join("x").exists());
}

/// The same three commands on the hybrid families' checkpoints (transformers' save_pretrained
/// of Bamba, Granite 4.0-H and Nemotron-H, with a tokenizer): the fine-tuned model is saved in
/// the family's own layout and config.json, its weights moved.
#[test]
fn hybrid_checkpoints_fine_tune_in_three_commands() {
    for (name, model_type, weight) in [
        (
            "hf_bamba",
            "bamba",
            "model.layers.1.self_attn.q_proj.weight",
        ),
        (
            "hf_granite_h",
            "granitemoehybrid",
            "model.layers.0.shared_mlp.input_linear.weight",
        ),
        (
            "hf_nemotron_h",
            "nemotron_h",
            "backbone.layers.2.mixer.k_proj.weight",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("model/tests/fixtures")
            .join(name);
        let out = fine_tune(&model, tmp.path());
        let read = |d: &Path| {
            candle_core::safetensors::load(d.join("model.safetensors"), &Device::Cpu).unwrap()
        };
        let (before, after) = (read(&model), read(&out));
        let mut names: Vec<&String> = after.keys().collect();
        names.sort();
        let mut want: Vec<&String> = before.keys().collect();
        want.sort();
        assert_eq!(names, want, "{name}");
        let moved = (&before[weight] - &after[weight]).unwrap().abs().unwrap();
        let moved = moved.max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(moved > 0.0, "{name}: training changed nothing");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["model_type"], model_type, "{name}");
    }
}

/// `mamba convert --mamba-ssm` writes mamba_ssm's layout (config.json with ssm_cfg,
/// pytorch_model.bin); without it, a Mamba-3 model becomes flash-linear-attention's
/// Mamba3ForCausalLM. Both read back with the same logits.
#[test]
fn convert_writes_either_layout_of_a_mamba3_model() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/fixtures/mamba_ssm_mamba3");
    let (want, _) = MambaLM::load(&src, &Device::Cpu).unwrap();
    let ids = candle_core::Tensor::new(&[[3u32, 14, 15, 9, 26, 5]], &Device::Cpu).unwrap();
    let logits = want.forward(&ids, None).unwrap();
    for (flag, file, says) in [
        (
            Some("--mamba-ssm"),
            "pytorch_model.bin",
            "\"layer\": \"Mamba3\"",
        ),
        (None, "model.safetensors", "Mamba3ForCausalLM"),
    ] {
        let out = tmp.path().join(file);
        let mut cmd = bin();
        cmd.args(["convert", s(&src), s(&out)]);
        cmd.args(flag);
        ok(&cmd.output().unwrap());
        assert!(out.join(file).is_file(), "{file}");
        let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
        assert!(cfg.contains(says), "{cfg}");
        let (got, _) = MambaLM::load(&out, &Device::Cpu).unwrap();
        let diff = (got.forward(&ids, None).unwrap() - &logits)
            .unwrap()
            .abs()
            .unwrap();
        let diff = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{file}: {diff}");
    }
}
