//! One streaming pass over the `doc_id`, `source` and `tokens` columns of every shard, a
//! row group at a time: length distributions, vocabulary use, token frequencies and the
//! top sources.
//!
//! Memory is one row group, one counter per vocabulary entry, a bounded histogram, and one
//! counter per input file for the top sources. The writer puts the chunks of a document,
//! and the documents of a file, next to each other within a split, so documents and
//! sources are runs of equal values and are summed as runs.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::Tokenizer;

use super::histogram::LengthHistogram;
use super::report::{DataFigures, SourceTokens, TokenCount};
use super::{InspectError, Options};
use crate::shard::manifest::Manifest;
use crate::shard::reader::{Column, ShardReader};
use crate::shard::Split;

#[derive(Default)]
struct Run {
    /// The document being summed: its id and tokens so far.
    doc: Option<(u64, u64)>,
    /// The source being summed: its name, documents and tokens so far.
    source: Option<(String, u64, u64)>,
}

struct Pass {
    seq_len: u64,
    documents: LengthHistogram,
    chunks: LengthHistogram,
    documents_longer: u64,
    chunks_longer: u64,
    counts: Vec<u64>,
    out_of_vocab: u64,
    sources: HashMap<String, (u64, u64)>,
}

impl Pass {
    fn end_doc(&mut self, run: &mut Run) {
        if let Some((_, tokens)) = run.doc.take() {
            self.documents.add(tokens);
            self.documents_longer += u64::from(tokens > self.seq_len);
        }
    }

    fn end_source(&mut self, run: &mut Run) {
        if let Some((name, docs, tokens)) = run.source.take() {
            let entry = self.sources.entry(name).or_default();
            entry.0 += docs;
            entry.1 += tokens;
        }
    }
}

pub fn scan(
    dir: &Path,
    manifest: &Manifest,
    tokenizer: &Tokenizer,
    opts: &Options,
) -> Result<DataFigures, InspectError> {
    // Sized by the tokenizer actually loaded, not by the manifest's claim: a damaged
    // manifest must not decide an allocation (`--verify` reports any disagreement).
    let vocab = tokenizer.get_vocab_size(true);
    let mut pass = Pass {
        seq_len: opts.seq_len,
        documents: LengthHistogram::default(),
        chunks: LengthHistogram::default(),
        documents_longer: 0,
        chunks_longer: 0,
        counts: vec![0; vocab],
        out_of_vocab: 0,
        sources: HashMap::new(),
    };
    let columns = [Column::DocId, Column::Source, Column::Tokens];
    for split in [Split::Train, Split::Val] {
        let mut run = Run::default();
        for entry in manifest.shards(split) {
            let reader = ShardReader::open(&dir.join(&entry.file))?;
            for g in 0..reader.num_row_groups() {
                let c = reader.read(g, &columns)?;
                for (r, tokens) in c.tokens.iter().enumerate() {
                    let len = tokens.len() as u64;
                    pass.chunks.add(len);
                    pass.chunks_longer += u64::from(len > pass.seq_len);
                    for &t in tokens {
                        match pass.counts.get_mut(t as usize) {
                            Some(n) => *n += 1,
                            None => pass.out_of_vocab += 1,
                        }
                    }
                    let (doc_id, source) = (c.doc_id[r], &c.source[r]);
                    let same_doc = matches!(run.doc, Some((id, _)) if id == doc_id);
                    if !same_doc {
                        pass.end_doc(&mut run);
                        run.doc = Some((doc_id, 0));
                    }
                    if let Some((_, n)) = &mut run.doc {
                        *n += len;
                    }
                    if !matches!(&run.source, Some((name, ..)) if name == source) {
                        pass.end_source(&mut run);
                        run.source = Some((source.clone(), 0, 0));
                    }
                    if let Some((_, docs, n)) = &mut run.source {
                        *docs += u64::from(!same_doc);
                        *n += len;
                    }
                }
            }
        }
        pass.end_doc(&mut run);
        pass.end_source(&mut run);
    }
    Ok(figures(pass, tokenizer, opts))
}

