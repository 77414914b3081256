//! `mamba ingest`: builds the ingest job from flags, runs it, prints the tally.

use std::process::ExitCode;

use anyhow::Context;
use std::path::{Path, PathBuf};

use mamba_pipeline::clean::CleanOptions;
use mamba_pipeline::discover::Select;
use mamba_pipeline::extract::{pdf::PdfLimits, ExtractOptions};
use mamba_pipeline::ingest::{self, IngestOptions, StageOptions, TokenizerSource};
use mamba_pipeline::shard::manifest::Manifest;
use mamba_pipeline::shard::writer::ShardLimits;

use super::usage;
use crate::cli::{IngestArgs, ReadArgs};

/// Rows per batch when streaming a dataset file.
const DATASET_BATCH_ROWS: usize = 1024;
/// Text bytes per batch when streaming a dataset file: with rows of a book's length, 1024 of
/// them would hold a gigabyte per batch, and a few batches are in flight at once.
const DATASET_BATCH_BYTES: usize = 4 << 20;
/// The share of `--file-timeout` a PDF's own deadline gets.
const PDF_SHARE_OF_BUDGET: f64 = 0.9;
/// zstd level of the shards: fast to write, a good ratio on token ids.
const ZSTD_LEVEL: i32 = 3;

pub fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    if args.merge {
        return merge(args);
    }
    let mut inputs = args.paths;
    let out = inputs.pop().context("missing OUT_DIR")?;
    let part = match args.part {
        Some(part) => Some(part),
        None => slurm_part().map_err(usage)?,
    };
    let select = match part {
        Some((index, count)) => Select::Part { index, count },
        None => Select::All,
    };
    let tokenizer = match args.tokenizer {
        // A model directory stands for its tokenizer.json.
        Some(path) => TokenizerSource::File {
            path: match path.is_dir() {
                true => path.join(ingest::TOKENIZER_FILE),
                false => path,
            },
            eos: args.eos_token,
        },
        None => TokenizerSource::Train {
            vocab_size: args.vocab_size as usize,
        },
    };
    let opts = IngestOptions {
        stages: stage_options(args.read, inputs, out.clone(), select)?,
        out: out.clone(),
        tokenizer,
        val_fraction: args.val_fraction,
        limits: ShardLimits {
            row_group_tokens: args.row_group_tokens as usize,
            shard_tokens: args.shard_tokens as usize,
            zstd_level: ZSTD_LEVEL,
        },
        progress: !args.quiet,
    };
    let summary = ingest::run(&opts).map_err(|e| match e {
        ingest::IngestError::PartNeedsTokenizer => usage(e),
        e => e.into(),
    })?;
    finish(summary, &out, args.strict)
}

/// `ingest --merge OUT PART...`: the parts of a partitioned run into one store.
fn merge(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let (out, parts) = args.paths.split_first().context("missing OUT_DIR")?;
    let summary = ingest::merge(out, parts).map_err(|e| match e {
        ingest::IngestError::Merge(_) => usage(e),
        e => e.into(),
    })?;
    finish(summary, out, args.strict)
}

/// Prints the tally; with `strict`, failed inputs make the exit status 1.
fn finish(summary: ingest::Summary, out: &Path, strict: bool) -> anyhow::Result<ExitCode> {
    print_tally(
        &summary.manifest,
        out,
        summary.elapsed.as_secs_f64(),
        summary.bytes_read,
    );
    let failed = summary.manifest.totals.files.failed;
    Ok(if strict && failed > 0 {
        eprintln!(
            "error: {failed} input(s) failed (--strict); see {}",
            out.join(ingest::REPORT_FILE).display()
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// How the stages read `inputs` (shared with `tokenizer train`); flags that contradict each
/// other are a usage error.
pub fn stage_options(
    read: ReadArgs,
    inputs: Vec<PathBuf>,
    exclude: PathBuf,
    select: Select,
) -> anyhow::Result<StageOptions> {
    if !read.lang_id && !read.lang.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "--lang {} keeps prose by its identified language: it needs --lang-id on",
            read.lang.join(",")
        )));
    }
    let threads = read
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let file_timeout = std::time::Duration::from_secs_f64(read.file_timeout);
    Ok(StageOptions {
        inputs,
        select,
        exclude,
        follow_symlinks: read.follow_symlinks,
        threads,
        max_file_bytes: read.max_file_mb << 20,
        chunk_bytes: read.chunk_bytes as usize,
        file_timeout,
        extract: ExtractOptions {
            text_column: read.text_column,
            batch_rows: DATASET_BATCH_ROWS,
            batch_bytes: DATASET_BATCH_BYTES,
            max_row_bytes: read.max_file_mb << 20,
            // The PDF reader checks most of the same budget itself, so a slow PDF usually
            // stops cleanly before the watchdog has to abandon its thread.
            pdf: PdfLimits {
                deadline: file_timeout.mul_f64(PDF_SHARE_OF_BUDGET),
                ..PdfLimits::default()
            },
        },
        clean: CleanOptions {
            secrets: !read.keep_secrets,
            pii: read.redact.0,
            near_dup: read.near_dup,
            filter: read.filter,
            lang_id: read.lang_id,
            langs: read.lang,
        },
    })
}

