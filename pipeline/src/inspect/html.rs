//! `--html FILE`: the report as one self-contained page, its charts drawn as inline SVG
//! (no scripts, no fetched assets), so it opens anywhere and can be mailed as one file.

use std::fmt::Write;

use crate::html::{escape, STYLE};

use super::histogram::Distribution;
use super::report::{Report, Share, SplitFigures};

/// Chart colour.
const BAR: &str = "#4a78b5";

pub fn render(r: &Report) -> String {
    let mut b = String::new();
    let o = &mut b;
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mamba inspect: {}</title>\
         <style>{STYLE}</style></head><body><h1>Shard store <code>{}</code></h1>",
        escape(&r.store),
        escape(&r.store)
    );
    let _ = write!(o, "<h2>Totals</h2><table><tr><th class=l>split</th><th>shards</th><th>row groups</th><th>rows</th><th>documents</th><th>tokens</th><th>bytes on disk</th></tr>");
    for (name, s) in [("train", &r.train), ("val", &r.val), ("total", &r.total)] {
        split_row(o, name, s);
    }
    let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
    let _ = write!(
        o,
        "</table><p>Source bytes {} &middot; tokens per source byte {} &middot; disk bytes per token {} \
         &middot; zstd compression ratio {}<br>Files: {} ingested ({} repaired), {} skipped, {} failed \
         &middot; {} duplicate documents dropped</p>",
        r.source_bytes,
        opt(r.tokens_per_source_byte, 3),
        opt(r.disk_bytes_per_token, 3),
        opt(r.compression_ratio, 2),
        r.files.ingested,
        r.repaired,
        r.files.skipped,
        r.files.failed,
        r.duplicates
    );
    let _ = write!(
        o,
        "<p>Cleaned: {} near-duplicate documents dropped</p>",
        r.near_duplicates
    );
    let lists = [
        ("Skipped", &r.skip_reasons),
        ("Failed", &r.fail_reasons),
        ("Filtered", &r.filtered),
        ("Redacted", &r.redactions),
    ];
    for (what, counts) in lists {
        if !counts.is_empty() {
            let list: Vec<String> = counts
                .iter()
                .map(|c| format!("{} {}", escape(&c.reason), c.count))
                .collect();
            let _ = write!(o, "<p>{what}: {}</p>", list.join(", "));
        }
    }
    let _ = write!(o, "<h2>Kinds and languages</h2><div class=grid>");
    share_block(o, "kind", &r.by_kind);
    share_block(o, "language", &r.by_lang);
    let _ = write!(o, "</div>");

    let t = &r.tokenizer;
    let _ = write!(
        o,
        "<h2>Tokenizer</h2><p><code>{}</code> ({}): {} tokens, eos id {}, special tokens {}</p>",
        escape(&t.file),
        escape(&t.origin),
        t.vocab_size,
        t.eos_id,
        escape(&t.special_tokens.join(" "))
    );
    match &r.data {
        Some(d) => {
            let _ = write!(
                o,
                "<p>Vocabulary used: {} of {} ({:.1}%), {} ids out of range.</p>",
                d.vocab_used,
                t.vocab_size,
                100.0 * d.vocab_used_fraction,
                d.out_of_vocab
            );
            let bars: Vec<(String, f64, String)> = d
                .top_tokens
                .iter()
                .map(|tc| {
                    let label = format!("{:?} ({})", tc.text, tc.id);
                    (label, tc.count as f64, format!("{:.2}%", 100.0 * tc.share))
                })
                .collect();
            let _ = write!(o, "<h3>Most frequent tokens</h3>{}", hbars(&bars));
            let _ = write!(o, "<h2>Lengths (tokens)</h2><div class=grid>");
            lengths(o, "documents", &d.documents, d.seq_len, d.documents_longer);
            lengths(o, "chunks", &d.chunks, d.seq_len, d.chunks_longer);
            let _ = write!(o, "</div><h2>Top sources by tokens</h2><table><tr><th>tokens</th><th>documents</th><th class=l>source</th></tr>");
            for s in &d.top_sources {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
                    s.tokens,
                    s.documents,
                    escape(&s.source)
                );
            }
            let _ = write!(o, "</table>");
        }
        None => {
            let _ = write!(o, "<p class=note>Summary only: lengths, vocabulary use and top sources need a pass over the data.</p>");
        }
    }
    if !r.samples.is_empty() {
        let _ = write!(o, "<h2>Samples</h2>");
    }
    for s in &r.samples {
        let _ = write!(
            o,
            "<p class=note>{} row group {} row {}: <code>{}</code> chunk {} ({} tokens)</p><pre>{}</pre>",
            escape(&s.file),
            s.row_group,
            s.row,
            escape(&s.source),
            s.chunk,
            s.n_tokens,
            escape(&s.text)
        );
    }
    let _ = writeln!(o, "</body></html>");
    b
}

