//! The writer's bookkeeping: dedup, split, shard rows, totals and the report, all in input
//! order so the result does not depend on thread timing.
//!
//! Split: a document is in val when its hash bucket is below `--val-fraction`. A small corpus
//! can have no such document, which would leave nothing to evaluate on; so the train document
//! closest to the threshold is held back until the end and goes to val if val is still empty
//! (to train otherwise). Only that one document is held, and the choice depends on the inputs
//! alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use std::sync::Arc;

use super::part::{PartLog, PieceRecord};
use super::stages::{Doc, End, Piece};
use crate::clean::near_dup;
use crate::report::{Report, Status};
use crate::shard::manifest::{Outcomes, ShardEntry, Totals};
use crate::shard::writer::{Row, ShardLimits, ShardWriter, WriteError};
use crate::shard::{bucket, Split};

pub struct Tally {
    pub totals: Totals,
    pub report: Report,
    train: ShardWriter,
    val: ShardWriter,
    val_fraction: f64,
    /// Whole-file documents seen, by hash, with the file that had them first.
    first_seen: HashMap<u128, std::sync::Arc<str>>,
    /// Dataset rows seen, by hash (rows are counted as duplicates, not named).
    rows_seen: HashSet<u128>,
    /// Files read whole, by the hash of their bytes, with their document's hash.
    files_read: HashMap<u128, u128>,
    /// Documents of the current file kept so far (a file of only duplicates is skipped).
    kept_in_file: u64,
    duplicate_of: Option<std::sync::Arc<str>>,
    /// Near-duplicate band hashes of every document so far (see [`near_dup`]).
    near: near_dup::Seen<Arc<str>>,
    /// What the cleaning stages did to the current file, reported at its end.
    cleaned: Cleaned,
    /// The train document closest to val, with its source, written last (see the module doc).
    held: Option<(Doc, Arc<str>)>,
    /// A part of a partitioned run: no document is held (the merge decides), and every
    /// piece is logged.
    log: Option<PartLog>,
    pub bytes_done: u64,
}

impl Tally {
    pub fn new(out: &Path, limits: ShardLimits, val_fraction: f64) -> Tally {
        Tally {
            totals: Totals::default(),
            report: Report::default(),
            train: ShardWriter::new(out, Split::Train, limits),
            val: ShardWriter::new(out, Split::Val, limits),
            val_fraction,
            first_seen: HashMap::new(),
            rows_seen: HashSet::new(),
            files_read: HashMap::new(),
            kept_in_file: 0,
            duplicate_of: None,
            near: near_dup::Seen::default(),
            cleaned: Cleaned::default(),
            held: None,
            log: None,
            bytes_done: 0,
        }
    }

    /// The tally of one part of a partitioned run, logging into `out` (see [`super::part`]).
    pub fn part(out: &Path, limits: ShardLimits, val_fraction: f64) -> Result<Tally, WriteError> {
        let log = Some(PartLog::create(out)?);
        Ok(Tally {
            log,
            ..Tally::new(out, limits, val_fraction)
        })
    }

