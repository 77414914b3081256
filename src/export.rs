//! `mamba export`: a checkpoint as one GGUF file that llama.cpp (and so ollama and LM Studio)
//! runs: the model under llama.cpp's names ([`mamba_model::io::gguf`]) and its tokenizer as
//! `tokenizer.ggml.*`. Only what llama.cpp splits and decodes as the tokenizer does is
//! written: a byte-level BPE (GPT-2 and GPT-NeoX style, and what `mamba ingest` trains),
//! whose pre-tokenizer is the GPT-2 pattern that llama.cpp implements by hand as `gpt-2`.
//! Anything else is refused with the reason.

use std::path::{Path, PathBuf};

use candle_core::Device;
use mamba_model::io::gguf::{Gguf, GgufType, Meta};
use mamba_pipeline::tokenize::Vocab;
use serde_json::Value;

use crate::train::checkpoint::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}: no tokenizer.json beside the model (llama.cpp needs the tokenizer in the file)")]
    NoTokenizer(String),
    #[error("{path}: {reason}")]
    Tokenizer { path: String, reason: String },
    #[error(transparent)]
    Checkpoint(#[from] crate::train::checkpoint::CheckpointError),
    #[error(transparent)]
    Model(#[from] mamba_model::Error),
    #[error(transparent)]
    Vocab(#[from] mamba_pipeline::tokenize::TokenizeError),
}

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// What an export wrote.
#[derive(Debug)]
pub struct Exported {
    pub arch: &'static str,
    pub bytes: u64,
    /// Things the user should know (e.g. a normalizer llama.cpp does not apply).
    pub notes: Vec<String>,
}

/// Writes the checkpoint `dir` as `out` with matrices in `ty`.
pub fn export(dir: &Path, out: &Path, ty: GgufType) -> Result<Exported, ExportError> {
    let ck = Checkpoint::open(dir, &Device::Cpu)?;
    let tok = ck
        .tokenizer
        .clone()
        .ok_or_else(|| ExportError::NoTokenizer(dir.display().to_string()))?;
    let cfg = ck.model.config();
    let vocab = Vocab::load(&tok, None)?;
    let mut gguf = Gguf::of_model(&ck.model, ty)?;
    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(dir))
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "mamba".into());
    gguf.push_meta("general.name", Meta::Str(name));
    let (meta, notes) = tokenizer_meta(&tok, vocab.eos_id, cfg.padded_vocab())?;
    for (k, v) in meta {
        gguf.push_meta(&k, v);
    }
    gguf.write(out)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let arch = cfg
        .kind()
        .map(|k| k.gguf_arch())
        .unwrap_or("(several kinds)");
    Ok(Exported { arch, bytes, notes })
}

/// GGUF metadata keys and their values, in writing order.
pub type Metadata = Vec<(String, Meta)>;

