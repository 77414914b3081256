//! Tokenize: a Hugging Face tokenizer, loaded from a file or trained on the corpus itself.

mod byte_level;
mod continuation;
#[cfg(test)]
mod families;

use std::path::Path;

use byte_level::{ByteLevelBpe, WordCache};

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, ModelWrapper, Tokenizer};

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
    #[error("cannot prepare the tokenizer for chunked text: {0}")]
    Continuation(String),
    #[error("cannot save tokenizer to {path}: {reason}")]
    Save { path: String, reason: String },
}

/// A tokenizer and the id of its end-of-text token.
///
/// Document text is always encoded as text: a special token's literal (`<|endoftext|>` in a
/// file about tokenizers) gives ordinary ids, so special ids appear only where the pipeline
/// puts them. A long document is encoded in chunks; every chunk after the first is encoded
/// as a continuation (see [`Encoder::encode_chunks`]), so the chunks' ids decode to the text.
pub struct Vocab {
    pub tokenizer: Tokenizer,
    pub eos_id: u32,
    /// `tokenizer` less the word-boundary mark it puts at the start of a text; `None` when
    /// it puts none.
    continuation: Option<Tokenizer>,
    fast: Option<ByteLevelBpe>,
}

impl Vocab {
    /// Loads any Hugging Face `tokenizer.json`; `eos` names the end-of-text token if the
    /// usual ones are absent.
    pub fn load(path: &Path, eos: Option<&str>) -> Result<Vocab, TokenizeError> {
        let shown = path.display().to_string();
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| TokenizeError::Load {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        // Chunks are encoded whole: a truncation or padding setting in the file would drop
        // or add tokens.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| TokenizeError::Load {
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
        Vocab::new(tokenizer, eos_id)
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
        // The trainer's `par_bridge` parks every worker of its pool on `texts` until text
        // arrives. In rayon's global pool those are the workers the producers of `texts` need
        // (lopdf parses object streams there): the trainer gets a pool of its own.
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("bpe-train-{i}"))
            .build()
            .map_err(|e| TokenizeError::Train(e.to_string()))?;
        pool.install(|| tokenizer.train(&mut trainer, texts).map(drop))
            .map_err(|e| TokenizeError::Train(e.to_string()))?;
        let eos_id = tokenizer
            .token_to_id(EOS_TOKEN)
            .ok_or_else(|| TokenizeError::Train("end-of-text token missing".into()))?;
        Vocab::new(tokenizer, eos_id)
    }