    /// Takes the next piece in input order.
    pub fn add(&mut self, piece: Piece) -> Result<(), WriteError> {
        let piece = self.unread_copy(piece);
        let kind = piece.kind.map_or("other", |k| k.as_str());
        let mut record = self.log.as_ref().map(|_| PieceRecord::of(&piece));
        for doc in piece.docs {
            if let Some(rule) = &doc.found.dropped {
                if let Some(record) = &mut record {
                    record.push(&doc, false);
                }
                *self.totals.filtered.entry(rule.clone()).or_default() += 1;
                *self.cleaned.filtered.entry(rule.clone()).or_default() += 1;
                continue;
            }
            let fresh = match doc.kind {
                crate::extract::Kind::Dataset => self.rows_seen.insert(doc.hash),
                _ => match self.first_seen.get(&doc.hash) {
                    Some(first) => {
                        self.duplicate_of = Some(first.clone());
                        false
                    }
                    None => {
                        self.first_seen.insert(doc.hash, piece.source.clone());
                        true
                    }
                },
            };
            // Only a fresh document is looked up, so the first of a cluster is the one kept.
            let near = match fresh {
                true => self.near.check(&doc.found.bands, &piece.source),
                false => None,
            };
            if let Some(record) = &mut record {
                record.push(&doc, fresh && near.is_none());
            }
            if !fresh {
                self.totals.duplicates += 1;
                continue;
            }
            if let Some(first) = near {
                self.totals.near_duplicates += 1;
                self.cleaned.near += 1;
                self.cleaned.near_of.get_or_insert(first);
                continue;
            }
            for (rule, n) in &doc.found.redactions {
                *self.totals.redactions.entry(rule.clone()).or_default() += *n as u64;
                *self.cleaned.redactions.entry(rule.clone()).or_default() += *n as u64;
            }
            if self.kept_in_file == 0 {
                let t = &mut self.totals;
                t.by_kind.entry(doc.kind.as_str().into()).or_default().files += 1;
                t.by_lang.entry(doc.lang.to_string()).or_default().files += 1;
            }
            self.kept_in_file += 1;
            match Split::of(doc.hash, self.val_fraction) {
                Split::Val => self.write(&doc, &piece.source, Split::Val)?,
                Split::Train if self.val_fraction == 0.0 || self.log.is_some() => {
                    self.write(&doc, &piece.source, Split::Train)?
                }
                Split::Train => {
                    let closer = |held: &(Doc, Arc<str>)| bucket(doc.hash) < bucket(held.0.hash);
                    if self.held.as_ref().is_none_or(closer) {
                        if let Some((held, source)) = self.held.replace((doc, piece.source.clone()))
                        {
                            self.write(&held, &source, Split::Train)?;
                        }
                    } else {
                        self.write(&doc, &piece.source, Split::Train)?;
                    }
                }
            }
        }
        if let Some(end) = &piece.end {
            self.end_file(&piece.source, kind, end, piece.bytes);
        }
        match (&mut self.log, record) {
            (Some(log), Some(record)) => log.write(&record),
            _ => Ok(()),
        }
    }

    /// Writes one document's chunks to `split` and counts them.
    fn write(&mut self, doc: &Doc, source: &str, split: Split) -> Result<(), WriteError> {
        let writer = match split {
            Split::Train => &mut self.train,
            Split::Val => &mut self.val,
        };
        for (i, chunk) in doc.tokens.iter().enumerate() {
            let row = Row {
                doc_id: doc.hash as u64,
                chunk: i as u32,
                source,
                kind: doc.kind.as_str(),
                lang: &doc.lang,
                tokens: chunk,
            };
            writer.push(row)?;
        }
        let tokens: u64 = doc.tokens.iter().map(|t| t.len() as u64).sum();
        let chunks = doc.tokens.len() as u64;
        let t = &mut self.totals;
        t.documents += 1;
        t.chunks += chunks;
        t.tokens += tokens;
        let split_group = match split {
            Split::Train => &mut t.train,
            Split::Val => &mut t.val,
        };
        for group in [
            split_group,
            t.by_kind.entry(doc.kind.as_str().into()).or_default(),
            t.by_lang.entry(doc.lang.to_string()).or_default(),
        ] {
            group.documents += 1;
            group.chunks += chunks;
            group.tokens += tokens;
        }
        Ok(())
    }

    /// A byte-identical copy of an earlier file that a worker read anyway (the earlier one was
    /// not done yet) becomes the copy skipped unread (see [`super::stages::SeenFiles`]).
    fn unread_copy(&mut self, mut piece: Piece) -> Piece {
        let (Some(raw), [doc]) = (piece.raw, &piece.docs[..]) else {
            return piece;
        };
        if doc.found.dropped.is_some() {
            return piece;
        }
        match self.files_read.get(&raw) {
            Some(&hash) => {
                piece.docs.clear();
                piece.end = Some(End::Duplicate(hash));
            }
            None => {
                self.files_read.insert(raw, doc.hash);
            }
        }
        piece
    }