fn split_row(o: &mut String, name: &str, s: &SplitFigures) {
    let _ = write!(
        o,
        "<tr><td class=l>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        s.shards, s.row_groups, s.rows, s.documents, s.tokens, s.bytes
    );
}

fn share_block(o: &mut String, title: &str, rows: &[Share]) {
    let bars: Vec<(String, f64, String)> = rows
        .iter()
        .map(|s| {
            let note = format!("{:.1}% &middot; {} docs", 100.0 * s.share, s.documents);
            (s.name.clone(), s.tokens as f64, note)
        })
        .collect();
    let _ = write!(o, "<div><h3>Tokens by {title}</h3>{}</div>", hbars(&bars));
}

fn lengths(o: &mut String, what: &str, d: &Distribution, seq_len: u64, longer: u64) {
    let ps: Vec<String> = d
        .percentiles
        .iter()
        .map(|p| format!("p{} {}", p.p, p.value))
        .collect();
    let bars: Vec<(String, f64)> = d
        .histogram
        .iter()
        .map(|b| (format!("{}", b.lo), b.count as f64))
        .collect();
    let _ = write!(
        o,
        "<div class=half><h3>{what}</h3><p>{} {what}, min {}, mean {:.1}, {}, max {}<br>{longer} longer than \
         --seq-len {seq_len}</p>{}<p class=note>bins start at the length shown, each twice the last</p></div>",
        d.count,
        d.min,
        d.mean,
        ps.join(", "),
        d.max,
        vbars(&bars)
    );
}

/// Horizontal bars: label, value, note after the bar.
fn hbars(rows: &[(String, f64, String)]) -> String {
    let (row_h, label_w, bar_w) = (20.0, 170.0, 300.0);
    let most = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let h = row_h * rows.len() as f64 + 4.0;
    let mut s = format!(
        "<svg width=\"{}\" height=\"{h}\" role=img>",
        label_w + bar_w + 150.0
    );
    for (i, (label, v, note)) in rows.iter().enumerate() {
        let y = i as f64 * row_h;
        let w = (v / most * bar_w).max(1.0);
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=end>{}</text><rect x=\"{label_w}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{BAR}\"/>\
             <text x=\"{}\" y=\"{}\">{} &middot; {note}</text>",
            label_w - 6.0,
            y + 14.0,
            escape(label),
            y + 3.0,
            row_h - 6.0,
            label_w + w + 5.0,
            y + 14.0,
            *v as u64
        );
    }
    s.push_str("</svg>");
    s
}

/// A column chart: label under each column, count above it.
fn vbars(cols: &[(String, f64)]) -> String {
    let (col_w, chart_h, pad) = (34.0, 160.0, 20.0);
    let most = cols.iter().map(|c| c.1).fold(0.0, f64::max).max(1.0);
    let w = col_w * cols.len() as f64 + 10.0;
    let mut s = format!(
        "<svg width=\"{w}\" height=\"{}\" role=img>",
        chart_h + 2.0 * pad
    );
    for (i, (label, v)) in cols.iter().enumerate() {
        let x = i as f64 * col_w + 5.0;
        let h = v / most * chart_h;
        let top = pad + chart_h - h;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"{top:.1}\" width=\"{}\" height=\"{h:.1}\" fill=\"{BAR}\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=middle>{}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=middle>{}</text>",
            col_w - 4.0,
            x + col_w / 2.0 - 2.0,
            top - 3.0,
            *v as u64,
            x + col_w / 2.0 - 2.0,
            pad + chart_h + 14.0,
            escape(label)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn charts_have_one_bar_per_row() {
        let svg = hbars(&[
            ("a".into(), 3.0, "n".into()),
            ("<b>".into(), 1.0, "m".into()),
        ]);
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"));
        let cols = vbars(&[("1".into(), 0.0), ("2".into(), 5.0), ("4".into(), 2.0)]);
        assert_eq!(cols.matches("<rect").count(), 3);
    }
}
