//! The figures that need no pass over the data: the manifest, each shard's Parquet footer,
//! `report.jsonl` (one line per skipped or failed input) and the tokenizer's special tokens.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use super::report::{Count, Report, Share, SplitFigures, TokenizerFigures};
use super::{reason_class, InspectError};
use crate::ingest::REPORT_FILE;
use crate::shard::manifest::{Group, Manifest};
use crate::shard::reader::ShardReader;
use crate::shard::Split;

pub fn summarize(dir: &Path, manifest: &Manifest, top: usize) -> Result<Report, InspectError> {
    let t = &manifest.totals;
    let (mut compressed, mut uncompressed) = (0u64, 0u64);
    let mut splits = [SplitFigures::default(), SplitFigures::default()];
    splits[0].documents = t.train.documents;
    splits[1].documents = t.val.documents;
    let footers = footers(dir, manifest)?;
    for (entry, footer) in manifest.shards.iter().zip(footers) {
        compressed += footer.compressed;
        uncompressed += footer.uncompressed;
        let s = &mut splits[usize::from(entry.split == Split::Val)];
        s.shards += 1;
        s.row_groups += footer.row_groups;
        s.rows += entry.rows;
        s.tokens += entry.tokens;
        s.bytes += entry.bytes;
    }
    let [train, val] = splits;
    let mut total = train.clone();
    total.add(&val);
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let mut skip_reasons: Vec<Count> = t
        .skipped_by_reason
        .iter()
        .map(|(reason, &count)| Count {
            reason: reason.clone(),
            count,
        })
        .collect();
    sort_counts(&mut skip_reasons, top);
    let counts = |map: &BTreeMap<String, u64>| {
        let mut counts: Vec<Count> = map
            .iter()
            .map(|(reason, &count)| Count {
                reason: reason.clone(),
                count,
            })
            .collect();
        sort_counts(&mut counts, top);
        counts
    };
    Ok(Report {
        store: dir.display().to_string(),
        schema_version: manifest.schema_version,
        source_bytes: t.source_bytes,
        tokens_per_source_byte: ratio(total.tokens, t.source_bytes),
        disk_bytes_per_token: ratio(total.bytes, total.tokens),
        compression_ratio: ratio(uncompressed, compressed),
        train,
        val,
        total,
        duplicates: t.duplicates,
        near_duplicates: t.near_duplicates,
        filtered: counts(&t.filtered),
        redactions: counts(&t.redactions),
        files: t.files.clone(),
        repaired: t.repaired,
        skip_reasons,
        fail_reasons: fail_reasons(dir, top)?,
        by_kind: shares(&t.by_kind, t.tokens),
        by_lang: shares(&t.by_lang, t.tokens),
        tokenizer: TokenizerFigures {
            file: manifest.tokenizer.file.clone(),
            origin: manifest.tokenizer.origin.clone(),
            vocab_size: manifest.tokenizer.vocab_size,
            eos_id: manifest.tokenizer.eos_id,
            special_tokens: special_tokens(&dir.join(&manifest.tokenizer.file))?,
        },
        data: None,
        samples: Vec::new(),
    })
}

/// What a shard's footer tells.
struct Footer {
    row_groups: u64,
    compressed: u64,
    uncompressed: u64,
}

