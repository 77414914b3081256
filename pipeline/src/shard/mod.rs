//! The shard store: the contract between ingest and training.
//!
//! ```text
//! OUT/manifest.json   written last, atomically (see [`manifest`])
//! OUT/tokenizer.json
//! OUT/train-00000.parquet, OUT/val-00000.parquet, ...   zstd Parquet, one row per chunk
//! OUT/report.jsonl    one line per skipped, failed or repaired input
//! ```

pub mod manifest;
pub mod reader;
pub mod writer;

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

/// Version of the row schema and manifest layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Which split a document belongs to, chosen by a hash of its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    /// The split of a document: a stable hash, independent of the order documents arrive in.
    pub fn of(doc_hash: u128, val_fraction: f64) -> Split {
        if (bucket(doc_hash) as f64) < val_fraction * BUCKETS as f64 {
            Split::Val
        } else {
            Split::Train
        }
    }
}

/// Buckets of the split hash: a document is in val when its bucket is below the fraction.
const BUCKETS: u64 = 1 << 20;

/// The split bucket of a document: the lower, the closer to val.
pub fn bucket(doc_hash: u128) -> u64 {
    ((doc_hash >> 64) as u64) % BUCKETS
}

/// The Arrow schema of every shard: one row per chunk.
pub fn schema() -> Arc<Schema> {
    let item = Field::new("item", DataType::UInt32, false);
    Arc::new(Schema::new(vec![
        Field::new("doc_id", DataType::UInt64, false),
        Field::new("chunk", DataType::UInt32, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("lang", DataType::Utf8, false),
        Field::new("tokens", DataType::List(Arc::new(item)), false),
        Field::new("n_tokens", DataType::UInt32, false),
    ]))
}

/// Writes `bytes` to `path` through a temporary name and a rename, so readers see the old
/// file or the new one, never half of one.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = tmp_path(path);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of `bytes`, as recorded in the manifest.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// The sha256 of a file's bytes, as recorded in the manifest.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// The temporary name a file is written under before it is renamed into place.
pub fn tmp_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_the_fraction() {
        let hashes = (0..20_000u128).map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()));
        let val = hashes.filter(|&h| Split::of(h, 0.1) == Split::Val).count();
        assert!((1800..2200).contains(&val), "{val}");
        assert_eq!(Split::of(u128::MAX, 0.0), Split::Train);
        assert_eq!(Split::of(0, 1.0), Split::Val);
    }
}
