//! `mamba ingest`: files in, tokenizer + shard store out.
//!
//! Without `--tokenizer`, a first pass over the corpus trains a byte-level BPE; the second
//! pass extracts, chunks, tokenizes and writes. The output folder is made safe first: an old
//! manifest is removed before anything is written, and the new one is written last.

mod merge;
mod order;
mod part;
mod stages;
mod tally;
mod watchdog;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub use merge::{merge, parse_part, PART_SETTING, WALKED_SETTING};
pub use part::PART_LOG;
pub use stages::StageOptions;

use crate::discover::{Select, Walked};
use crate::report::Report;
use crate::shard::manifest::{Manifest, ShardEntry, TokenizerEntry, Totals};
use crate::shard::writer::{ShardLimits, WriteError};
use crate::shard::{self, write_atomic, SCHEMA_VERSION};
use crate::tokenize::{TokenizeError, Vocab};

pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const REPORT_FILE: &str = "report.jsonl";
/// Text bytes between extraction and the writer at once (see [`order`]): with the token ids
/// (about as many bytes again) it keeps a run's memory well under 500 MB whatever the inputs.
const IN_FLIGHT_BYTES: usize = 64 << 20;

/// Where the tokenizer comes from.
#[derive(Clone, Debug)]
pub enum TokenizerSource {
    /// A Hugging Face `tokenizer.json`, and optionally the name of its end-of-text token.
    File { path: PathBuf, eos: Option<String> },
    /// A byte-level BPE trained on the corpus with this vocabulary size.
    Train { vocab_size: usize },
}

pub struct IngestOptions {
    pub stages: StageOptions,
    pub out: PathBuf,
    pub tokenizer: TokenizerSource,
    pub val_fraction: f64,
    pub limits: ShardLimits,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("input {0} does not exist")]
    MissingInput(String),
    #[error("cannot prepare output folder {path}: {reason}")]
    Output { path: String, reason: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizeError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("--part needs --tokenizer: every part must share one tokenizer (make one with `mamba tokenizer train INPUT... -o tokenizer.json`)")]
    PartNeedsTokenizer,
    #[error("cannot merge: {0}")]
    Merge(String),
}

/// What a run produced.
pub struct Summary {
    pub manifest: Manifest,
    pub elapsed: Duration,
    pub bytes_read: u64,
}

pub fn run(opts: &IngestOptions) -> Result<Summary, IngestError> {
    let started = Instant::now();
    for input in &opts.stages.inputs {
        if !input.exists() {
            return Err(IngestError::MissingInput(input.display().to_string()));
        }
    }
    let part = match opts.stages.select {
        Select::Part { index, count } => Some(format!("{index}/{count}")),
        _ => None,
    };
    if part.is_some() && matches!(opts.tokenizer, TokenizerSource::Train { .. }) {
        return Err(IngestError::PartNeedsTokenizer);
    }
    prepare_output(&opts.out)?;
    let (vocab, origin) = match &opts.tokenizer {
        TokenizerSource::File { path, eos } => (
            Vocab::load(path, eos.as_deref())?,
            path.display().to_string(),
        ),
        TokenizerSource::Train { vocab_size } => (
            train_tokenizer(&opts.stages, *vocab_size)?,
            "trained".to_string(),
        ),
    };
    let tokenizer_json = vocab.to_json()?;
    let written = write_shards(opts, &vocab)?;
    let part = part.map(|part| PartOf {
        part,
        walked: written.walked,
    });
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        tokenizer: TokenizerEntry {
            file: TOKENIZER_FILE.into(),
            sha256: shard::sha256_hex(tokenizer_json.as_bytes()),
            vocab_size: vocab.vocab_size(),
            eos_id: vocab.eos_id,
            origin,
        },
        shards: written.shards,
        totals: written.totals,
        settings: settings(opts, part),
    };
    write_store(
        &opts.out,
        tokenizer_json.as_bytes(),
        &written.report,
        &manifest,
    )?;
    Ok(Summary {
        manifest,
        elapsed: started.elapsed(),
        bytes_read: written.bytes_read,
    })
}

