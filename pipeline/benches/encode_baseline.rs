//! The bare-tokenizer baseline alone, with the system allocator (the `ingest` bench runs it
//! in-process with the binary's allocator): `encode_batch` over the chunk texts of DIR.
//!
//! `cargo bench -p mamba-pipeline --bench encode_baseline -- DIR TOKENIZER_JSON [REPEATS]`

mod common;

fn main() {
    let usage =
        "cargo bench -p mamba-pipeline --bench encode_baseline -- DIR TOKENIZER_JSON [REPEATS]";
    let (dir, tokenizer, repeats, _) = common::args(usage);
    let stages = common::stage_options(dir.clone().into(), std::env::temp_dir().join("none"));
    let input_mb = walk_mb(std::path::Path::new(&dir));
    let texts = mamba_pipeline::ingest::chunk_texts(&stages);
    let text_mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let runs: Vec<_> = (0..repeats)
        .map(|_| common::encode_batch(&texts, &tokenizer))
        .collect();
    let tokens: usize = runs[0].1.iter().map(Vec::len).sum();
    let secs = common::median(runs.into_iter().map(|r| r.0).collect());
    let threads = common::threads();
    println!("baseline encode_batch, system allocator ({threads} threads, {text_mb:.1} MB of chunk text from {input_mb:.1} MB of input, {tokens} tokens): median {secs:.2} s over {repeats}: {:.2} MB/s of input, {:.0} tokens/s, peak RSS {:.0} MB", input_mb / secs, tokens as f64 / secs, common::peak_rss_mb());
}

/// Bytes of the regular files under `dir`, in MB.
fn walk_mb(dir: &std::path::Path) -> f64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total as f64 / 1e6
}
