//! The tokenizer a chunk after a document's first is encoded with.
//!
//! Many tokenizers mark the start of a text as the start of a word: SentencePiece-style ones
//! put "▁" there (a Metaspace pre-tokenizer with a prepend scheme, or a `Prepend("▁")`
//! normalizer as Llama 2 ships), byte-level ones with `add_prefix_space` put a space. Encoding
//! each chunk as if it began a text would put a spurious space at every chunk join. The
//! continuation tokenizer is the same one without that mark.

use std::str::FromStr;

use serde_json::Value;
use tokenizers::Tokenizer;

/// `tokenizer` without its start-of-text word mark, or `None` when it puts none.
pub fn of(tokenizer: &Tokenizer) -> Result<Option<Tokenizer>, String> {
    let mut json = super::as_json(tokenizer)?;
    let mut changed = false;
    if let Some(pre) = json.get_mut("pre_tokenizer") {
        changed |= drop_pre_tokenizer_mark(pre);
    }
    if let Some(normalizer) = json.get_mut("normalizer") {
        if is_prepend(normalizer) {
            *normalizer = Value::Null;
            changed = true;
        } else {
            changed |= drop_prepend_normalizers(normalizer);
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut continuation = Tokenizer::from_str(&json.to_string()).map_err(|e| e.to_string())?;
    continuation.set_encode_special_tokens(tokenizer.get_encode_special_tokens());
    Ok(Some(continuation))
}

fn kind(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// Turns off the mark in a pre-tokenizer (nested in sequences); true if one was on.
fn drop_pre_tokenizer_mark(pre: &mut Value) -> bool {
    match kind(pre) {
        Some("Metaspace") => {
            let mut changed = false;
            // Current files say `prepend_scheme`; older ones `add_prefix_space`.
            if let Some(scheme) = pre.get_mut("prepend_scheme") {
                changed |= scheme.as_str() != Some("never");
                *scheme = Value::from("never");
            }
            if let Some(add) = pre.get_mut("add_prefix_space") {
                changed |= add.as_bool() == Some(true);
                *add = Value::Bool(false);
            }
            changed
        }
        Some("ByteLevel") => match pre.get_mut("add_prefix_space") {
            Some(add) if add.as_bool() == Some(true) => {
                *add = Value::Bool(false);
                true
            }
            _ => false,
        },
        Some("Sequence") => match pre.get_mut("pretokenizers").and_then(Value::as_array_mut) {
            Some(items) => items
                .iter_mut()
                .fold(false, |changed, p| drop_pre_tokenizer_mark(p) | changed),
            None => false,
        },
        _ => false,
    }
}

fn is_prepend(normalizer: &Value) -> bool {
    kind(normalizer) == Some("Prepend")
}

/// Removes `Prepend` normalizers from a normalizer sequence (nested too); true if any was.
fn drop_prepend_normalizers(normalizer: &mut Value) -> bool {
    if kind(normalizer) != Some("Sequence") {
        return false;
    }
    let Some(items) = normalizer
        .get_mut("normalizers")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = items.len();
    items.retain(|n| !is_prepend(n));
    let nested = items
        .iter_mut()
        .fold(false, |changed, n| drop_prepend_normalizers(n) | changed);
    nested || items.len() != before
}