/// Writes the files that go with the shards, the manifest last (see the module doc).
fn write_store(
    out: &Path,
    tokenizer_json: &[u8],
    report: &Report,
    manifest: &Manifest,
) -> Result<(), IngestError> {
    let out_err = |e: std::io::Error| IngestError::Output {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    write_atomic(&out.join(TOKENIZER_FILE), tokenizer_json).map_err(out_err)?;
    write_atomic(&out.join(REPORT_FILE), report.as_bytes()).map_err(out_err)?;
    manifest.save(out).map_err(out_err)
}

/// Which part of a partitioned run a store is, and what the part's walk met (all parts of one
/// run meet the same files).
struct PartOf {
    part: String,
    walked: Walked,
}

/// The settings recorded in the manifest: everything that shapes the shards, and which part
/// of a partitioned run this is.
fn settings(opts: &IngestOptions, part: Option<PartOf>) -> serde_json::Value {
    let s = &opts.stages;
    let tokenizer = match &opts.tokenizer {
        TokenizerSource::File { eos, .. } => serde_json::json!({ "eos_token": eos }),
        TokenizerSource::Train { vocab_size } => serde_json::json!({ "vocab_size": vocab_size }),
    };
    let mut settings = serde_json::json!({
        "val_fraction": opts.val_fraction,
        "chunk_bytes": s.chunk_bytes,
        "max_file_bytes": s.max_file_bytes,
        "follow_symlinks": s.follow_symlinks,
        "text_column": s.extract.text_column,
        "shard_tokens": opts.limits.shard_tokens,
        "row_group_tokens": opts.limits.row_group_tokens,
        "zstd_level": opts.limits.zstd_level,
        "tokenizer": tokenizer,
        "clean": serde_json::to_value(&s.clean).unwrap_or_default(),
    });
    if let (Some(p), Some(map)) = (part, settings.as_object_mut()) {
        map.insert(PART_SETTING.into(), p.part.into());
        let walked = serde_json::json!({ "files": p.walked.files, "hash": format!("{:016x}", p.walked.hash) });
        map.insert(WALKED_SETTING.into(), walked);
    }
    settings
}

/// Removes what a previous run left that a new manifest would not vouch for: the manifest
/// first (so no manifest names a file this run rewrites), then old shards and temp files.
fn prepare_output(out: &Path) -> Result<(), IngestError> {
    let fail = |e: std::io::Error| IngestError::Output {
        path: out.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(fail)?;
    match std::fs::remove_file(out.join(shard::manifest::MANIFEST_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
        _ => {}
    }
    for entry in std::fs::read_dir(out).map_err(fail)? {
        let name = entry
            .map_err(fail)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let shard =
            (name.starts_with("train-") || name.starts_with("val-")) && name.ends_with(".parquet");
        if name.ends_with(".tmp") || shard || name == REPORT_FILE || name == PART_LOG {
            std::fs::remove_file(out.join(&name)).map_err(fail)?;
        }
    }
    Ok(())
}

/// Every chunk text of the inputs, in no particular order (for benchmarks and tools).
pub fn chunk_texts(stages: &StageOptions) -> Vec<String> {
    with_chunks(stages, |chunks| chunks.collect())
}

/// A byte-level BPE trained on the chunks of the files `stages` selects (the first pass of
/// an ingest without `--tokenizer`, and `mamba tokenizer train`).
pub fn train_tokenizer(stages: &StageOptions, vocab_size: usize) -> Result<Vocab, TokenizeError> {
    with_chunks(stages, |chunks| Vocab::train(chunks, vocab_size))
}

/// The sample of about `bytes` of the files `stages` reads, as a [`Select`] (all of them
/// when they are fewer).
pub fn sample(stages: &StageOptions, bytes: u64) -> Select {
    let mut total = 0u64;
    let (inputs, exclude) = (&stages.inputs, &stages.exclude);
    crate::discover::walk(
        inputs,
        stages.follow_symlinks,
        exclude,
        Select::All,
        |found| {
            if let Ok((_, size)) = found.verdict {
                total += size;
            }
        },
    );
    match bytes as f64 / total.max(1) as f64 {
        f if f >= 1.0 => Select::All,
        fraction => Select::Sample { fraction },
    }
}

/// Runs discovery and extraction without ordering or dedup, handing `consume` the chunk
/// texts as they come.
fn with_chunks<R>(
    stages: &StageOptions,
    consume: impl FnOnce(Box<dyn Iterator<Item = String> + Send + '_>) -> R,
) -> R {
    std::thread::scope(|scope| {
        let (pieces, _) = stages::spawn_extract(scope, stages, None, None);
        consume(Box::new(
            pieces
                .into_iter()
                .flat_map(|p| p.docs)
                .flat_map(|d| d.chunks),
        ))
    })
}

/// What the second pass wrote, and what its walk met.
struct Written {
    totals: Totals,
    report: Report,
    shards: Vec<ShardEntry>,
    bytes_read: u64,
    walked: Walked,
}

/// Second pass: the full pipeline, consumed here in input order.
fn write_shards(opts: &IngestOptions, vocab: &Vocab) -> Result<Written, IngestError> {
    let stages = &opts.stages;
    let window = 4 * stages.threads.max(1) + 4;
    let order = order::Order::new(window, IN_FLIGHT_BYTES);
    let seen = stages::SeenFiles::default();
    let bar = progress_bar(opts.progress);
    let started = Instant::now();
    let mut tally = match stages.select {
        Select::Part { .. } => tally::Tally::part(&opts.out, opts.limits, opts.val_fraction)?,
        _ => tally::Tally::new(&opts.out, opts.limits, opts.val_fraction),
    };
    let result = std::thread::scope(|scope| {
        let (extracted, walk) = stages::spawn_extract(scope, stages, Some(&order), Some(&seen));
        let tokenized = stages::spawn_tokenize(scope, stages.threads, vocab, extracted);
        let mut reorder = order::Reorder::default();
        for piece in tokenized {
            let (file, seq, last) = (piece.file, piece.seq, piece.end.is_some());
            for (file, piece, last) in reorder.push(file, seq, last, piece) {
                let reserved = piece.reserved;
                let added = tally.add(piece);
                order.release(reserved);
                if let Err(e) = added {
                    order.abort();
                    return Err(IngestError::from(e));
                }
                if last {
                    order.finished(file);
                    bar.inc(1);
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    let mb = tally.bytes_done as f64 / 1e6;
                    bar.set_message(format!(
                        "{mb:.1} MB, {:.1} MB/s, {} tokens",
                        mb / secs,
                        tally.totals.tokens
                    ));
                }
            }
        }
        // The pieces have all come, so discovery has ended: its thread only returns.
        walk.join().map_err(|_| IngestError::Output {
            path: opts.out.display().to_string(),
            reason: "the discovery thread panicked".into(),
        })
    });
    bar.finish_and_clear();
    let walked = result?;
    let bytes_read = tally.bytes_done;
    let (totals, report, shards) = tally.finish()?;
    Ok(Written {
        totals,
        report,
        shards,
        bytes_read,
        walked,
    })
}

fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {pos} files, {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests;
