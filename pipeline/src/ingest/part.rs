//! The log of a partial store (`ingest --part I/N`): every piece the writer took, in input
//! order, with its documents' hashes and whether their rows are in the part's shards.
//!
//! A merge replays the logs of all parts, in the order one run over every file would have
//! met them, through the same bookkeeping as that run ([`super::tally`]), pulling the rows
//! of each kept document from its part's shards. So the merged store is the single run's.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::stages::{Doc, End, Piece};
use crate::clean::Findings;
use crate::extract::Kind;
use crate::shard::tmp_path;
use crate::shard::writer::WriteError;

pub const PART_LOG: &str = "part.jsonl";

/// One piece as the writer took it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PieceRecord {
    /// The file's number in the walk over all inputs (not only this part's).
    pub file: usize,
    pub seq: u32,
    pub source: String,
    pub kind: Option<String>,
    pub bytes: u64,
    pub docs: Vec<DocRecord>,
    pub end: Option<EndRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DocRecord {
    /// The document hash, as 32 hex digits.
    pub hash: String,
    pub kind: String,
    pub lang: String,
    pub chunks: u32,
    /// Its rows are in the part's shards (it was no duplicate within the part).
    pub written: bool,
    /// Redactions by rule (counts only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redactions: BTreeMap<String, u32>,
    /// The rule that dropped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
    /// Near-duplicate band hashes, so a merge decides as one run would.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bands: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndRecord {
    Ingested(Vec<String>),
    Skipped(String),
    Failed(String),
    Duplicate(String),
}

impl PieceRecord {
    /// The record of `piece`, without its documents (added as the writer decides on them).
    pub fn of(piece: &Piece) -> PieceRecord {
        PieceRecord {
            file: piece.number,
            seq: piece.seq,
            source: piece.source.to_string(),
            kind: piece.kind.map(|k| k.as_str().to_string()),
            bytes: piece.bytes,
            docs: Vec::new(),
            end: piece.end.as_ref().map(|end| match end {
                End::Ingested(repairs) => EndRecord::Ingested(repairs.clone()),
                End::Skipped(r) => EndRecord::Skipped(r.clone()),
                End::Failed(r) => EndRecord::Failed(r.clone()),
                End::Duplicate(hash) => EndRecord::Duplicate(hex128(*hash)),
            }),
        }
    }

    pub fn push(&mut self, doc: &Doc, written: bool) {
        self.docs.push(DocRecord {
            hash: hex128(doc.hash),
            kind: doc.kind.as_str().to_string(),
            lang: doc.lang.to_string(),
            chunks: doc.tokens.len() as u32,
            written,
            redactions: doc.found.redactions.clone(),
            dropped: doc.found.dropped.clone(),
            bands: doc.found.bands.clone(),
        });
    }

    /// The piece again, its documents' token lists taken from `rows` (called with each
    /// written document and its chunk count).
    pub fn into_piece(
        mut self,
        mut rows: impl FnMut(u128, &DocRecord) -> Result<Vec<Vec<u32>>, String>,
    ) -> Result<Piece, String> {
        let kind = |name: &str| Kind::parse(name).ok_or_else(|| format!("unknown kind {name:?}"));
        let mut docs = Vec::with_capacity(self.docs.len());
        for d in &mut self.docs {
            let hash = parse_hex128(&d.hash)?;
            let found = Findings {
                redactions: std::mem::take(&mut d.redactions),
                dropped: d.dropped.take(),
                bands: std::mem::take(&mut d.bands),
                // The language is the record's `lang`, read back below.
                lang: None,
            };
            docs.push(Doc {
                hash,
                kind: kind(&d.kind)?,
                lang: Cow::Owned(d.lang.clone()),
                chunks: Vec::new(),
                tokens: if d.written {
                    rows(hash, d)?
                } else {
                    Vec::new()
                },
                found,
            });
        }
        Ok(Piece {
            file: self.file,
            number: self.file,
            seq: self.seq,
            source: Arc::from(self.source),
            kind: self.kind.as_deref().map(kind).transpose()?,
            bytes: self.bytes,
            docs,
            // The log holds what the writer made of the piece: a copy is already one.
            raw: None,
            reserved: 0,
            end: match self.end {
                None => None,
                Some(EndRecord::Ingested(r)) => Some(End::Ingested(r)),
                Some(EndRecord::Skipped(r)) => Some(End::Skipped(r)),
                Some(EndRecord::Failed(r)) => Some(End::Failed(r)),
                Some(EndRecord::Duplicate(h)) => Some(End::Duplicate(parse_hex128(&h)?)),
            },
        })
    }
}

fn hex128(hash: u128) -> String {
    format!("{hash:032x}")
}

fn parse_hex128(text: &str) -> Result<u128, String> {
    u128::from_str_radix(text, 16).map_err(|_| format!("bad document hash {text:?}"))
}

/// Writes the log as `part.jsonl.tmp`, renamed into place when the part is complete.
pub struct PartLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl PartLog {
    pub fn create(dir: &Path) -> Result<PartLog, WriteError> {
        let path = dir.join(PART_LOG);
        let file = File::create(tmp_path(&path)).map_err(|e| log_error(&path, e))?;
        Ok(PartLog {
            path,
            out: BufWriter::new(file),
        })
    }

    pub fn write(&mut self, record: &PieceRecord) -> Result<(), WriteError> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other);
        line.and_then(|line| writeln!(self.out, "{line}"))
            .map_err(|e| log_error(&self.path, e))
    }

    pub fn finish(self) -> Result<(), WriteError> {
        let path = self.path;
        let file = self
            .out
            .into_inner()
            .map_err(|e| log_error(&path, e.into_error()))?;
        file.sync_all().map_err(|e| log_error(&path, e))?;
        std::fs::rename(tmp_path(&path), &path).map_err(|e| log_error(&path, e))
    }
}

fn log_error(path: &Path, e: std::io::Error) -> WriteError {
    WriteError {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}