/// The part of a Slurm array job's task (`--array=1-8` gives parts 1/8 .. 8/8), when this
/// runs in one with more than one task.
fn slurm_part() -> anyhow::Result<Option<(u32, u32)>> {
    let var = |name: &str| std::env::var(name).ok().map(|v| (name.to_string(), v));
    let Some((_, count)) = var("SLURM_ARRAY_TASK_COUNT") else {
        return Ok(None);
    };
    let number = |(name, value): (String, String)| {
        value
            .trim()
            .parse::<u32>()
            .with_context(|| format!("{name}={value} is not a task number; pass --part I/N"))
    };
    let count = number(("SLURM_ARRAY_TASK_COUNT".into(), count))?;
    let id = number(var("SLURM_ARRAY_TASK_ID").context("SLURM_ARRAY_TASK_ID is not set")?)?;
    let min = var("SLURM_ARRAY_TASK_MIN").map(number).transpose()?;
    let index = id.checked_sub(min.unwrap_or(0)).map(|i| i + 1);
    match index {
        _ if count <= 1 => Ok(None),
        Some(index) if index <= count => {
            eprintln!("ingest: part {index}/{count} of the Slurm array job (--part overrides)");
            Ok(Some((index, count)))
        }
        _ => anyhow::bail!(
            "SLURM_ARRAY_TASK_ID={id} is not one of {count} consecutive tasks; pass --part I/N"
        ),
    }
}

fn print_tally(m: &Manifest, out: &std::path::Path, secs: f64, bytes: u64) {
    let t = &m.totals;
    let mb = bytes as f64 / 1e6;
    println!(
        "{} files in {:.1} s ({:.1} MB, {:.2} MB/s): {} ingested, {} skipped, {} failed",
        t.files.ingested + t.files.skipped + t.files.failed,
        secs,
        mb,
        mb / secs.max(1e-9),
        t.files.ingested,
        t.files.skipped,
        t.files.failed
    );
    println!(
        "  {:<10} {:>9} {:>8} {:>7} {:>12}",
        "kind", "ingested", "skipped", "failed", "tokens"
    );
    for (kind, o) in &t.files_by_kind {
        let tokens = t.by_kind.get(kind).map_or(0, |g| g.tokens);
        println!(
            "  {kind:<10} {:>9} {:>8} {:>7} {tokens:>12}",
            o.ingested, o.skipped, o.failed
        );
    }
    let shards = m.shards.len();
    println!(
        "  {} documents ({} duplicates dropped), {} chunks, {} tokens (train {}, val {}) in {shards} shard(s)",
        t.documents, t.duplicates, t.chunks, t.tokens, t.train.tokens, t.val.tokens
    );
    if !t.skipped_by_reason.is_empty() {
        let reasons: Vec<_> = t
            .skipped_by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        println!("  skipped: {}", reasons.join(", "));
    }
    if t.files.skipped + t.files.failed + t.repaired > 0 {
        println!("  details: {}", out.join(ingest::REPORT_FILE).display());
    }
    println!(
        "  tokenizer: {} tokens, eos id {} -> {}",
        m.tokenizer.vocab_size,
        m.tokenizer.eos_id,
        out.display()
    );
}
