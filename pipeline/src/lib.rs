//! Ingest stages and the shard store: `discover -> extract -> chunk -> tokenize -> write`.

pub mod chunk;
pub mod clean;
pub mod discover;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod html;
pub mod ingest;
pub mod inspect;
pub mod report;
pub mod shard;
pub mod tokenize;