/// Every shard's footer, in manifest order, read on a few threads: on a store of thousands
/// of shards the time goes to opening files and decoding footers, not to the disk.
fn footers(dir: &Path, manifest: &Manifest) -> Result<Vec<Footer>, InspectError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let per = manifest.shards.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = manifest
            .shards
            .chunks(per)
            .map(|entries| {
                scope.spawn(move || {
                    entries
                        .iter()
                        .map(|entry| {
                            let reader = ShardReader::open(&dir.join(&entry.file))?;
                            let (compressed, uncompressed) = reader.data_bytes();
                            Ok(Footer {
                                row_groups: reader.num_row_groups() as u64,
                                compressed,
                                uncompressed,
                            })
                        })
                        .collect::<Result<Vec<Footer>, InspectError>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(manifest.shards.len());
        for worker in workers {
            let footers = worker.join().map_err(|_| InspectError::Io {
                path: dir.display().to_string(),
                reason: "a footer reader stopped".into(),
            })?;
            all.extend(footers?);
        }
        Ok(all)
    })
}

/// Largest first, ties by name; at most `top`.
fn sort_counts(counts: &mut Vec<Count>, top: usize) {
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    counts.truncate(top);
}

/// Groups by tokens, largest first, with their share of all tokens.
fn shares(groups: &BTreeMap<String, Group>, tokens: u64) -> Vec<Share> {
    let mut out: Vec<Share> = groups
        .iter()
        .filter(|(_, g)| g.documents > 0)
        .map(|(name, g)| Share {
            name: name.clone(),
            documents: g.documents,
            tokens: g.tokens,
            share: if tokens == 0 {
                0.0
            } else {
                g.tokens as f64 / tokens as f64
            },
        })
        .collect();
    out.sort_by(|a, b| b.tokens.cmp(&a.tokens).then_with(|| a.name.cmp(&b.name)));
    out
}

/// Failed inputs by reason class, read line by line from `report.jsonl` (absent: none).
fn fail_reasons(dir: &Path, top: usize) -> Result<Vec<Count>, InspectError> {
    let path = dir.join(REPORT_FILE);
    let fail = |e: String| InspectError::Io {
        path: path.display().to_string(),
        reason: e,
    };
    let file = match std::fs::File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.map_err(|e| fail(e.to_string()))?,
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| fail(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| fail(format!("line {}: {e}", n + 1)))?;
        if entry["status"] == "failed" {
            let reason = entry["reason"].as_str().unwrap_or_default();
            *counts.entry(reason_class(reason)).or_default() += 1;
        }
    }
    let mut out: Vec<Count> = counts
        .into_iter()
        .map(|(reason, count)| Count { reason, count })
        .collect();
    sort_counts(&mut out, top);
    Ok(out)
}

/// The special tokens of a `tokenizer.json`, read as plain JSON (no tokenizer is built).
fn special_tokens(path: &Path) -> Result<Vec<String>, InspectError> {
    let fail = |e: String| InspectError::Tokenizer {
        path: path.display().to_string(),
        reason: e,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let added = json["added_tokens"].as_array().cloned().unwrap_or_default();
    Ok(added
        .iter()
        .filter(|t| t["special"].as_bool() == Some(true))
        .filter_map(|t| t["content"].as_str().map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_reasons_are_grouped_and_ranked() {
        let tmp = tempfile::tempdir().unwrap();
        let lines = [
            r#"{"source":"a.pdf","status":"failed","reason":"cannot parse PDF: bad xref"}"#,
            r#"{"source":"b.pdf","status":"failed","reason":"cannot parse PDF: no trailer"}"#,
            r#"{"source":"c.bin","status":"skipped","reason":"binary"}"#,
            r#"{"source":"d.jsonl","status":"failed","reason":"no column text (has content)"}"#,
        ];
        std::fs::write(tmp.path().join(REPORT_FILE), lines.join("\n")).unwrap();
        let got = fail_reasons(tmp.path(), 10).unwrap();
        let want = [("cannot parse PDF", 2), ("no column text", 1)];
        assert_eq!(got.len(), want.len());
        for (g, (reason, count)) in got.iter().zip(want) {
            assert_eq!((g.reason.as_str(), g.count), (reason, count));
        }
        assert_eq!(fail_reasons(tmp.path(), 1).unwrap().len(), 1);
        assert!(fail_reasons(&tmp.path().join("none"), 5)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn shares_sum_to_one_largest_first() {
        let mut groups = BTreeMap::new();
        for (name, tokens) in [("code", 30), ("text", 60), ("pdf", 10)] {
            let g = Group {
                documents: 1,
                tokens,
                ..Group::default()
            };
            groups.insert(name.to_string(), g);
        }
        let s = shares(&groups, 100);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["text", "code", "pdf"]);
        assert!((s.iter().map(|s| s.share).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
