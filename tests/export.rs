//! End-to-end tests of `mamba export`: checkpoints of both kinds (a tokenizer trained here, and
//! the GPT-NeoX-style fixture whose vocabulary is shorter than the embedding) written as GGUF
//! and read back by candle's reader and by the `gguf` package (llama.cpp's own reader); every
//! tensor and key equals the checkpoint's; q8_0 quantizes what llama.cpp's converter does; what
//! llama.cpp would compute differently is refused with one line and exit status 2.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use common::*;
use mamba_model::{Config, LayerKind, MambaLM};
use mamba_pipeline::tokenize::Vocab;

/// A checkpoint of a random tiny model of `kind` and a tokenizer trained on a few sentences.
fn checkpoint(dir: &Path, kind: LayerKind) {
    let texts = ["The quick brown fox jumps over the lazy dog. Hello world!"; 10];
    let vocab = Vocab::train(texts.iter(), 300).unwrap();
    let cfg = Config::arch_preset(kind, "tiny", vocab.vocab_size()).unwrap();
    let (model, _) = MambaLM::init(&cfg, 4, &Device::Cpu).unwrap();
    model.save(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), vocab.to_json().unwrap()).unwrap();
}

fn read(path: &Path) -> (Content, HashMap<String, Tensor>) {
    let mut f = std::fs::File::open(path).unwrap();
    let content = Content::read(&mut f).unwrap();
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    let tensors = names
        .into_iter()
        .map(|n| {
            let q = content.tensor(&mut f, &n, &Device::Cpu).unwrap();
            (n, q.dequantize(&Device::Cpu).unwrap())
        })
        .collect();
    (content, tensors)
}

fn u32_of(c: &Content, key: &str) -> u32 {
    c.metadata[key].to_u32().unwrap()
}

/// Runs the `gguf` package's check of `gguf` against the checkpoint `dir`.
fn check_with_gguf_package(gguf: &Path, dir: &Path) -> String {
    let out = Command::new("python3")
        .arg(repo().join("tests/check_gguf.py"))
        .args([gguf, dir])
        .output()
        .expect("python3");
    ok(&out)
}

#[test]
fn f32_exports_equal_the_checkpoint_for_both_kinds() {
    for kind in [LayerKind::Mamba1, LayerKind::Mamba2] {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, out) = (tmp.path().join("ck"), tmp.path().join("model.gguf"));
        checkpoint(&dir, kind);
        ok(&mamba(&["export", s(&dir), s(&out), "--type", "f32"]));
        let arch = kind.gguf_arch();
        let said = check_with_gguf_package(&out, &dir);
        assert!(said.ends_with("all equal\n"), "{said}");

        let (c, t) = read(&out);
        let (model, _) = MambaLM::load(&dir, &Device::Cpu).unwrap();
        let cfg = model.config();
        // Every key, and no other.
        let mut keys: Vec<&str> = c.metadata.keys().map(String::as_str).collect();
        keys.sort();
        let own = |k: &str| format!("{arch}.{k}");
        let mut want: Vec<String> = [
            "context_length",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "block_count",
            "attention.layer_norm_rms_epsilon",
            "ssm.conv_kernel",
            "ssm.inner_size",
            "ssm.state_size",
            "ssm.time_step_rank",
        ]
        .map(own)
        .into_iter()
        .chain((kind == LayerKind::Mamba2).then(|| own("ssm.group_count")))
        .chain(
            [
                "general.architecture",
                "general.type",
                "general.file_type",
                "general.quantization_version",
                "general.name",
                "tokenizer.ggml.model",
                "tokenizer.ggml.pre",
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
            ]
            .map(String::from),
        )
        .collect();
        want.sort();
        assert_eq!(keys, want);
        // Every tensor: the embedding and norm, and each layer's own under llama.cpp's names.
        let per_layer = match kind {
            LayerKind::Mamba1 => 10,
            _ => 9,
        };
        assert_eq!(t.len(), 2 + 2 * per_layer);
        assert_eq!(
            c.metadata["general.architecture"].to_string().unwrap(),
            arch
        );
        assert_eq!(u32_of(&c, "general.file_type"), 0);
        assert_eq!(u32_of(&c, &format!("{arch}.block_count")), 2);
        assert_eq!(u32_of(&c, &format!("{arch}.embedding_length")), 64);
        assert_eq!(u32_of(&c, &format!("{arch}.ssm.inner_size")), 128);
        assert_eq!(
            u32_of(&c, &format!("{arch}.ssm.state_size")) as usize,
            cfg.d_state
        );
        let rank = match kind {
            LayerKind::Mamba1 => cfg.dt_rank(),
            _ => cfg.n_heads(),
        };
        assert_eq!(
            u32_of(&c, &format!("{arch}.ssm.time_step_rank")) as usize,
            rank
        );
        let eps = c.metadata[&format!("{arch}.attention.layer_norm_rms_epsilon")]
            .to_f32()
            .unwrap();
        assert_eq!(eps, 1e-5);
        // The embedding, tied: no output.weight; the model's own A as llama.cpp wants it.
        let emb = model.tensor("backbone.embeddings.weight").unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            let d = (a.flatten_all().unwrap() - b.flatten_all().unwrap()).unwrap();
            d.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        assert_eq!(diff(&t["token_embd.weight"], &emb), 0.0);
        assert!(!t.contains_key("output.weight"));
        let a_log = model.tensor("backbone.layers.1.mixer.A_log").unwrap();
        let a = a_log.exp().unwrap().neg().unwrap();
        assert_eq!(diff(&t["blk.1.ssm_a"], &a), 0.0);
        let tokens = c.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
        assert_eq!(tokens.len(), cfg.padded_vocab());
        assert_eq!(
            c.metadata["tokenizer.ggml.pre"].to_string().unwrap(),
            "gpt-2"
        );
        let types = c.metadata["tokenizer.ggml.token_type"].to_vec().unwrap();
        // <|endoftext|> is the trained tokenizer's id 0: a control token, never text.
        assert_eq!(tokens[0].to_string().unwrap(), "<|endoftext|>");
        assert_eq!(types[0].to_i32().unwrap(), 3);
        assert_eq!(u32_of(&c, "tokenizer.ggml.eos_token_id"), 0);
    }
}

