//! `mamba ingest --merge OUT PART...`: the parts of a partitioned run into one store.
//!
//! The parts must agree (schema, tokenizer, settings, one of each part number). Their logs
//! are replayed in the order a single run over all files would have met the files (a k-way
//! merge by file number: each part's log is already in that order), through the single
//! run's bookkeeping, so documents that are duplicates across parts are dropped, the split
//! and the held-back validation document come out the same, and the shards, report and
//! manifest equal those of one run over the whole folder with the same tokenizer.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::part::{PieceRecord, PART_LOG};
use super::tally::Tally;
use super::{prepare_output, IngestError, Summary};
use crate::shard::manifest::Manifest;
use crate::shard::reader::{Row, ShardReader};
use crate::shard::writer::ShardLimits;
use crate::shard::{Split, SCHEMA_VERSION};

/// The `part` entry of a partial store's settings: `"I/N"`.
pub const PART_SETTING: &str = "part";
/// What the part's walk met (`{"files": n, "hash": "..."}`): the same for every part of a run.
pub const WALKED_SETTING: &str = "walked";

/// A part's settings without what differs between the parts of one run.
fn shared_settings(m: &Manifest) -> serde_json::Value {
    let mut s = m.settings.clone();
    if let Some(map) = s.as_object_mut() {
        map.remove(PART_SETTING);
        map.remove(WALKED_SETTING);
    }
    s
}

pub fn merge(out: &Path, dirs: &[PathBuf]) -> Result<Summary, IngestError> {
    let started = Instant::now();
    let mut parts = dirs
        .iter()
        .map(|dir| Part::open(dir))
        .collect::<Result<Vec<_>, _>>()?;
    check_agreement(&parts)?;
    if parts.iter().any(|p| same_dir(&p.dir, out)) {
        let shown = out.display();
        return Err(merge_error(format!(
            "OUT {shown} is one of the parts; merge into a new folder"
        )));
    }
    let first = parts.first().ok_or_else(|| merge_error("no parts given"))?;
    let (dir, entry) = (&first.dir, first.manifest.tokenizer.clone());
    let settings = shared_settings(&first.manifest);
    let val_fraction = setting_f64(&settings, "val_fraction", dir)?;
    let limits = ShardLimits {
        row_group_tokens: setting_f64(&settings, "row_group_tokens", dir)? as usize,
        shard_tokens: setting_f64(&settings, "shard_tokens", dir)? as usize,
        zstd_level: setting_f64(&settings, "zstd_level", dir)? as i32,
    };
    let tokenizer = std::fs::read(dir.join(&entry.file))
        .map_err(|e| merge_error(format!("{}: {e}", dir.display())))?;

    prepare_output(out)?;
    let mut tally = Tally::new(out, limits, val_fraction);
    for part in &mut parts {
        part.advance()?;
    }
    // The part whose next piece comes first in the walk over all files.
    let mut last = None;
    while let Some(part) = parts
        .iter_mut()
        .filter(|p| p.next.is_some())
        .min_by_key(|p| p.next.as_ref().map(|r| (r.file, r.seq)))
    {
        let key = part.next.as_ref().map(|r| (r.file, r.seq));
        if key <= last {
            let source = part.next.as_ref().map_or("", |r| r.source.as_str());
            return Err(merge_error(format!(
                "two parts both hold {source} (file {}); were they made from the same inputs?",
                key.map_or(0, |k| k.0)
            )));
        }
        last = key;
        let piece = part.take_piece(val_fraction)?;
        tally.add(piece)?;
        part.advance()?;
    }
    for part in &mut parts {
        part.check_exhausted()?;
    }
    let bytes_read = tally.bytes_done;
    let (totals, report, shards) = tally.finish()?;
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        tokenizer: entry,
        shards,
        totals,
        settings,
    };
    super::write_store(out, &tokenizer, &report, &manifest)?;
    Ok(Summary {
        manifest,
        elapsed: started.elapsed(),
        bytes_read,
    })
}

