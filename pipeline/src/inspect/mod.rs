//! `mamba inspect`: what a shard store holds, and whether it is intact.
//!
//! The report is built in up to three steps, each reading more than the last:
//! [`summary`] needs only the manifest, the Parquet footers, `report.jsonl` and the
//! tokenizer's list of special tokens, so it answers at once on any store; [`scan`] streams
//! the `doc_id`, `source` and `tokens` columns once, one row group at a time, for lengths,
//! vocabulary use and top sources; [`sample`] decodes a few seeded random chunks.
//! [`verify`] reads every byte and checks it against the manifest.

pub mod histogram;
pub mod html;
pub mod report;
pub mod sample;
pub mod scan;
pub mod summary;
pub mod text;
pub mod verify;

use std::path::Path;

use tokenizers::Tokenizer;

pub use report::Report;
pub use verify::{verify, Problem, Verification};

use crate::shard::manifest::{Manifest, ManifestError};
use crate::shard::reader::ReadError;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot load tokenizer {path}: {reason}")]
    Tokenizer { path: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
}

/// What to compute; built with [`Options::new`] and its setters.
#[derive(Clone, Debug)]
pub struct Options {
    seq_len: u64,
    sample: usize,
    seed: u64,
    top: usize,
    scan: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            seq_len: 2048,
            sample: 0,
            seed: 0,
            top: 10,
            scan: true,
        }
    }
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }

    /// Documents and chunks longer than this many tokens are counted.
    pub fn seq_len(mut self, seq_len: u64) -> Options {
        self.seq_len = seq_len;
        self
    }

    /// How many random chunks to decode for reading.
    pub fn sample(mut self, n: usize) -> Options {
        self.sample = n;
        self
    }

    pub fn seed(mut self, seed: u64) -> Options {
        self.seed = seed;
        self
    }

    /// Rows in each top list (reasons, tokens, sources).
    pub fn top(mut self, top: usize) -> Options {
        self.top = top;
        self
    }

    /// `false`: footers only, no pass over the data (`--summary`).
    pub fn scan(mut self, scan: bool) -> Options {
        self.scan = scan;
        self
    }
}

/// Inspects the store in `dir`.
pub fn inspect(dir: &Path, opts: &Options) -> Result<Report, InspectError> {
    let manifest = Manifest::load(dir)?;
    let mut report = summary::summarize(dir, &manifest, opts.top)?;
    if opts.scan || opts.sample > 0 {
        let tokenizer = load_tokenizer(dir, &manifest)?;
        if opts.scan {
            report.data = Some(scan::scan(dir, &manifest, &tokenizer, opts)?);
        }
        report.samples = sample::sample(dir, &manifest, &tokenizer, opts.sample, opts.seed)?;
    }
    Ok(report)
}

pub(crate) fn load_tokenizer(dir: &Path, manifest: &Manifest) -> Result<Tokenizer, InspectError> {
    let path = dir.join(&manifest.tokenizer.file);
    Tokenizer::from_file(&path).map_err(|e| InspectError::Tokenizer {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The class of a report reason: its words before any detail, as ingest counts skips.
pub(crate) fn reason_class(reason: &str) -> String {
    reason
        .split(['(', ':'])
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}