#[test]
fn a_neox_style_tokenizer_shorter_than_the_embedding_is_padded() {
    let dir = repo().join("model/tests/fixtures/pretrained/padded");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("neox.gguf");
    let o = mamba(&["export", s(&dir), s(&out), "--type", "f32"]);
    ok(&o);
    // llama.cpp skips the tokenizer's NFC normalizer: said, not hidden.
    assert!(String::from_utf8_lossy(&o.stderr).contains("NFC"));
    check_with_gguf_package(&out, &dir);
    let (c, _) = read(&out);
    let tokens = c.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
    let types = c.metadata["tokenizer.ggml.token_type"].to_vec().unwrap();
    assert_eq!(tokens.len(), 304);
    assert_eq!(tokens[300].to_string().unwrap(), "[PAD300]");
    assert_eq!(types[303].to_i32().unwrap(), 5);
    assert_eq!(tokens[1].to_string().unwrap(), "<|padding|>");
    assert_eq!(types[1].to_i32().unwrap(), 3);
    let merges = c.metadata["tokenizer.ggml.merges"].to_vec().unwrap();
    assert_eq!(merges[0].to_string().unwrap(), "Ġ a");
}

#[test]
fn q8_0_quantizes_the_projections_llama_cpp_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, out) = (tmp.path().join("ck"), tmp.path().join("q8.gguf"));
    checkpoint(&dir, LayerKind::Mamba1);
    ok(&mamba(&["export", s(&dir), s(&out), "--type", "q8_0"]));
    let mut f = std::fs::File::open(&out).unwrap();
    let c = Content::read(&mut f).unwrap();
    assert_eq!(u32_of(&c, "general.file_type"), 7);
    let ty = |n: &str| c.tensor_infos[n].ggml_dtype;
    // Rows of 64 and 128: q8_0. dt_proj's rows of dt_rank 4 are no multiple of 32: f16, as
    // llama.cpp's converter falls back. Norms, conv, A and D stay f32.
    assert_eq!(ty("token_embd.weight"), GgmlDType::Q8_0);
    assert_eq!(ty("blk.0.ssm_in.weight"), GgmlDType::Q8_0);
    assert_eq!(ty("blk.0.ssm_x.weight"), GgmlDType::Q8_0);
    assert_eq!(ty("blk.0.ssm_out.weight"), GgmlDType::Q8_0);
    assert_eq!(ty("blk.0.ssm_dt.weight"), GgmlDType::F16);
    for n in [
        "blk.0.ssm_a",
        "blk.0.ssm_d",
        "blk.0.ssm_conv1d.weight",
        "output_norm.weight",
    ] {
        assert_eq!(ty(n), GgmlDType::F32, "{n}");
    }
    let (model, _) = MambaLM::load(&dir, &Device::Cpu).unwrap();
    let w = model
        .tensor("backbone.layers.0.mixer.in_proj.weight")
        .unwrap();
    let q = c
        .tensor(&mut f, "blk.0.ssm_in.weight", &Device::Cpu)
        .unwrap();
    let q = q.dequantize(&Device::Cpu).unwrap();
    let err = (q - &w).unwrap().abs().unwrap().max_all().unwrap();
    let range = w.abs().unwrap().max_all().unwrap();
    // One step of 8 bits of each block's own range.
    let (err, range) = (
        err.to_scalar::<f32>().unwrap(),
        range.to_scalar::<f32>().unwrap(),
    );
    assert!(err > 0.0 && err <= range / 127.0, "{err} of {range}");
}

#[test]
fn what_llama_cpp_computes_differently_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    checkpoint(&dir, LayerKind::Mamba1);
    let out = tmp.path().join("x.gguf");
    let refused = |why: &str| {
        let o = mamba(&["export", s(&dir), s(&out)]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(why) && err.lines().count() == 1, "{err}");
        assert!(!out.exists() && !out.with_extension("gguf.tmp").exists());
    };
    let tok_path = dir.join("tokenizer.json");
    let tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tok_path).unwrap()).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut t = tok.clone();
        f(&mut t);
        std::fs::write(&tok_path, serde_json::to_vec(&t).unwrap()).unwrap();
    };
    with(&|t| t["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "▁"}));
    refused("pre-tokenizer Metaspace");
    with(&|t| t["pre_tokenizer"]["add_prefix_space"] = true.into());
    refused("add_prefix_space");
    with(&|t| t["normalizer"] = serde_json::json!({"type": "Lowercase"}));
    refused("normalizer Lowercase");
    std::fs::remove_file(&tok_path).unwrap();
    refused("no tokenizer.json");

    // A model of both kinds has no llama.cpp architecture.
    let mixed = Config {
        layers: vec![LayerKind::Mamba1, LayerKind::Mamba2],
        ..Config::arch_preset(LayerKind::Mamba2, "tiny", 300).unwrap()
    };
    let (model, _) = MambaLM::init(&mixed, 1, &Device::Cpu).unwrap();
    model.save(&dir).unwrap();
    with(&|_| {});
    refused("several layer kinds");
    let bad = mamba(&["export", s(&dir), s(&out), "--type", "q4"]);
    assert_eq!(bad.status.code(), Some(2));
}
