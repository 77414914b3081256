//! The report as terminal tables: what `mamba inspect` prints by default.

use std::fmt::Write;

use super::histogram::Distribution;
use super::report::{Report, Share, SplitFigures};

/// Widest histogram bar, in characters.
const BAR_WIDTH: u64 = 40;
/// Characters of a sample shown before it is cut (the JSON and HTML keep all of it).
const SAMPLE_CHARS: usize = 800;

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(o, "shard store {} (schema {})", r.store, r.schema_version);
    let _ = writeln!(
        o,
        "\n  {:<6} {:>7} {:>10} {:>9} {:>10} {:>13} {:>12}",
        "split", "shards", "row groups", "rows", "documents", "tokens", "bytes"
    );
    for (name, s) in [("train", &r.train), ("val", &r.val), ("total", &r.total)] {
        split_line(o, name, s);
    }
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let _ = writeln!(
        o,
        "\n  source bytes {} | tokens per source byte {} | disk bytes per token {} | zstd ratio {}",
        r.source_bytes,
        opt(r.tokens_per_source_byte, 3),
        opt(r.disk_bytes_per_token, 3),
        opt(r.compression_ratio, 2)
    );
    let _ = writeln!(
        o,
        "  files: {} ingested ({} repaired), {} skipped, {} failed; {} duplicate documents dropped",
        r.files.ingested, r.repaired, r.files.skipped, r.files.failed, r.duplicates
    );
    let _ = writeln!(
        o,
        "  cleaned: {} near-duplicate documents dropped, {} filtered, {} redactions",
        r.near_duplicates,
        r.filtered.iter().map(|c| c.count).sum::<u64>(),
        r.redactions.iter().map(|c| c.count).sum::<u64>()
    );
    let lists = [
        ("skipped", &r.skip_reasons),
        ("failed", &r.fail_reasons),
        ("filtered", &r.filtered),
        ("redacted", &r.redactions),
    ];
    for (what, counts) in lists {
        if !counts.is_empty() {
            let list: Vec<String> = counts
                .iter()
                .map(|c| format!("{} {}", c.reason, c.count))
                .collect();
            let _ = writeln!(o, "  {what}: {}", list.join(", "));
        }
    }
    shares(o, "kind", &r.by_kind);
    shares(o, "language", &r.by_lang);

    let t = &r.tokenizer;
    let _ = writeln!(
        o,
        "\ntokenizer {} ({}): {} tokens, eos id {}, special {}",
        t.file,
        t.origin,
        t.vocab_size,
        t.eos_id,
        t.special_tokens.join(" ")
    );
    if let Some(d) = &r.data {
        let _ = writeln!(
            o,
            "  vocabulary used: {} of {} ({:.1}%){}",
            d.vocab_used,
            t.vocab_size,
            100.0 * d.vocab_used_fraction,
            if d.out_of_vocab > 0 {
                format!(", {} ids out of range", d.out_of_vocab)
            } else {
                String::new()
            }
        );
        let _ = writeln!(o, "  {:>7} {:>12} {:>7}  token", "id", "count", "share");
        for tc in &d.top_tokens {
            let _ = writeln!(
                o,
                "  {:>7} {:>12} {:>6.2}%  {:?}",
                tc.id,
                tc.count,
                100.0 * tc.share,
                tc.text
            );
        }
        distribution(o, "document", &d.documents, d.seq_len, d.documents_longer);
        distribution(o, "chunk", &d.chunks, d.seq_len, d.chunks_longer);
        let _ = writeln!(o, "\ntop sources by tokens");
        let _ = writeln!(o, "  {:>10} {:>9}  source", "tokens", "documents");
        for s in &d.top_sources {
            let _ = writeln!(o, "  {:>10} {:>9}  {}", s.tokens, s.documents, s.source);
        }
    } else {
        let _ = writeln!(
            o,
            "\n(summary only: lengths, vocabulary use and top sources need a pass over the data)"
        );
    }
    for s in &r.samples {
        let _ = writeln!(
            o,
            "\n--- sample: {} row group {} row {}: {} chunk {} ({} tokens)",
            s.file, s.row_group, s.row, s.source, s.chunk, s.n_tokens
        );
        let shown: String = s.text.chars().take(SAMPLE_CHARS).collect();
        let cut = if shown.len() < s.text.len() {
            " …"
        } else {
            ""
        };
        let _ = writeln!(o, "{shown}{cut}");
    }
    out
}

fn split_line(o: &mut String, name: &str, s: &SplitFigures) {
    let _ = writeln!(
        o,
        "  {name:<6} {:>7} {:>10} {:>9} {:>10} {:>13} {:>12}",
        s.shards, s.row_groups, s.rows, s.documents, s.tokens, s.bytes
    );
}

fn shares(o: &mut String, title: &str, rows: &[Share]) {
    let _ = writeln!(
        o,
        "\n  {title:<12} {:>10} {:>13} {:>7}",
        "documents", "tokens", "share"
    );
    for s in rows {
        let _ = writeln!(
            o,
            "  {:<12} {:>10} {:>13} {:>6.1}%",
            s.name,
            s.documents,
            s.tokens,
            100.0 * s.share
        );
    }
}

fn distribution(o: &mut String, what: &str, d: &Distribution, seq_len: u64, longer: u64) {
    let ps: Vec<String> = d
        .percentiles
        .iter()
        .map(|p| format!("p{} {}", p.p, p.value))
        .collect();
    let _ = writeln!(
        o,
        "\n{what} lengths (tokens): {} {what}s, min {}, mean {:.1}, {}, max {}; {longer} longer than --seq-len {seq_len}",
        d.count,
        d.min,
        d.mean,
        ps.join(", "),
        d.max
    );
    let most = d
        .histogram
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(0)
        .max(1);
    for b in &d.histogram {
        let width = (b.count * BAR_WIDTH).div_ceil(most) as usize;
        let _ = writeln!(
            o,
            "  {:>7}-{:<7} {:>9} {}",
            b.lo,
            b.hi,
            b.count,
            "#".repeat(width)
        );
    }
}
