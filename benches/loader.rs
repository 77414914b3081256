//! Loader benchmark: tokens/s and peak RSS of the training loader alone (reader threads,
//! packer, shuffle buffer, batcher) over a generated shard store, to show memory stays flat
//! whatever the corpus size.
//!
//! ```text
//! cargo bench --bench loader -- gen  target/bench-loader/1gb  1     # write ~1 GB of shards
//! cargo bench --bench loader -- run  target/bench-loader/1gb        # one epoch, report
//! ```
//!
//! `gen` and `run` are separate processes so the peak RSS of `run` is the loader's alone.

use std::path::Path;
use std::time::Instant;

use mamba::train::loader::{open_split, Loader, LoaderOptions, LoaderState};
use mamba::train::shuffle::SplitMix64;
use mamba_pipeline::shard::manifest::{Manifest, TokenizerEntry, Totals};
use mamba_pipeline::shard::writer::{Row, ShardLimits, ShardWriter};
use mamba_pipeline::shard::{sha256_file, Split, SCHEMA_VERSION};

/// The allocator of the `mamba` binary, so the figures are those of `mamba train`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VOCAB: u64 = 32768;

/// Writes documents of 200..8000 tokens (Zipf-like ids, so zstd sees text-like skew) until
/// the shards reach `gb` GB on disk; row groups of 1M tokens, shards of 50M, as ingest's
/// defaults.
fn generate(dir: &Path, gb: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let limits = ShardLimits {
        row_group_tokens: 1_000_000,
        shard_tokens: 50_000_000,
        zstd_level: 3,
    };
    let mut w = ShardWriter::new(dir, Split::Train, limits);
    let mut rng = SplitMix64::new(1);
    let target = (gb * 1e9) as u64;
    let (mut tokens, mut doc) = (0u64, 0u64);
    let mut buf = Vec::new();
    // Bytes on disk per token, re-estimated as shards close (the writer owns the files).
    while tokens * 2 < target || disk_bytes(dir) < target {
        let len = 200 + rng.below(7800);
        buf.clear();
        for _ in 0..len {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            buf.push(((VOCAB as f64).powf(u) as u64).min(VOCAB - 1) as u32);
        }
        for (c, chunk) in buf.chunks(4096).enumerate() {
            let row = Row {
                doc_id: doc,
                chunk: c as u32,
                source: "gen.txt",
                kind: "text",
                lang: "plain",
                tokens: chunk,
            };
            w.push(row).unwrap();
        }
        tokens += len as u64;
        doc += 1;
        if doc.is_multiple_of(20_000) {
            eprintln!(
                "{tokens} tokens, {} MB on disk",
                disk_bytes(dir) / 1_000_000
            );
        }
    }
    let shards = w.finish().unwrap();
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, "{}\n").unwrap();
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        tokenizer: TokenizerEntry {
            file: "tokenizer.json".into(),
            sha256: sha256_file(&tok).unwrap(),
            vocab_size: VOCAB as usize,
            eos_id: 0,
            origin: "generated".into(),
        },
        shards,
        totals: Totals::default(),
        settings: serde_json::Value::Null,
    };
    manifest.save(dir).unwrap();
    eprintln!("{tokens} tokens in {} bytes", disk_bytes(dir));
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// A memory figure of /proc/self/status, in MB.
fn status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn run(dir: &Path, threads: usize) {
    let m = Manifest::load(dir).unwrap();
    let t0 = Instant::now();
    let shards = open_split(dir, &m, Split::Train, false).unwrap();
    let open_s = t0.elapsed().as_secs_f64();
    let opts = LoaderOptions {
        seq_len: 2048,
        batch_size: 8,
        eos: 0,
        seed: 0,
        shuffle_buffer: 1024,
        shuffle: true,
        prefetch: 4,
        threads,
        epochs: Some(1),
        snapshot_every: 0,
    };
    let t0 = Instant::now();
    let loader = Loader::spawn(shards, opts.clone(), LoaderState::start(&opts));
    let mut tokens = 0u64;
    let mut check = 0u64;
    // Memory is reported every ~500M tokens, to show it levels off.
    let mut next_report = 500_000_000u64;
    while let Some(item) = loader.recv() {
        let b = item.unwrap().batch;
        tokens += b.inputs.len() as u64;
        if tokens >= next_report {
            eprintln!(
                "{:>6}M tokens: RSS {:.0} MB, peak {:.0} MB",
                tokens / 1_000_000,
                status_mb("VmRSS:"),
                peak_rss_mb()
            );
            next_report += 500_000_000;
        }
        check = check.wrapping_add(b.inputs[0] as u64);
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "{}: {:.1} GB, {tokens} tokens in {s:.2} s = {:.1}M tokens/s ({threads} reader threads), \
         peak RSS {:.0} MB, shards opened in {open_s:.2} s (checksum {check})",
        dir.display(),
        disk_bytes(dir) as f64 / 1e9,
        tokens as f64 / s / 1e6,
        peak_rss_mb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["gen", dir, gb] => generate(Path::new(dir), gb.parse().expect("size in GB")),
        ["run", dir] => run(Path::new(dir), 2),
        ["run", dir, threads] => run(Path::new(dir), threads.parse().expect("thread count")),
        _ => eprintln!("usage: loader gen DIR GB | loader run DIR [THREADS]"),
    }
}
