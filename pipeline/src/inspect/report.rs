//! The figures of an inspection report, as one serialisable value: the terminal table, the
//! `--json` output and the HTML page are all renderings of it.

use serde::Serialize;

use super::histogram::Distribution;
use crate::shard::manifest::Outcomes;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub store: String,
    pub schema_version: u32,
    pub train: SplitFigures,
    pub val: SplitFigures,
    pub total: SplitFigures,
    /// Bytes of the ingested input files (0 when the manifest predates the field).
    pub source_bytes: u64,
    /// Tokens per byte of ingested input, when the source bytes are known.
    pub tokens_per_source_byte: Option<f64>,
    /// Shard bytes on disk per token.
    pub disk_bytes_per_token: Option<f64>,
    /// Uncompressed over compressed Parquet column data, from the footers.
    pub compression_ratio: Option<f64>,
    pub duplicates: u64,
    /// Documents dropped as near-duplicates, and by a filter (by rule).
    pub near_duplicates: u64,
    pub filtered: Vec<Count>,
    /// Replacements of secrets and personal data, by rule.
    pub redactions: Vec<Count>,
    pub files: Outcomes,
    pub repaired: u64,
    pub skip_reasons: Vec<Count>,
    pub fail_reasons: Vec<Count>,
    pub by_kind: Vec<Share>,
    pub by_lang: Vec<Share>,
    pub tokenizer: TokenizerFigures,
    /// The streaming pass over the token columns; `None` with `--summary`.
    pub data: Option<DataFigures>,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SplitFigures {
    pub shards: u64,
    pub row_groups: u64,
    pub rows: u64,
    pub documents: u64,
    pub tokens: u64,
    pub bytes: u64,
}

impl SplitFigures {
    pub fn add(&mut self, other: &SplitFigures) {
        self.shards += other.shards;
        self.row_groups += other.row_groups;
        self.rows += other.rows;
        self.documents += other.documents;
        self.tokens += other.tokens;
        self.bytes += other.bytes;
    }
}

/// A reason and how many inputs had it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Count {
    pub reason: String,
    pub count: u64,
}

/// One kind or language: documents, tokens, and its share of all tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    pub name: String,
    pub documents: u64,
    pub tokens: u64,
    pub share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenizerFigures {
    pub file: String,
    pub origin: String,
    pub vocab_size: usize,
    pub eos_id: u32,
    pub special_tokens: Vec<String>,
}

/// What only a pass over the data can tell.
#[derive(Clone, Debug, Serialize)]
pub struct DataFigures {
    pub seq_len: u64,
    pub documents: Distribution,
    pub chunks: Distribution,
    /// Documents with more tokens than `seq_len`.
    pub documents_longer: u64,
    pub chunks_longer: u64,
    /// Distinct token ids that occur, and their share of the vocabulary.
    pub vocab_used: u64,
    pub vocab_used_fraction: f64,
    /// Token ids at or past the vocabulary size (a healthy store has none).
    pub out_of_vocab: u64,
    pub top_tokens: Vec<TokenCount>,
    pub top_sources: Vec<SourceTokens>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenCount {
    pub id: u32,
    /// The token decoded on its own (a byte-level piece may be part of a character).
    pub text: String,
    pub count: u64,
    pub share: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceTokens {
    pub source: String,
    pub documents: u64,
    pub tokens: u64,
}

/// One chunk drawn for reading, with where it lives.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub file: String,
    pub row_group: usize,
    pub row: usize,
    pub source: String,
    pub doc_id: u64,
    pub chunk: u32,
    pub n_tokens: u32,
    pub text: String,
}

impl Report {
    /// The report as pretty JSON (what `--json` prints).
    pub fn to_json(&self) -> String {
        // Every field is a plain number, string or list: serialising cannot fail, and a
        // non-finite float becomes null rather than an error.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
