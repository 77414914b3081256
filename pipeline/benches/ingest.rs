//! Ingest throughput and memory against the bare tokenizer.
//!
//! `cargo bench -p mamba-pipeline --bench ingest -- DIR TOKENIZER_JSON [REPEATS] [--no-baseline]`
//!
//! Runs the whole pipeline (walk, extract, chunk, tokenize, zstd Parquet) on DIR with the
//! given tokenizer, then the baseline: `encode_batch` of the bare `tokenizers` crate over the
//! very same chunk texts, held in memory, in the same process. Prints medians of both and
//! their ratio, and the peak RSS of the pipeline runs (taken before the baseline loads the
//! text). `--no-baseline` skips the baseline, for the memory check on a corpus made 10x
//! larger by `scale_corpus.py`. The `encode_baseline` bench runs the baseline alone with the
//! system allocator.

mod common;

use mamba_pipeline::ingest::{self, IngestOptions, TokenizerSource};
use mamba_pipeline::shard::writer::ShardLimits;

/// The allocator the `mamba` binary uses, so the bench measures what users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let usage = "cargo bench -p mamba-pipeline --bench ingest -- DIR TOKENIZER_JSON [REPEATS] [--no-baseline]";
    let (dir, tokenizer, repeats, flags) = common::args(usage);
    let out = std::env::temp_dir().join(format!("mamba-ingest-bench-{}", std::process::id()));
    let opts = IngestOptions {
        stages: common::stage_options(dir.clone().into(), out.clone()),
        out: out.clone(),
        tokenizer: TokenizerSource::File {
            path: tokenizer.clone().into(),
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
    // The first run alone, so the peak RSS is the pipeline's and not the baseline's.
    let first = ingest::run(&opts).unwrap_or_else(|e| panic!("ingest failed: {e}"));
    let rss = common::peak_rss_mb();
    let t = &first.manifest.totals;
    let mb = first.bytes_read as f64 / 1e6;
    let threads = common::threads();
    let files = t.files.ingested + t.files.skipped + t.files.failed;
    println!(
        "input: {dir}: {files} files ({} ingested), {mb:.1} MB, {} documents, {} tokens",
        t.files.ingested, t.documents, t.tokens
    );
    println!(
        "pipeline, first run: {:.2} s, peak RSS {rss:.0} MB",
        first.elapsed.as_secs_f64()
    );
    if flags.iter().any(|f| f == "--no-baseline") {
        let _ = std::fs::remove_dir_all(&out);
        return;
    }
    // Then pipeline and baseline in turns, so that load on a shared machine hits both alike.
    let texts = mamba_pipeline::ingest::chunk_texts(&opts.stages);
    let (mut pipe, mut base, mut ratios, mut base_ids) =
        (Vec::new(), Vec::new(), Vec::new(), vec![]);
    for _ in 0..repeats {
        let p = ingest::run(&opts)
            .unwrap_or_else(|e| panic!("ingest failed: {e}"))
            .elapsed
            .as_secs_f64();
        let (b, ids) = common::encode_batch(&texts, &tokenizer);
        base_ids = ids;
        ratios.push(b / p);
        pipe.push(p);
        base.push(b);
    }
    let _ = std::fs::remove_dir_all(&out);
    let (p, b) = (common::median(pipe), common::median(base));
    println!(
        "pipeline ({threads} threads): median {p:.2} s over {repeats}: {:.2} MB/s, {:.0} tokens/s",
        mb / p,
        t.tokens as f64 / p
    );
    let base_tokens: usize = base_ids.iter().map(Vec::len).sum();
    println!("baseline encode_batch ({threads} threads, the same chunk texts in memory, {base_tokens} tokens): median {b:.2} s: {:.2} MB/s of input, {:.0} tokens/s", mb / b, base_tokens as f64 / b);
    println!(
        "throughput pipeline/baseline, median of {repeats} paired runs: {:.2}",
        common::median(ratios)
    );
    // The pipeline's encoder must give exactly the ids the bare tokenizer gives.
    let vocab = mamba_pipeline::tokenize::Vocab::load(tokenizer.as_ref(), None).expect("tokenizer");
    let mut encoder = vocab.encoder();
    let differ = texts
        .iter()
        .zip(&base_ids)
        .filter(|(text, ids)| encoder.encode(text).as_ref() != Ok(*ids))
        .count();
    println!(
        "pipeline encoder vs encode_batch: {differ} of {} chunk texts differ in their ids",
        texts.len()
    );
}
