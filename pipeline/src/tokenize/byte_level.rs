//! A fast path for the common tokenizer shape — no normalizer, the GPT-2 byte-level
//! pre-tokenizer, a BPE model — that gives the same ids as `Tokenizer::encode` without its
//! bookkeeping (alignments, offsets, token strings), with a per-thread word -> ids cache in
//! front of the BPE. Text that contains an added token takes the general path.

use std::collections::HashMap;

use aho_corasick::AhoCorasick;
use regex::Regex;
use tokenizers::models::bpe::BPE;
use tokenizers::{Model, ModelWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer};

/// The GPT-2 split, less its `\s+(?!\S)` alternative (the regex crate has no look-ahead):
/// [`Splitter::next_word`] gives that rule back by hand.
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// Distinct words kept per encoder; past it, words are tokenized without being remembered.
const CACHE_WORDS: usize = 1 << 16;

/// What the fast path needs besides the tokenizer's own BPE model.
pub struct ByteLevelBpe {
    split: Regex,
    byte_char: [char; 256],
    add_prefix_space: bool,
    added: Option<AhoCorasick>,
}

impl ByteLevelBpe {
    /// The fast path for `tokenizer`, or `None` if it is not of the shape this handles.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Option<ByteLevelBpe> {
        let ModelWrapper::BPE(bpe) = tokenizer.get_model() else {
            return None;
        };
        let Some(PreTokenizerWrapper::ByteLevel(pre)) = tokenizer.get_pre_tokenizer() else {
            return None;
        };
        let plain_post = matches!(
            tokenizer.get_post_processor(),
            None | Some(PostProcessorWrapper::ByteLevel(_))
        );
        if !pre.use_regex
            || tokenizer.get_normalizer().is_some()
            || !plain_post
            || bpe.dropout.is_some_and(|p| p > 0.0)
        {
            return None;
        }
        // Special tokens are encoded as text (see `Vocab`); only the others are matched.
        let added: Vec<String> = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| !t.special)
            .map(|t| t.content)
            .filter(|c| !c.is_empty())
            .collect();
        let added = match added.is_empty() {
            true => None,
            false => Some(AhoCorasick::new(&added).ok()?),
        };
        Some(ByteLevelBpe {
            split: Regex::new(GPT2_SPLIT).ok()?,
            byte_char: byte_chars(),
            add_prefix_space: pre.add_prefix_space,
            added,
        })
    }

    /// Whether `text` holds a (non-special) added token, which the general path must split
    /// out first.
    pub fn has_added_token(&self, text: &str) -> bool {
        self.added.as_ref().is_some_and(|m| m.is_match(text))
    }
}

/// Encodes text on one thread, remembering the ids of the words it has seen.
pub struct WordCache {
    words: HashMap<Box<str>, Box<[u32]>>,
    mapped: String,
}

impl WordCache {
    pub fn new() -> WordCache {
        WordCache {
            words: HashMap::new(),
            mapped: String::new(),
        }
    }

    /// Appends the ids of `text` to `ids`. The caller has checked that `text` is not empty
    /// and holds no added token that is matched in text.
    pub fn encode(
        &mut self,
        fast: &ByteLevelBpe,
        bpe: &BPE,
        text: &str,
        starts_text: bool,
        ids: &mut Vec<u32>,
    ) -> Result<(), String> {
        // The pre-tokenizer's optional leading space goes on a whole text before splitting
        // (not on a continuation: see `Encoder::encode_chunks`).
        let spaced;
        let text = match fast.add_prefix_space && starts_text && !text.starts_with(' ') {
            true => {
                spaced = format!(" {text}");
                spaced.as_str()
            }
            false => text,
        };
        let mut at = 0;
        while let Some(word) = next_word(&fast.split, text, at) {
            at += word.len();
            if let Some(hit) = self.words.get(word) {
                ids.extend_from_slice(hit);
                continue;
            }
            self.mapped.clear();
            self.mapped
                .extend(word.bytes().map(|b| fast.byte_char[b as usize]));
            let tokens = bpe.tokenize(&self.mapped).map_err(|e| e.to_string())?;
            let start = ids.len();
            ids.extend(tokens.iter().map(|t| t.id));
            if self.words.len() < CACHE_WORDS {
                self.words.insert(word.into(), ids[start..].into());
            }
        }
        Ok(())
    }
}

impl Default for WordCache {
    fn default() -> Self {
        WordCache::new()
    }
}

/// The next pre-tokenizer word of `text` from byte `at`. A whitespace run followed by more
/// text gives up its last character to the word after it, as `\s+(?!\S)` does.
fn next_word<'t>(split: &Regex, text: &'t str, at: usize) -> Option<&'t str> {
    let m = split.find_at(text, at)?;
    // Every character is whitespace, a letter, a number or something else: no gaps.
    debug_assert_eq!(m.start(), at);
    let word = &text[at..m.end()];
    if m.end() < text.len() && word.chars().all(char::is_whitespace) {
        if let Some(last) = word.chars().next_back() {
            if word.len() > last.len_utf8() {
                return Some(&word[..word.len() - last.len_utf8()]);
            }
        }
    }
    Some(word)
}

/// GPT-2's reversible map from bytes to printable characters, as the byte-level
/// pre-tokenizer applies it.
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        map[b as usize] = match printable(b) {
            true => char::from(b),
            false => {
                next += 1;
                char::from_u32(next - 1).unwrap_or('\0')
            }
        };
    }
    map
}