    fn new(mut tokenizer: Tokenizer, eos_id: u32) -> Result<Vocab, TokenizeError> {
        tokenizer.set_encode_special_tokens(true);
        let fast = ByteLevelBpe::for_tokenizer(&tokenizer);
        let continuation = continuation::of(&tokenizer).map_err(TokenizeError::Continuation)?;
        Ok(Vocab {
            tokenizer,
            eos_id,
            continuation,
            fast,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of one chunk; chunks are bounded in size, so no encode call is huge.
    /// Threads encoding many chunks should each keep an [`Encoder`] instead.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.encoder().encode(text)
    }

    /// An encoder for one thread: the same ids as [`Vocab::encode`], faster on repeated words.
    pub fn encoder(&self) -> Encoder<'_> {
        Encoder {
            vocab: self,
            words: WordCache::new(),
        }
    }

    /// The general path: the tokenizer's whole pipeline (for a continuation, the
    /// continuation tokenizer's).
    fn encode_general(&self, text: &str, after: bool) -> Result<Vec<u32>, String> {
        let tokenizer = match (after, &self.continuation) {
            (true, Some(continuation)) => continuation,
            _ => &self.tokenizer,
        };
        let encoding = tokenizer
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

/// `tokenizer` as the JSON value of its `tokenizer.json`, to read or edit its parts.
fn as_json(tokenizer: &Tokenizer) -> Result<serde_json::Value, String> {
    let text = tokenizer.to_string(false).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// The parts of a tokenizer file that decide what it does, in the order they act.
const PARTS: [&str; 6] = [
    "added_tokens",
    "normalizer",
    "pre_tokenizer",
    "model",
    "post_processor",
    "decoder",
];

/// Where two `tokenizer.json` files differ in what they do: the names of the parts (added
/// tokens, normalizer, pre-tokenizer, model with its vocabulary and merges, post-processor,
/// decoder) that are not the same. Their layout and their truncation and padding settings do
/// not count (chunks are encoded without them). Empty when they tokenize alike.
pub fn differences(a: &Path, b: &Path) -> Result<Vec<&'static str>, TokenizeError> {
    let canonical = |path: &Path| {
        let load = |reason: String| TokenizeError::Load {
            path: path.display().to_string(),
            reason,
        };
        let tokenizer = Tokenizer::from_file(path).map_err(|e| load(e.to_string()))?;
        as_json(&tokenizer).map_err(load)
    };
    let (a, b) = (canonical(a)?, canonical(b)?);
    Ok(PARTS.into_iter().filter(|p| a.get(p) != b.get(p)).collect())
}

/// Encodes chunks on one thread (see [`Vocab::encoder`]).
pub struct Encoder<'v> {
    vocab: &'v Vocab,
    words: WordCache,
}

impl Encoder<'_> {
    /// Token ids of `text` as a text of its own (a document, or its first chunk), exactly as
    /// the tokenizer's own `encode` gives them.
    pub fn encode(&mut self, text: &str) -> Result<Vec<u32>, String> {
        self.encode_part(text, false)
    }

    /// The ids of each of a document's chunks, in order. A chunk after the first continues
    /// the text before it: no word-boundary mark is put at its start, so the ids of all the
    /// chunks, joined, decode to what the whole document's ids decode to.
    pub fn encode_chunks<S: AsRef<str>>(&mut self, chunks: &[S]) -> Result<Vec<Vec<u32>>, String> {
        let parts = chunks.iter().enumerate();
        parts
            .map(|(i, c)| self.encode_part(c.as_ref(), i > 0))
            .collect()
    }

    fn encode_part(&mut self, text: &str, after: bool) -> Result<Vec<u32>, String> {
        let vocab = self.vocab;
        match (&vocab.fast, vocab.tokenizer.get_model()) {
            (Some(fast), ModelWrapper::BPE(bpe))
                if !text.is_empty() && !fast.has_added_token(text) =>
            {
                let mut ids = Vec::with_capacity(text.len() / 3);
                self.words.encode(fast, bpe, text, !after, &mut ids)?;
                Ok(ids)
            }
            _ => vocab.encode_general(text, after),
        }
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
        // A special token's literal in a document is text, never the special id.
        let literal = a.encode(&format!("a{EOS_TOKEN}b")).unwrap();
        assert!(!literal.contains(&a.eos_id), "{literal:?}");
        assert_eq!(
            a.tokenizer.decode(&literal, false).unwrap(),
            "a<|endoftext|>b"
        );
    }

    #[test]
    fn tokenizers_are_compared_by_what_they_do() {
        let dir = tempfile::tempdir().unwrap();
        let trained = Vocab::train(CORPUS.iter(), 280).unwrap();
        let compact = dir.path().join("compact.json");
        std::fs::write(&compact, trained.to_json().unwrap()).unwrap();
        // The same tokenizer laid out otherwise, with truncation and padding settings.
        let mut pretty: serde_json::Value =
            serde_json::from_str(&trained.to_json().unwrap()).unwrap();
        pretty["truncation"] = serde_json::json!({"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0});
        let pretty_path = dir.path().join("pretty.json");
        std::fs::write(&pretty_path, serde_json::to_string_pretty(&pretty).unwrap()).unwrap();
        assert!(differences(&compact, &pretty_path).unwrap().is_empty());
        let other = dir.path().join("other.json");
        let mut lower = Vocab::train(CORPUS.iter(), 280).unwrap();
        lower
            .tokenizer
            .with_normalizer(Some(tokenizers::normalizers::Lowercase))
            .unwrap();
        std::fs::write(&other, lower.tokenizer.to_string(false).unwrap()).unwrap();
        assert_eq!(differences(&compact, &other).unwrap(), ["normalizer"]);
        let smaller = dir.path().join("smaller.json");
        std::fs::write(
            &smaller,
            Vocab::train(CORPUS.iter(), 270).unwrap().to_json().unwrap(),
        )
        .unwrap();
        assert_eq!(differences(&compact, &smaller).unwrap(), ["model"]);
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

    /// Strings drawn from characters at the edges of the pre-tokenizer's classes: kinds of
    /// whitespace, letters with combining marks, numbers outside ASCII, contractions.
    fn awkward_texts(n: usize) -> Vec<String> {
        let pool: Vec<char> = " \t\n\r\u{a0}\u{3000}\u{2028}\u{85}\u{b}\u{feff}\u{0}aZstrevmldS'\u{2019}\u{301}é漢😀09٣Ⅻ²._-(){}\"#"
            .chars()
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |m: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % m as u64) as usize
        };
        (0..n)
            .map(|_| (0..next(40)).map(|_| pool[next(pool.len())]).collect())
            .collect()
    }

    fn assert_encoder_matches(vocab: &Vocab, texts: &[String]) {
        let mut encoder = vocab.encoder();
        for text in texts {
            let general = vocab.encode_general(text, false).unwrap();
            assert_eq!(encoder.encode(text).unwrap(), general, "{text:?}");
        }
    }

    #[test]
    fn encoder_gives_the_tokenizers_ids_on_awkward_text() {
        let mut vocab = Vocab::train(CORPUS.iter(), 300).unwrap();
        assert!(
            vocab.fast.is_some(),
            "a trained tokenizer takes the fast path"
        );
        let mut texts = awkward_texts(4000);
        texts.extend(
            [
                "",
                " ",
                "a  b",
                "a \n\n b",
                "x\t\t",
                "don't 'S 'll''s",
                "a<|endoftext|>b",
                "  <|endoftext|>  ",
            ]
            .map(String::from),
        );
        texts.extend(CORPUS.iter().map(|t| t.repeat(3)));
        assert_encoder_matches(&vocab, &texts);
        assert!(!vocab
            .encode("a<|endoftext|>")
            .unwrap()
            .contains(&vocab.eos_id));

        // GPT-2's own settings: a leading space added, the byte-level post-processor.
        let tok = &mut vocab.tokenizer;
        tok.with_pre_tokenizer(Some(ByteLevel::new(true, true, true)))
            .with_post_processor(Some(ByteLevel::default()));
        let vocab = Vocab::new(vocab.tokenizer, vocab.eos_id).unwrap();
        assert!(vocab.fast.is_some());
        assert_encoder_matches(&vocab, &texts);
    }

    #[test]
    fn other_tokenizers_take_the_general_path() {
        let mut vocab = Vocab::train(CORPUS.iter(), 300).unwrap();
        let lowercase = tokenizers::normalizers::Lowercase;
        vocab.tokenizer.with_normalizer(Some(lowercase)).unwrap();
        let vocab = Vocab::new(vocab.tokenizer, vocab.eos_id).unwrap();
        assert!(vocab.fast.is_none());
        assert_eq!(
            vocab.encode("The SCAN").unwrap(),
            vocab.encode("the scan").unwrap()
        );
    }
}
