//! Ingest stages and the shard store: `discover -> extract -> chunk -> tokenize -> write`.

pub mod chunk;
pub mod extract;
