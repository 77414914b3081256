//! Tokenize: a Hugging Face tokenizer, loaded from a file or trained on the corpus itself.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// The end-of-text token the trained tokenizer reserves, placed between packed documents.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// End-of-text tokens looked for, in order, in a tokenizer given with `--tokenizer`.
const EOS_CANDIDATES: &[&str] = &[EOS_TOKEN, "</s>", "<eos>", "<|end_of_text|>"];

#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: String, reason: String },
    #[error(
        "tokenizer {path} has none of the end-of-text tokens {EOS_CANDIDATES:?}; pass --eos-token"
    )]
    NoEos { path: String },
    #[error("tokenizer {path} has no token {token:?} (given with --eos-token)")]
    UnknownEos { path: String, token: String },
    #[error("tokenizer training failed: {0}")]
    Train(String),
    #[error("cannot save tokenizer to {path}: {reason}")]
    Save { path: String, reason: String },
}

/// A tokenizer and the id of its end-of-text token.
pub struct Vocab {
    pub tokenizer: Tokenizer,
    pub eos_id: u32,
}

impl Vocab {
    /// Loads any Hugging Face `tokenizer.json`; `eos` names the end-of-text token if the
    /// usual ones are absent.
    pub fn load(path: &Path, eos: Option<&str>) -> Result<Vocab, TokenizeError> {
        let shown = path.display().to_string();
        let tokenizer = Tokenizer::from_file(path).map_err(|e| TokenizeError::Load {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let eos_id = match eos {
            Some(token) => {
                tokenizer
                    .token_to_id(token)
                    .ok_or_else(|| TokenizeError::UnknownEos {
                        path: shown.clone(),
                        token: token.into(),
                    })?
            }
            None => EOS_CANDIDATES
                .iter()
                .find_map(|t| tokenizer.token_to_id(t))
                .ok_or(TokenizeError::NoEos { path: shown })?,
        };
        Ok(Vocab { tokenizer, eos_id })
    }

    /// Trains a byte-level BPE of at most `vocab_size` tokens (with [`EOS_TOKEN`]) on `texts`.
    pub fn train<I, S>(texts: I, vocab_size: usize) -> Result<Vocab, TokenizeError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(EOS_TOKEN, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut tokenizer = Tokenizer::new(BPE::default());
        tokenizer
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevel::default()));
        tokenizer
            .train(&mut trainer, texts)
            .map_err(|e| TokenizeError::Train(e.to_string()))?;
        let eos_id = tokenizer
            .token_to_id(EOS_TOKEN)
            .ok_or_else(|| TokenizeError::Train("end-of-text token missing".into()))?;
        Ok(Vocab { tokenizer, eos_id })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of one chunk; chunks are bounded in size, so no encode call is huge.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let encoding = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| e.to_string())?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Writes the tokenizer as `tokenizer.json` bytes (compact, deterministic).
    pub fn to_json(&self) -> Result<String, TokenizeError> {
        self.tokenizer
            .to_string(false)
            .map_err(|e| TokenizeError::Save {
                path: "tokenizer.json".into(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: &[&str] = &[
        "the selective scan runs over the sequence once",
        "the state space model keeps a state per channel",
        "fn main() { println!(\"hello\"); }",
        "the scan and the state: the model",
    ];

    #[test]
    fn trained_bpe_round_trips_and_is_deterministic() {
        let a = Vocab::train(CORPUS.iter(), 300).unwrap();
        let b = Vocab::train(CORPUS.iter().rev(), 300).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        assert!(
            a.vocab_size() > 256 && a.vocab_size() <= 300,
            "{}",
            a.vocab_size()
        );
        let text = "the scan of the state — ünïcode too";
        let ids = a.encode(text).unwrap();
        assert!(ids.len() < text.len(), "merges should shorten common words");
        assert_eq!(a.tokenizer.decode(&ids, false).unwrap(), text);
        assert_eq!(a.encode(EOS_TOKEN).unwrap(), [a.eos_id]);
    }

    #[test]
    fn loads_a_saved_tokenizer_and_finds_eos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let trained = Vocab::train(CORPUS.iter(), 280).unwrap();
        std::fs::write(&path, trained.to_json().unwrap()).unwrap();
        let loaded = Vocab::load(&path, None).unwrap();
        assert_eq!(loaded.eos_id, trained.eos_id);
        assert_eq!(
            loaded.encode("the state").unwrap(),
            trained.encode("the state").unwrap()
        );
        let err = Vocab::load(&path, Some("<nope>"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("has no token \"<nope>\""), "{err}");
        let err = Vocab::load(&dir.path().join("missing.json"), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("cannot load tokenizer"), "{err}");
    }
}
