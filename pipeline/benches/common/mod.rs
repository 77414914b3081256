//! Shared by the ingest benches: options, the bare-tokenizer baseline, medians and peak RSS.

use std::path::PathBuf;
use std::time::Instant;

use mamba_pipeline::extract::ExtractOptions;
use mamba_pipeline::ingest::StageOptions;

pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(f64::NAN) / 1024.0
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn stage_options(dir: PathBuf, out: PathBuf) -> StageOptions {
    StageOptions {
        inputs: vec![dir],
        select: mamba_pipeline::discover::Select::All,
        exclude: out,
        follow_symlinks: false,
        threads: threads(),
        max_file_bytes: 256 << 20,
        chunk_bytes: 16384,
        file_timeout: std::time::Duration::from_secs(60),
        extract: ExtractOptions {
            text_column: "text".into(),
            batch_rows: 1024,
            batch_bytes: 4 << 20,
            max_row_bytes: 256 << 20,
            pdf: Default::default(),
        },
        // The benchmark pairs the pipeline with bare tokenization of the same texts.
        clean: mamba_pipeline::clean::CleanOptions::off(),
    }
}

/// The baseline: the bare `tokenizers` crate encoding `texts` in one `encode_batch` call
/// (parallel over the cores). Returns the seconds and the ids of each text.
pub fn encode_batch(texts: &[String], tokenizer: &str) -> (f64, Vec<Vec<u32>>) {
    let mut tok = tokenizers::Tokenizer::from_file(tokenizer).expect("tokenizer loads");
    // Document text is encoded as text, special tokens' literals included, as ingest does.
    tok.set_encode_special_tokens(true);
    let batch = texts.to_vec();
    let start = Instant::now();
    let enc = tok.encode_batch(batch, false).expect("encode_batch");
    let secs = start.elapsed().as_secs_f64();
    (secs, enc.iter().map(|e| e.get_ids().to_vec()).collect())
}

/// `DIR TOKENIZER_JSON [REPEATS]` and flags, from the command line.
pub fn args(usage: &str) -> (String, String, usize, Vec<String>) {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let flags = all
        .iter()
        .filter(|a| a.starts_with("--"))
        .cloned()
        .collect();
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let (Some(dir), Some(tokenizer)) = (args.first(), args.get(1)) else {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    };
    let repeats = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    (dir.to_string(), tokenizer.to_string(), repeats, flags)
}