fn merge_error(message: impl Into<String>) -> IngestError {
    IngestError::Merge(message.into())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn setting_f64(settings: &serde_json::Value, key: &str, dir: &Path) -> Result<f64, IngestError> {
    settings[key].as_f64().ok_or_else(|| {
        merge_error(format!(
            "{}: manifest settings lack {key}; ingest that part again",
            dir.display()
        ))
    })
}

/// Parses `I/N` (1 <= I <= N).
pub fn parse_part(text: &str) -> Option<(u32, u32)> {
    let (i, n) = text.split_once('/')?;
    let (i, n) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
    (1..=n).contains(&i).then_some((i, n))
}

/// One part on disk: its manifest, its log and its two row streams.
struct Part {
    dir: PathBuf,
    manifest: Manifest,
    number: (u32, u32),
    log: Lines<BufReader<File>>,
    line: usize,
    next: Option<PieceRecord>,
    train: Rows,
    val: Rows,
}

impl Part {
    fn open(dir: &Path) -> Result<Part, IngestError> {
        let shown = dir.display();
        let manifest = Manifest::load(dir).map_err(|e| merge_error(e.to_string()))?;
        let number = manifest.settings[PART_SETTING]
            .as_str()
            .and_then(parse_part)
            .ok_or_else(|| {
                merge_error(format!(
                    "{shown} is not a part of a partitioned run (made without --part)"
                ))
            })?;
        let log = File::open(dir.join(PART_LOG)).map_err(|e| {
            merge_error(format!(
                "{shown}: cannot read {PART_LOG} ({e}); ingest that part again"
            ))
        })?;
        // What is read must be what the part's manifest vouches for.
        let files = std::iter::once(&manifest.tokenizer.file)
            .chain(manifest.shards.iter().map(|e| &e.file));
        let sums = std::iter::once(&manifest.tokenizer.sha256)
            .chain(manifest.shards.iter().map(|e| &e.sha256));
        for (file, sha256) in files.zip(sums) {
            let path = dir.join(file);
            let sum = crate::shard::sha256_file(&path)
                .map_err(|e| merge_error(format!("{}: {e}", path.display())))?;
            if &sum != sha256 {
                return Err(merge_error(format!(
                    "{} does not match its manifest's sha256; ingest that part again",
                    path.display()
                )));
            }
        }
        let rows = |split| Rows {
            dir: dir.to_path_buf(),
            files: manifest.shards(split).map(|s| s.file.clone()).collect(),
            reader: None,
            rows: VecDeque::new(),
        };
        Ok(Part {
            dir: dir.to_path_buf(),
            number,
            log: BufReader::new(log).lines(),
            line: 0,
            next: None,
            train: rows(Split::Train),
            val: rows(Split::Val),
            manifest,
        })
    }

    fn error(&self, what: impl std::fmt::Display) -> IngestError {
        merge_error(format!(
            "{}: {what}; ingest that part again",
            self.dir.display()
        ))
    }

    /// Reads the next record of the log.
    fn advance(&mut self) -> Result<(), IngestError> {
        self.line += 1;
        self.next = match self.log.next() {
            None => None,
            Some(line) => {
                let line = line.map_err(|e| self.error(format!("{PART_LOG}: {e}")))?;
                let record = serde_json::from_str(&line);
                Some(
                    record
                        .map_err(|e| self.error(format!("{PART_LOG} line {}: {e}", self.line)))?,
                )
            }
        };
        Ok(())
    }

    /// The current record as a piece, with the rows of its written documents.
    fn take_piece(&mut self, val_fraction: f64) -> Result<super::stages::Piece, IngestError> {
        let Some(record) = self.next.take() else {
            return Err(self.error("log ended early"));
        };
        let line = self.line;
        let (train, val) = (&mut self.train, &mut self.val);
        let piece = record.into_piece(|hash, doc| {
            let rows = match Split::of(hash, val_fraction) {
                Split::Train => &mut *train,
                Split::Val => &mut *val,
            };
            (0..doc.chunks)
                .map(|chunk| match rows.next()? {
                    Some(row) if row.doc_id == hash as u64 && row.chunk == chunk => Ok(row.tokens),
                    _ => Err(format!(
                        "the shards do not hold document {} chunk {chunk} where {PART_LOG} \
                         line {line} says",
                        doc.hash
                    )),
                })
                .collect()
        });
        piece.map_err(|e| self.error(e))
    }

    fn check_exhausted(&mut self) -> Result<(), IngestError> {
        for split in [Split::Train, Split::Val] {
            let rows = match split {
                Split::Train => &mut self.train,
                Split::Val => &mut self.val,
            };
            if rows.next().map_err(|e| self.error(e))?.is_some() {
                let what = format!(
                    "its {} shards hold rows its log does not name",
                    split.as_str()
                );
                return Err(self.error(what));
            }
        }
        Ok(())
    }
}

/// The rows of one split of a part, in order, a row group at a time.
struct Rows {
    dir: PathBuf,
    files: VecDeque<String>,
    reader: Option<(ShardReader, usize)>,
    rows: VecDeque<Row>,
}

impl Rows {
    fn next(&mut self) -> Result<Option<Row>, String> {
        loop {
            if let Some(row) = self.rows.pop_front() {
                return Ok(Some(row));
            }
            match &mut self.reader {
                Some((reader, group)) if *group < reader.num_row_groups() => {
                    self.rows = reader.row_group(*group).map_err(|e| e.to_string())?.into();
                    *group += 1;
                }
                _ => match self.files.pop_front() {
                    None => return Ok(None),
                    Some(file) => {
                        let reader = ShardReader::open(&self.dir.join(file));
                        self.reader = Some((reader.map_err(|e| e.to_string())?, 0));
                    }
                },
            }
        }
    }
}

/// The parts must be one partitioned run: same schema, tokenizer and settings, and each part
/// number of the same count exactly once.
fn check_agreement(parts: &[Part]) -> Result<(), IngestError> {
    let Some(first) = parts.first() else {
        return Ok(());
    };
    let count = first.number.1;
    let settings = shared_settings(&first.manifest);
    let walked = |m: &Manifest| m.settings.get(WALKED_SETTING).cloned();
    let (a, shown_a) = (&first.manifest, first.dir.display());
    for part in &parts[1..] {
        let (b, shown_b) = (&part.manifest, part.dir.display());
        if part.number.1 != count {
            return Err(merge_error(format!(
                "{shown_a} is a part of {count} but {shown_b} a part of {}",
                part.number.1
            )));
        }
        if b.tokenizer.sha256 != a.tokenizer.sha256 {
            return Err(merge_error(format!(
                "{shown_a} and {shown_b} were made with different tokenizers; ingest every \
                 part with the same --tokenizer"
            )));
        }
        if walked(b) != walked(a) {
            let files = |m: &Manifest| walked(m).and_then(|w| w["files"].as_u64()).unwrap_or(0);
            return Err(merge_error(format!(
                "{shown_a} and {shown_b} walked different files ({} and {} paths, or other \
                 names): were they made from the same inputs, unchanged, with every part's \
                 output outside them?",
                files(a),
                files(b)
            )));
        }
        let other = shared_settings(b);
        if other != settings {
            let key = settings
                .as_object()
                .and_then(|m| m.iter().find(|(k, v)| other.get(k.as_str()) != Some(*v)))
                .map_or("settings".to_string(), |(k, _)| k.clone());
            return Err(merge_error(format!(
                "{shown_a} and {shown_b} were made with different {key}; ingest every part \
                 with the same flags"
            )));
        }
    }
    for i in 1..=count {
        let dirs: Vec<_> = parts.iter().filter(|p| p.number.0 == i).collect();
        match dirs.as_slice() {
            [_] => {}
            [] => return Err(merge_error(format!("part {i}/{count} is missing"))),
            [x, y, ..] => {
                return Err(merge_error(format!(
                    "part {i}/{count} is given twice ({} and {})",
                    x.dir.display(),
                    y.dir.display()
                )))
            }
        }
    }
    Ok(())
}
