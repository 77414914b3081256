//! Tokenizers of the families users bring, built here with the `tokenizers` library in the
//! shapes their published `tokenizer.json` files have, and the properties every one of them
//! must keep in the pipeline: a document's chunks decode to what the whole document decodes
//! to, and a special token's literal in a document is text.

use std::str::FromStr;

use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use super::Vocab;
use crate::chunk;

/// Text the tokenizers are trained on: the repository's sample corpus.
fn corpus() -> Vec<String> {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let mut texts = Vec::new();
    for entry in walkdir::WalkDir::new(data).sort_by_file_name() {
        let entry = entry.unwrap();
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            texts.push(text);
        }
    }
    assert!(texts.len() >= 10, "the sample corpus is missing");
    texts
}

/// A BPE trained on the corpus with `pre`, its JSON edited by `shape`.
fn family(pre: PreTokenizerWrapper, special: &[&str], shape: impl FnOnce(&mut Value)) -> Vocab {
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(600)
        .show_progress(false)
        .special_tokens(special.iter().map(|s| AddedToken::from(*s, true)).collect())
        .build()
        .into();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.train(&mut trainer, corpus().into_iter()).unwrap();
    let mut json: Value = serde_json::from_str(&tokenizer.to_string(false).unwrap()).unwrap();
    shape(&mut json);
    let tokenizer = Tokenizer::from_str(&json.to_string()).unwrap();
    let eos = special
        .last()
        .and_then(|s| tokenizer.token_to_id(s))
        .unwrap();
    Vocab::new(tokenizer, eos).unwrap()
}

fn byte_level(add_prefix_space: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": true})
}

/// GPT-2: byte-level BPE, no prefix space, `<|endoftext|>`.
fn gpt2() -> Vocab {
    family(
        ByteLevel::new(false, true, true).into(),
        &["<|endoftext|>"],
        |j| {
            j["decoder"] = byte_level(false);
        },
    )
}

/// GPT-NeoX: byte-level with an NFC normalizer, the byte-level post-processor, and
/// non-special added tokens for runs of spaces.
fn neox() -> Vocab {
    family(
        ByteLevel::new(false, true, true).into(),
        &["<|endoftext|>"],
        |j| {
            j["normalizer"] = json!({"type": "NFC"});
            j["decoder"] = byte_level(false);
            j["post_processor"] = byte_level(false);
            let next = j["model"]["vocab"].as_object().unwrap().len();
            let added = j["added_tokens"].as_array_mut().unwrap();
            for (i, width) in [2, 4, 8].into_iter().enumerate() {
                added.push(
                    json!({"id": next + i, "content": " ".repeat(width), "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": true, "special": false}),
                );
            }
        },
    )
}

/// RoBERTa-like: byte-level that adds a space before a text.
fn prefix_space() -> Vocab {
    family(ByteLevel::new(true, true, true).into(), &["</s>"], |j| {
        j["decoder"] = byte_level(true);
    })
}

/// The vocabulary edits byte fallback needs: `<0x00>` .. `<0xFF>` tokens.
fn byte_fallback(j: &mut Value) {
    j["model"]["byte_fallback"] = json!(true);
    let vocab = j["model"]["vocab"].as_object_mut().unwrap();
    let first = vocab.len();
    for b in 0..=255u8 {
        vocab.insert(format!("<0x{b:02X}>"), json!(first + usize::from(b)));
    }
}

/// Mistral / current Llama: Metaspace pre-tokenizer ("▁" first), byte fallback.
fn metaspace() -> Vocab {
    let pre = Metaspace::new('▁', PrependScheme::First, true);
    family(pre.into(), &["<s>", "</s>"], |j| {
        byte_fallback(j);
        let meta = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false});
        j["pre_tokenizer"] = meta.clone();
        j["decoder"] = meta;
    })
}

/// Llama 2: no pre-tokenizer; a normalizer prepends "▁" and replaces spaces; byte fallback;
/// the decoder strips the leading space.
fn llama2() -> Vocab {
    let pre = Metaspace::new('▁', PrependScheme::Always, true);
    family(pre.into(), &["<s>", "</s>"], |j| {
        byte_fallback(j);
        j["pre_tokenizer"] = Value::Null;
        j["normalizer"] = json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]});
        j["decoder"] = json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
    })
}

fn families() -> Vec<(&'static str, Vocab)> {
    vec![
        ("gpt2", gpt2()),
        ("neox", neox()),
        ("prefix-space", prefix_space()),
        ("metaspace", metaspace()),
        ("llama2", llama2()),
    ]
}

/// Documents with awkward joins: space runs, tabs, CRLF, characters outside the vocabulary.
fn documents() -> Vec<String> {
    let mut docs = corpus();
    docs.push("word  word   word\tword \r\n  indented\n\n\nend ".repeat(12));
    docs.push("über 漢字 😀 naïve café — “quoted” ".repeat(15));
    docs.push(" leading space, trailing space ".repeat(10));
    docs
}

fn decode(vocab: &Vocab, ids: &[u32]) -> String {
    vocab.tokenizer.decode(ids, false).unwrap()
}

#[test]
fn chunks_decode_to_the_whole_document_for_every_family() {
    for (name, vocab) in families() {
        let mut encoder = vocab.encoder();
        let mut naive_differs = false;
        for doc in documents() {
            let whole = decode(&vocab, &encoder.encode(&doc).unwrap());
            for budget in [7, 16, 64, 300] {
                let chunks = chunk::text::split(&doc, budget);
                let joined: Vec<u32> = encoder.encode_chunks(&chunks).unwrap().concat();
                assert_eq!(decode(&vocab, &joined), whole, "{name}, budget {budget}");
                let naive: Vec<u32> = chunks
                    .iter()
                    .flat_map(|c| encoder.encode(c).unwrap())
                    .collect();
                naive_differs |= decode(&vocab, &naive) != whole;
            }
        }
        // The families that mark a text's start are the ones a naive join corrupts.
        let marks = !matches!(name, "gpt2" | "neox");
        assert_eq!(naive_differs, marks, "{name}");
    }
}

#[test]
fn a_special_tokens_literal_in_a_document_is_text() {
    for (name, vocab) in families() {
        let mut encoder = vocab.encoder();
        let specials: Vec<String> = vocab
            .tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(_, t)| t.content)
            .collect();
        for special in &specials {
            let doc = format!("see {special} here\n{special}");
            let ids = encoder
                .encode_chunks(&chunk::text::split(&doc, 9))
                .unwrap()
                .concat();
            let special_ids: Vec<u32> = specials
                .iter()
                .filter_map(|s| vocab.tokenizer.token_to_id(s))
                .collect();
            assert!(
                !ids.iter().any(|id| special_ids.contains(id)),
                "{name}: {ids:?}"
            );
            assert!(decode(&vocab, &ids).contains(special.as_str()), "{name}");
        }
    }
}
