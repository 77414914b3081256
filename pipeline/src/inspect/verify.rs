//! `--verify`: reads every shard and checks it against the manifest: sha256 and size,
//! schema, every token id below the vocabulary size, `n_tokens` against the token lists,
//! no end-of-text id inside a document (the trainer puts it between documents; one inside
//! is a fake document boundary), row and token counts per shard and per split, the
//! tokenizer file, and no file the manifest does not name.
//!
//! Each shard is hashed on one thread while its row groups are decoded on another, one row
//! group at a time (`n_tokens` and `tokens` only), so memory stays flat and both run at
//! close to disk speed. Problems are collected, never fatal: one line each, naming the file
//! and, where it applies, the row group.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::Digest;

use super::InspectError;
use crate::ingest::REPORT_FILE;
use crate::shard::manifest::{Group, Manifest, ShardEntry, MANIFEST_FILE};
use crate::shard::reader::{Column, ReadError, ShardReader};
use crate::shard::{hex, Split};

/// Bytes hashed per read.
const HASH_BUFFER: usize = 1 << 20;
/// Shards checked at once, at most (each worker decodes on its thread and hashes on a
/// second, lighter one, and holds one row group).
const MAX_WORKERS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    pub row_group: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.row_group {
            Some(g) => write!(f, "{}: row group {g}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub shards: u64,
    pub rows: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub problems: Vec<Problem>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The verification as pretty JSON (what `--verify --json` prints).
    pub fn to_json(&self) -> String {
        // Numbers and strings only: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// What one shard (or split) holds, as decoded; not `complete` when a file or row group
/// could not be read, so its counts are not compared again (that problem is reported).
struct Counted {
    rows: u64,
    tokens: u64,
    complete: bool,
}

impl Default for Counted {
    fn default() -> Counted {
        Counted {
            rows: 0,
            tokens: 0,
            complete: true,
        }
    }
}

impl Counted {
    fn unknown() -> Counted {
        Counted {
            complete: false,
            ..Counted::default()
        }
    }
}

pub fn verify(dir: &Path, progress: bool) -> Result<Verification, InspectError> {
    let started = Instant::now();
    let manifest = Manifest::load(dir)?;
    let mut problems = Vec::new();
    unknown_files(dir, &manifest, &mut problems)?;
    check_tokenizer(dir, &manifest, &mut problems);

    let total: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    let bar = progress_bar(progress, total);
    let mut v = Verification {
        shards: 0,
        rows: 0,
        tokens: 0,
        bytes: 0,
        seconds: 0.0,
        problems: Vec::new(),
    };
    let mut checked = check_shards(dir, &manifest, &bar).into_iter();
    for split in [Split::Train, Split::Val] {
        let mut sum = Counted::default();
        for entry in manifest.shards(split) {
            let Some((counted, found)) = checked.next() else {
                break;
            };
            problems.extend(found);
            sum.rows += counted.rows;
            sum.tokens += counted.tokens;
            sum.complete &= counted.complete;
            v.shards += 1;
            v.bytes += entry.bytes;
        }
        let group = match split {
            Split::Train => &manifest.totals.train,
            Split::Val => &manifest.totals.val,
        };
        check_split(split, group, &sum, &mut problems);
        v.rows += sum.rows;
        v.tokens += sum.tokens;
    }
    bar.finish_and_clear();
    v.seconds = started.elapsed().as_secs_f64();
    v.problems = problems;
    Ok(v)
}

/// One shard's decoded counts and its problems.
type Checked = (Counted, Vec<Problem>);

/// Checks every shard, train then val in manifest order, on a few workers (each hashes on
/// one thread and decodes on another); results come back in that order whatever the
/// timing, so the problem list is deterministic.
fn check_shards(dir: &Path, manifest: &Manifest, bar: &ProgressBar) -> Vec<Checked> {
    let entries: Vec<&ShardEntry> = [Split::Train, Split::Val]
        .into_iter()
        .flat_map(|split| manifest.shards(split))
        .collect();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .clamp(1, MAX_WORKERS)
        .min(entries.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Checked>>> =
        Mutex::new((0..entries.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(entry) = entries.get(i) else { break };
                let mut found = Vec::new();
                let counted = check_shard(dir, manifest, entry, bar, &mut found);
                if let Ok(mut results) = results.lock() {
                    results[i] = Some((counted, found));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results
        .into_iter()
        .zip(&entries)
        .map(|(r, entry)| {
            r.unwrap_or_else(|| {
                let problem = Problem {
                    file: entry.file.clone(),
                    row_group: None,
                    message: "not checked: its worker stopped".into(),
                };
                (Counted::unknown(), vec![problem])
            })
        })
        .collect()
}

/// Files in the store that the manifest does not account for.
fn unknown_files(
    dir: &Path,
    manifest: &Manifest,
    problems: &mut Vec<Problem>,
) -> Result<(), InspectError> {
    let fail = |e: std::io::Error| InspectError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let known: Vec<&str> = [MANIFEST_FILE, REPORT_FILE, manifest.tokenizer.file.as_str()]
        .into_iter()
        .chain(manifest.shards.iter().map(|s| s.file.as_str()))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        names.push(
            entry
                .map_err(fail)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    for name in names.into_iter().filter(|n| !known.contains(&n.as_str())) {
        problems.push(Problem {
            file: name,
            row_group: None,
            message: "unknown file: not named by the manifest".into(),
        });
    }
    Ok(())
}

fn check_tokenizer(dir: &Path, manifest: &Manifest, problems: &mut Vec<Problem>) {
    let entry = &manifest.tokenizer;
    let mut problem = |message: String| {
        problems.push(Problem {
            file: entry.file.clone(),
            row_group: None,
            message,
        })
    };
    match hash_file(&dir.join(&entry.file), &ProgressBar::hidden()) {
        Err(e) => problem(format!("cannot read: {e}")),
        Ok((sha, _)) if sha != entry.sha256 => {
            problem(format!("sha256 {sha}, the manifest says {}", entry.sha256))
        }
        Ok(_) => match super::load_tokenizer(dir, manifest) {
            Err(e) => problem(e.to_string()),
            Ok(t) if t.get_vocab_size(true) != entry.vocab_size => problem(format!(
                "{} tokens, the manifest says {}",
                t.get_vocab_size(true),
                entry.vocab_size
            )),
            Ok(_) => {}
        },
    }
}

fn check_split(split: Split, group: &Group, sum: &Counted, problems: &mut Vec<Problem>) {
    if !sum.complete {
        return;
    }
    let mut problem = |what: &str, found: u64, said: u64| {
        problems.push(Problem {
            file: MANIFEST_FILE.into(),
            row_group: None,
            message: format!(
                "{} shards hold {found} {what}, the totals say {said}",
                split.as_str()
            ),
        })
    };
    if sum.rows != group.chunks {
        problem("rows", sum.rows, group.chunks);
    }
    if sum.tokens != group.tokens {
        problem("tokens", sum.tokens, group.tokens);
    }
}

/// Hashes and decodes one shard at the same time; returns what it decoded.
fn check_shard(
    dir: &Path,
    manifest: &Manifest,
    entry: &ShardEntry,
    bar: &ProgressBar,
    problems: &mut Vec<Problem>,
) -> Counted {
    let path = dir.join(&entry.file);
    let mut problem = |row_group: Option<usize>, message: String| {
        problems.push(Problem {
            file: entry.file.clone(),
            row_group,
            message,
        })
    };
    if !path.exists() {
        problem(None, "missing: named by the manifest, not on disk".into());
        bar.inc(entry.bytes);
        return Counted::unknown();
    }
    let (vocab, eos) = (manifest.tokenizer.vocab_size, manifest.tokenizer.eos_id);
    let (hashed, decoded) = std::thread::scope(|s| {
        let hasher = s.spawn(|| hash_file(&path, bar));
        let decoded = std::panic::catch_unwind(|| decode(&path, vocab, eos))
            .unwrap_or_else(|_| Err("the Parquet decoder gave up on this file".into()));
        let hashed = hasher
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("hashing stopped")));
        (hashed, decoded)
    });
    match hashed {
        Err(e) => problem(None, format!("cannot read: {e}")),
        Ok((sha, bytes)) => {
            if bytes != entry.bytes {
                problem(
                    None,
                    format!("{bytes} bytes, the manifest says {}", entry.bytes),
                );
            }
            if sha != entry.sha256 {
                problem(
                    None,
                    format!("sha256 {sha}, the manifest says {}", entry.sha256),
                );
            }
        }
    }
    let counted = match decoded {
        Err(e) => {
            problem(None, e);
            return Counted::unknown();
        }
        Ok((counted, found)) => {
            for (g, message) in found {
                problem(Some(g), message);
            }
            counted
        }
    };
    if !counted.complete {
        return counted;
    }
    if counted.rows != entry.rows {
        problem(
            None,
            format!("{} rows, the manifest says {}", counted.rows, entry.rows),
        );
    }
    if counted.tokens != entry.tokens {
        problem(
            None,
            format!(
                "{} tokens, the manifest says {}",
                counted.tokens, entry.tokens
            ),
        );
    }
    counted
}

/// Decodes `n_tokens` and `tokens` of every row group; problems come back by row group.
/// A file that cannot be opened at all is one error.
type Decoded = (Counted, Vec<(usize, String)>);

fn decode(path: &Path, vocab: usize, eos: u32) -> Result<Decoded, String> {
    let reader = ShardReader::open(path).map_err(|e| match e {
        ReadError::Open { reason, .. } => format!("cannot open: {reason}"),
        ReadError::Schema { reason, .. } => format!("not a shard of this schema: {reason}"),
        other => other.to_string(),
    })?;
    let mut counted = Counted::default();
    let mut found = Vec::new();
    for g in 0..reader.num_row_groups() {
        let c = match reader.read(g, &[Column::Tokens, Column::NTokens]) {
            Ok(c) => c,
            Err(ReadError::RowGroup { reason, .. }) => {
                counted.complete = false;
                found.push((g, format!("cannot decode: {reason}")));
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        counted.rows += c.rows as u64;
        counted.tokens += c.tokens.values.len() as u64;
        let (mut bad, mut worst, mut eos_inside) = (0u64, 0u32, 0u64);
        for &t in &c.tokens.values {
            if t as usize >= vocab {
                bad += 1;
                worst = worst.max(t);
            }
            eos_inside += u64::from(t == eos);
        }
        if eos_inside > 0 {
            let rows = c.tokens.iter().filter(|list| list.contains(&eos)).count();
            found.push((
                g,
                format!(
                    "the end-of-text id {eos} inside a document {eos_inside} time(s), in {rows} row(s): a false document boundary (the text held the token's literal, encoded as the id by an older version or by a tokenizer whose end-of-text token is not special)"
                ),
            ));
        }
        if bad > 0 {
            found.push((
                g,
                format!(
                    "{bad} token id(s) at or past the vocabulary size {vocab} (largest {worst})"
                ),
            ));
        }
        let wrong = c
            .tokens
            .iter()
            .zip(&c.n_tokens)
            .filter(|(list, &n)| list.len() != n as usize)
            .count();
        if wrong > 0 {
            found.push((
                g,
                format!("{wrong} row(s) whose n_tokens differs from their token list"),
            ));
        }
    }
    Ok((counted, found))
}

/// The sha256 and length of a file, read in large blocks, advancing `bar` as it goes.
fn hash_file(path: &Path, bar: &ProgressBar) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
        bar.inc(n as u64);
    }
    Ok((hex(&hasher.finalize()), bytes))
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = "{elapsed} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
