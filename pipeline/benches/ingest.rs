//! Ingest throughput and memory against the bare tokenizer.
//!
//! `cargo bench -p mamba-pipeline --bench ingest -- DIR TOKENIZER_JSON [REPEATS]`
//!
//! Runs the whole pipeline (walk, extract, chunk, tokenize, zstd Parquet) on DIR with the
//! given tokenizer, then the baseline: `encode_batch` of the bare `tokenizers` crate over the
//! very same chunk texts, held in memory. Prints medians of both and their ratio, and the peak
//! RSS of the pipeline runs (measured before the baseline loads the text into memory).

use std::path::PathBuf;
use std::time::Instant;

use mamba_pipeline::extract::ExtractOptions;
use mamba_pipeline::ingest::{self, IngestOptions, StageOptions, TokenizerSource};
use mamba_pipeline::shard::writer::ShardLimits;

/// The allocator the `mamba` binary uses, so the bench measures what users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(f64::NAN) / 1024.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn stage_options(dir: PathBuf, out: PathBuf, threads: usize) -> StageOptions {
    StageOptions {
        inputs: vec![dir],
        exclude: out,
        follow_symlinks: false,
        threads,
        max_file_bytes: 256 << 20,
        chunk_bytes: 16384,
        extract: ExtractOptions {
            text_column: "text".into(),
            batch_rows: 1024,
            pdf: Default::default(),
        },
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(dir), Some(tokenizer)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: cargo bench -p mamba-pipeline --bench ingest -- DIR TOKENIZER_JSON [REPEATS]"
        );
        std::process::exit(2);
    };
    let repeats: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = tempfile_dir();
    let opts = IngestOptions {
        stages: stage_options(dir.into(), out.clone(), threads),
        out: out.clone(),
        tokenizer: TokenizerSource::File {
            path: tokenizer.into(),
            eos: None,
        },
        val_fraction: 0.01,
        limits: ShardLimits {
            row_group_tokens: 1_000_000,
            shard_tokens: 50_000_000,
            zstd_level: 3,
        },
        progress: false,
    };

    let (mut secs, mut summary) = (Vec::new(), None);
    for _ in 0..repeats {
        let s = ingest::run(&opts).unwrap_or_else(|e| panic!("ingest failed: {e}"));
        secs.push(s.elapsed.as_secs_f64());
        summary = Some(s);
    }
    let rss = peak_rss_mb();
    let s = summary.expect("at least one repeat");
    let t = &s.manifest.totals;
    let mb = s.bytes_read as f64 / 1e6;
    let pipe = median(secs);
    println!(
        "input: {dir}: {} files ({} ingested), {mb:.1} MB, {} documents, {} tokens",
        t.files.ingested + t.files.skipped + t.files.failed,
        t.files.ingested,
        t.documents,
        t.tokens
    );
    println!("pipeline ({threads} threads): median {pipe:.2} s over {repeats}: {:.2} MB/s, {:.0} tokens/s, peak RSS {rss:.0} MB", mb / pipe, t.tokens as f64 / pipe);

    // Baseline: the same chunk texts, encoded by the bare tokenizer in one encode_batch call.
    let texts = collect_chunks(&opts.stages);
    let text_mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let tok = tokenizers::Tokenizer::from_file(tokenizer).expect("tokenizer loads");
    let mut base = Vec::new();
    let mut base_tokens = 0;
    for _ in 0..repeats {
        let start = Instant::now();
        let enc = tok
            .encode_batch(texts.clone(), false)
            .expect("encode_batch");
        base.push(start.elapsed().as_secs_f64());
        base_tokens = enc.iter().map(|e| e.len()).sum::<usize>();
    }
    let base = median(base);
    println!("baseline tokenizers encode_batch ({threads} threads, text in memory): median {base:.2} s: {:.2} MB/s of input, {:.0} tokens/s ({text_mb:.1} MB of text, {base_tokens} tokens)", mb / base, base_tokens as f64 / base);
    println!("ratio pipeline/baseline throughput: {:.2}", base / pipe);
    let _ = std::fs::remove_dir_all(&out);
}

/// Every chunk text the pipeline would tokenize, in memory (for the baseline only).
fn collect_chunks(stages: &StageOptions) -> Vec<String> {
    ingest::chunk_texts(stages)
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mamba-ingest-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