fn figures(pass: Pass, tokenizer: &Tokenizer, opts: &Options) -> DataFigures {
    let total: u64 = pass.counts.iter().sum();
    let used = pass.counts.iter().filter(|&&n| n > 0).count() as u64;
    let mut ids: Vec<u32> = (0..pass.counts.len() as u32)
        .filter(|&i| pass.counts[i as usize] > 0)
        .collect();
    ids.sort_by(|&a, &b| {
        pass.counts[b as usize]
            .cmp(&pass.counts[a as usize])
            .then(a.cmp(&b))
    });
    let top_tokens = ids
        .into_iter()
        .take(opts.top)
        .map(|id| TokenCount {
            id,
            text: decode(tokenizer, id),
            count: pass.counts[id as usize],
            share: pass.counts[id as usize] as f64 / total.max(1) as f64,
        })
        .collect();
    let mut sources: Vec<SourceTokens> = pass
        .sources
        .into_iter()
        .map(|(source, (documents, tokens))| SourceTokens {
            source,
            documents,
            tokens,
        })
        .collect();
    sources.sort_by(|a, b| {
        b.tokens
            .cmp(&a.tokens)
            .then_with(|| a.source.cmp(&b.source))
    });
    sources.truncate(opts.top);
    let vocab = pass.counts.len();
    DataFigures {
        seq_len: pass.seq_len,
        documents: pass.documents.distribution(),
        chunks: pass.chunks.distribution(),
        documents_longer: pass.documents_longer,
        chunks_longer: pass.chunks_longer,
        vocab_used: used,
        vocab_used_fraction: used as f64 / vocab.max(1) as f64,
        out_of_vocab: pass.out_of_vocab,
        top_tokens,
        top_sources: sources,
    }
}

/// One token as text: decoded when it is whole characters, else its vocabulary entry.
pub fn decode(tokenizer: &Tokenizer, id: u32) -> String {
    match tokenizer.decode(&[id], false) {
        Ok(text) if !text.is_empty() && !text.contains('\u{fffd}') => text,
        _ => tokenizer.id_to_token(id).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::manifest::{TokenizerEntry, Totals};
    use crate::shard::writer::{Row, ShardLimits, ShardWriter};
    use crate::tokenize::Vocab;

    /// Documents (source, doc id, chunks) written across small row groups and shards.
    const DOCS: &[(&str, u64, &[&[u32]])] = &[
        ("a.txt", 1, &[&[5, 6, 7], &[5, 5], &[9]]),
        ("b.txt", 2, &[&[1, 2, 3, 4, 5, 6]]),
        ("data.jsonl", 3, &[&[7]]),
        ("data.jsonl", 4, &[&[7, 7, 9_999]]),
    ];

    #[test]
    fn documents_and_sources_are_summed_across_row_groups_and_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = ShardLimits {
            row_group_tokens: 2,
            shard_tokens: 5,
            zstd_level: 1,
        };
        let mut w = ShardWriter::new(tmp.path(), Split::Train, limits);
        for (source, doc_id, chunks) in DOCS {
            for (i, tokens) in chunks.iter().enumerate() {
                let row = Row {
                    doc_id: *doc_id,
                    chunk: i as u32,
                    source,
                    kind: "text",
                    lang: "plain",
                    tokens,
                };
                w.push(row).unwrap();
            }
        }
        let shards = w.finish().unwrap();
        assert!(shards.len() > 1);
        let corpus = ["one two three four five six seven eight nine ten"; 3];
        let vocab = Vocab::train(corpus.iter(), 300).unwrap();
        let manifest = Manifest {
            schema_version: crate::shard::SCHEMA_VERSION,
            tokenizer: TokenizerEntry {
                file: "tokenizer.json".into(),
                sha256: String::new(),
                vocab_size: vocab.vocab_size(),
                eos_id: vocab.eos_id,
                origin: "trained".into(),
            },
            shards,
            totals: Totals::default(),
            settings: serde_json::Value::Null,
        };
        let opts = Options::new().seq_len(3).top(3);
        let d = scan(tmp.path(), &manifest, &vocab.tokenizer, &opts).unwrap();

        // Documents of 6, 6, 1 and 3 tokens; chunks of 3, 2, 1, 6, 1 and 3.
        assert_eq!(d.documents.count, 4);
        assert_eq!(d.documents.total, 16);
        assert_eq!((d.documents.min, d.documents.max), (1, 6));
        assert_eq!(d.documents_longer, 2);
        assert_eq!(d.chunks.count, 6);
        assert_eq!(d.chunks_longer, 1);
        assert_eq!(d.out_of_vocab, 1);
        // Ids 1..=7 and 9; 9999 is past the vocabulary.
        assert_eq!(d.vocab_used, 8);
        let top: Vec<(u32, u64)> = d.top_tokens.iter().map(|t| (t.id, t.count)).collect();
        assert_eq!(top, [(5, 4), (7, 4), (6, 2)]);
        let sources: Vec<(&str, u64, u64)> = d
            .top_sources
            .iter()
            .map(|s| (s.source.as_str(), s.documents, s.tokens))
            .collect();
        assert_eq!(
            sources,
            [("a.txt", 1, 6), ("b.txt", 1, 6), ("data.jsonl", 2, 4)]
        );
    }
}
