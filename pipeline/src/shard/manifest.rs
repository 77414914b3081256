//! `manifest.json`: what a shard store holds. Written last and atomically, so a manifest
//! only ever names complete files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Split, SCHEMA_VERSION};

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub tokenizer: TokenizerEntry,
    pub shards: Vec<ShardEntry>,
    pub totals: Totals,
    /// The settings that shaped the shards (never the thread count, which does not).
    pub settings: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerEntry {
    pub file: String,
    pub sha256: String,
    pub vocab_size: usize,
    pub eos_id: u32,
    /// `trained` on this corpus, or the path it was given as.
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub split: Split,
    pub rows: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Counts of one group (a kind or a language) of ingested documents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub files: u64,
    pub documents: u64,
    pub chunks: u64,
    pub tokens: u64,
}

/// What happened to the input files, by kind: every file is in exactly one column.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcomes {
    pub ingested: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub files: Outcomes,
    /// Files by kind (`other` for files whose kind was never known, like binaries).
    pub files_by_kind: BTreeMap<String, Outcomes>,
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// Files ingested with a repair (invalid UTF-8, unparsable config, dropped rows).
    pub repaired: u64,
    pub documents: u64,
    pub duplicates: u64,
    pub chunks: u64,
    pub tokens: u64,
    /// Bytes of the input files that were ingested (for tokens per source byte); absent in
    /// manifests written before it was recorded.
    #[serde(default)]
    pub source_bytes: u64,
    pub train: Group,
    pub val: Group,
    pub by_kind: BTreeMap<String, Group>,
    pub by_lang: BTreeMap<String, Group>,
    /// Replacements in the documents kept, by rule (`secret:aws_access_key`, `pii:email`);
    /// absent in manifests written before cleaning.
    #[serde(default)]
    pub redactions: BTreeMap<String, u64>,
    /// Documents dropped as near-duplicates of an earlier one.
    #[serde(default)]
    pub near_duplicates: u64,
    /// Documents dropped by a filter, by rule (`quality:symbol_ratio`).
    #[serde(default)]
    pub filtered: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("no shard store at {0}: {MANIFEST_FILE} is missing (run `mamba ingest` first)")]
    Missing(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} has schema version {found}; this build reads version {SCHEMA_VERSION}")]
    Version { path: String, found: u32 },
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::Missing(dir.display().to_string()))
            }
            other => other.map_err(|e| ManifestError::Read {
                path: shown.clone(),
                reason: e.to_string(),
            })?,
        };
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| ManifestError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if manifest.schema_version != SCHEMA_VERSION {
            return Err(ManifestError::Version {
                path: shown,
                found: manifest.schema_version,
            });
        }
        Ok(manifest)
    }

    /// Writes the manifest into `dir` atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let mut json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        json.push('\n');
        super::write_atomic(&dir.join(MANIFEST_FILE), json.as_bytes())
    }

    pub fn shards(&self, split: Split) -> impl Iterator<Item = &ShardEntry> {
        self.shards.iter().filter(move |s| s.split == split)
    }
}
