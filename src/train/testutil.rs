//! Small shard stores written in tests: documents of known tokens, cut into chunks, in row
//! groups small enough that every loader path (several shards, several row groups) is hit.

use std::path::Path;

use mamba_pipeline::shard::manifest::{Manifest, TokenizerEntry, Totals};
use mamba_pipeline::shard::writer::{Row, ShardLimits, ShardWriter};
use mamba_pipeline::shard::{sha256_file, Split, SCHEMA_VERSION};

pub const EOS: u32 = 0;
pub const VOCAB: usize = 64;

/// Document `d` of a store: `len` tokens in 1..VOCAB, a function of (d, i) only.
pub fn doc_tokens(d: u64, len: usize) -> Vec<u32> {
    (0..len)
        .map(|i| 1 + ((d as usize * 7 + i * 3) % (VOCAB - 1)) as u32)
        .collect()
}

/// Writes `docs` train and `docs / 4` val documents of 20..60 tokens in chunks of at most 16
/// tokens, row groups of ~48 tokens, shards of ~400 tokens, plus a manifest and tokenizer.
pub fn write_store(dir: &Path, docs: u64) {
    let limits = ShardLimits {
        row_group_tokens: 48,
        shard_tokens: 400,
        zstd_level: 1,
    };
    let mut entries = Vec::new();
    for (split, n, first) in [(Split::Train, docs, 0), (Split::Val, docs / 4, 1_000_000)] {
        let mut w = ShardWriter::new(dir, split, limits);
        for d in first..first + n {
            let toks = doc_tokens(d, 20 + (d as usize * 13) % 41);
            for (c, chunk) in toks.chunks(16).enumerate() {
                let row = Row {
                    doc_id: d,
                    chunk: c as u32,
                    source: "a.txt",
                    kind: "text",
                    lang: "plain",
                    tokens: chunk,
                };
                w.push(row).unwrap();
            }
        }
        entries.extend(w.finish().unwrap());
    }
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, "{\"model\": \"test\"}\n").unwrap();
    let manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        tokenizer: TokenizerEntry {
            file: "tokenizer.json".into(),
            sha256: sha256_file(&tok).unwrap(),
            vocab_size: VOCAB,
            eos_id: EOS,
            origin: "trained".into(),
        },
        shards: entries,
        totals: Totals::default(),
        settings: serde_json::Value::Null,
    };
    manifest.save(dir).unwrap();
}