    fn end_file(&mut self, source: &str, kind: &str, end: &End, bytes: u64) {
        let kept = std::mem::take(&mut self.kept_in_file);
        let duplicate_of = self.duplicate_of.take();
        let cleaned = std::mem::take(&mut self.cleaned);
        self.bytes_done += bytes;
        let outcome = match end {
            End::Duplicate(hash) => {
                self.totals.duplicates += 1;
                let first = self.first_seen.get(hash).map(|s| s.to_string());
                let first = first.unwrap_or_else(|| "an earlier input".into());
                Err((
                    Status::Skipped,
                    "duplicate".to_string(),
                    format!("duplicate of {first}"),
                ))
            }
            End::Ingested(_) if kept == 0 => Err(match (&duplicate_of, &cleaned.near_of) {
                (None, Some(first)) => (
                    Status::Skipped,
                    "near-duplicate".to_string(),
                    format!("near-duplicate of {first}"),
                ),
                (None, None) if !cleaned.filtered.is_empty() => (
                    Status::Skipped,
                    "filtered".to_string(),
                    format!("filtered ({})", counts_text(&cleaned.filtered)),
                ),
                _ => {
                    let first = duplicate_of.as_deref().unwrap_or("an earlier input");
                    (
                        Status::Skipped,
                        "duplicate".to_string(),
                        format!("duplicate of {first}"),
                    )
                }
            }),
            End::Ingested(repairs) => Ok(repairs),
            End::Skipped(reason) => Err((Status::Skipped, reason_class(reason), reason.clone())),
            End::Failed(reason) => Err((Status::Failed, String::new(), reason.clone())),
        };
        let t = &mut self.totals;
        let by_kind = t.files_by_kind.entry(kind.into()).or_default();
        match outcome {
            Ok(repairs) => {
                bump(&mut t.files, by_kind, |o| &mut o.ingested);
                t.source_bytes += bytes;
                if !repairs.is_empty() {
                    t.repaired += 1;
                    self.report
                        .add(source, Status::Repaired, &repairs.join("; "));
                }
                if !cleaned.redactions.is_empty() {
                    let counts = counts_text(&cleaned.redactions);
                    self.report.add(source, Status::Redacted, &counts);
                }
                if let Some(dropped) = cleaned.dropped_rows() {
                    self.report.add(source, Status::Dropped, &dropped);
                }
            }
            Err((status, class, reason)) => {
                if status == Status::Skipped {
                    bump(&mut t.files, by_kind, |o| &mut o.skipped);
                    *t.skipped_by_reason.entry(class).or_default() += 1;
                } else {
                    bump(&mut t.files, by_kind, |o| &mut o.failed);
                }
                self.report.add(source, status, &reason);
            }
        }
    }

    /// Closes both splits' shards; returns every shard, train first.
    pub fn finish(mut self) -> Result<(Totals, Report, Vec<ShardEntry>), WriteError> {
        if let Some((held, source)) = self.held.take() {
            let val_is_empty = self.totals.val.documents == 0 && self.totals.train.documents > 0;
            let split = if val_is_empty {
                Split::Val
            } else {
                Split::Train
            };
            self.write(&held, &source, split)?;
        }
        let mut shards = self.train.finish()?;
        shards.extend(self.val.finish()?);
        if let Some(log) = self.log {
            log.finish()?;
        }
        Ok((self.totals, self.report, shards))
    }
}

fn bump(all: &mut Outcomes, kind: &mut Outcomes, field: impl Fn(&mut Outcomes) -> &mut u64) {
    *field(all) += 1;
    *field(kind) += 1;
}

/// The class of a skip reason, for the totals: its words before any detail in brackets.
fn reason_class(reason: &str) -> String {
    let class = reason.split(['(', ':']).next().unwrap_or(reason).trim();
    if class.starts_with("symlink loop") {
        "symlink loop".into()
    } else {
        class.into()
    }
}

/// What the cleaning stages did to one file's documents.
#[derive(Default)]
struct Cleaned {
    redactions: BTreeMap<String, u64>,
    filtered: BTreeMap<String, u64>,
    near: u64,
    /// The earlier file holding the first near copy met.
    near_of: Option<Arc<str>>,
}

impl Cleaned {
    /// The report line of a file that was ingested with some of its documents dropped.
    fn dropped_rows(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(first) = &self.near_of {
            let n = self.near;
            parts.push(format!(
                "{n} near-duplicate document(s), the first of {first}"
            ));
        }
        if !self.filtered.is_empty() {
            let n: u64 = self.filtered.values().sum();
            let rules = counts_text(&self.filtered);
            parts.push(format!("{n} document(s) filtered ({rules})"));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// `rule n, rule n` in rule order: what a report line says of redactions and filters.
fn counts_text(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    parts.join(", ")
}