/// The `tokenizer.ggml.*` keys of the tokenizer at `path` for a model of `rows` embedding
/// rows (the token list is padded to them with unused `[PADi]` tokens, as llama.cpp's
/// converter does), and notes for the user; refuses a tokenizer llama.cpp would split or
/// decode differently.
pub fn tokenizer_meta(
    path: &Path,
    eos_id: u32,
    rows: usize,
) -> Result<(Metadata, Vec<String>), ExportError> {
    let bad = |reason: String| ExportError::Tokenizer {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let j: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let notes = check_family(&j).map_err(bad)?;
    let model = &j["model"];
    let mut tokens: Vec<Option<String>> = vec![None; rows];
    let mut types = vec![NORMAL; rows];
    let mut place = |id: u64, token: &str, kind: i32| -> Result<(), String> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            format!("token {token:?} has id {id}, past the model's {rows} embedding rows")
        })?;
        *slot = Some(token.to_string());
        types[id as usize] = kind;
        Ok(())
    };
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("no model.vocab".into()))?;
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("token {token:?} has no id")))?;
        place(id, token, NORMAL).map_err(bad)?;
    }
    for t in j["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(bad(format!("added token without id or content: {t}")));
        };
        // A special token is only ever put in by the pipeline (CONTROL: never matched in
        // text unless asked); another added token is matched in text as HF does.
        let kind = match t["special"].as_bool().unwrap_or(false) {
            true => CONTROL,
            false => USER_DEFINED,
        };
        place(id, content, kind).map_err(bad)?;
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = UNUSED;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = tokens.iter().find(|t| !seen.insert(t.as_str())) {
        return Err(bad(format!(
            "the token {dup:?} appears twice (llama.cpp needs every token string once)"
        )));
    }
    let merges = model["merges"]
        .as_array()
        .ok_or_else(|| bad("no model.merges".into()))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 => Ok(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            )),
            _ => Err(bad(format!("merge {m} is neither \"a b\" nor [a, b]"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = vec![
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("gpt-2".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.merges", Meta::Strs(merges)),
        // llama.cpp's defaults for a GPT-2 vocabulary are 11: always say which they are.
        ("tokenizer.ggml.bos_token_id", Meta::U32(eos_id)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(eos_id)),
        // `mamba generate` puts nothing before or after a prompt.
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
        ("tokenizer.ggml.add_eos_token", Meta::Bool(false)),
    ];
    let meta = meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok((meta, notes))
}

/// Whether llama.cpp's `gpt2` vocabulary with the `gpt-2` pre-tokenizer computes this
/// tokenizer: a BPE over bytes (ByteLevel pre-tokenizer with the GPT-2 pattern, no prefix
/// space; ByteLevel decoder), and no normalizer, or NFC (which llama.cpp skips: a note).
fn check_family(j: &Value) -> Result<Vec<String>, String> {
    let what = |v: &Value| v["type"].as_str().unwrap_or("none").to_string();
    if what(&j["model"]) != "BPE" {
        return Err(format!(
            "a {} tokenizer: only byte-level BPE tokenizers (GPT-2, GPT-NeoX style, as \
             `mamba ingest` trains) can be exported for llama.cpp",
            what(&j["model"])
        ));
    }
    let pre = &j["pre_tokenizer"];
    let byte_level = match what(pre).as_str() {
        "ByteLevel" => Some(pre),
        "Sequence" => match pre["pretokenizers"].as_array().map(Vec::as_slice) {
            Some([one]) if what(one) == "ByteLevel" => Some(one),
            _ => None,
        },
        _ => None,
    };
    let Some(bl) = byte_level else {
        return Err(format!(
            "pre-tokenizer {}: llama.cpp splits byte-level BPE text with the GPT-2 pattern \
             only (a SentencePiece-style or other tokenizer cannot be exported yet)",
            what(pre)
        ));
    };
    if bl["add_prefix_space"].as_bool().unwrap_or(false) {
        return Err(
            "the tokenizer puts a space before each text (add_prefix_space): llama.cpp's \
             byte-level BPE never does, so prompts would tokenize differently"
                .into(),
        );
    }
    if !bl["use_regex"].as_bool().unwrap_or(true) {
        return Err(
            "the ByteLevel pre-tokenizer does not split with the GPT-2 pattern \
                    (use_regex false), which llama.cpp always does"
                .into(),
        );
    }
    if what(&j["decoder"]) != "ByteLevel" {
        return Err(format!(
            "decoder {}: a byte-level BPE decodes with ByteLevel",
            what(&j["decoder"])
        ));
    }
    match what(&j["normalizer"]).as_str() {
        "none" => Ok(vec![]),
        "NFC" => Ok(vec![
            "llama.cpp does not apply the tokenizer's NFC normalizer: text not already in NFC \
             form tokenizes differently there"
                .into(),
        ]),
        other => Err(format!(
            "normalizer {other}: llama.cpp applies none, so text would tokenize differently"
        )),
    }
}
