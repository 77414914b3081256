//! Shard writer: buffers rows into bounded row groups and rotates shards by size.
//!
//! A shard is written as `NAME.parquet.tmp` and renamed once complete, with its sha256
//! computed on the way out, so a killed run never leaves a half shard under a final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, UInt32Builder};
use arrow_array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use super::manifest::ShardEntry;
use super::{schema, tmp_path, Split};

/// Size bounds of shards and row groups, in tokens.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ShardLimits {
    pub row_group_tokens: usize,
    pub shard_tokens: usize,
    pub zstd_level: i32,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write shard {path}: {reason}")]
pub struct WriteError {
    pub path: String,
    pub reason: String,
}

/// One row of a shard.
pub struct Row<'a> {
    pub doc_id: u64,
    pub chunk: u32,
    pub source: &'a str,
    pub kind: &'a str,
    pub lang: &'a str,
    pub tokens: &'a [u32],
}

/// Writes the shards of one split: `{split}-00000.parquet`, `{split}-00001.parquet`, ...
pub struct ShardWriter {
    dir: PathBuf,
    split: Split,
    limits: ShardLimits,
    open: Option<OpenShard>,
    buffer: Buffer,
    finished: Vec<ShardEntry>,
}

struct OpenShard {
    name: String,
    writer: ArrowWriter<HashingWriter>,
    rows: u64,
    tokens: u64,
}

impl ShardWriter {
    pub fn new(dir: &Path, split: Split, limits: ShardLimits) -> ShardWriter {
        ShardWriter {
            dir: dir.to_path_buf(),
            split,
            limits,
            open: None,
            buffer: Buffer::default(),
            finished: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Row) -> Result<(), WriteError> {
        self.buffer.push(&row);
        if self.buffer.tokens >= self.limits.row_group_tokens {
            self.flush_row_group()?;
        }
        Ok(())
    }

    /// Writes the buffered rows as one row group, rotating the shard when it is full.
    fn flush_row_group(&mut self) -> Result<(), WriteError> {
        if self.buffer.rows == 0 {
            return Ok(());
        }
        let (rows, tokens) = (self.buffer.rows as u64, self.buffer.tokens as u64);
        let batch = std::mem::take(&mut self.buffer).finish();
        let open = match &mut self.open {
            Some(open) => open,
            None => self.open.insert(self.start_shard()?),
        };
        let fail = |e: parquet::errors::ParquetError| WriteError {
            path: open.name.clone(),
            reason: e.to_string(),
        };
        open.writer.write(&batch).map_err(fail)?;
        open.writer.flush().map_err(fail)?;
        open.rows += rows;
        open.tokens += tokens;
        if open.tokens >= self.limits.shard_tokens as u64 {
            self.finish_shard()?;
        }
        Ok(())
    }

    fn start_shard(&self) -> Result<OpenShard, WriteError> {
        let name = format!("{}-{:05}.parquet", self.split.as_str(), self.finished.len());
        let path = tmp_path(&self.dir.join(&name));
        let fail = |reason: String| WriteError {
            path: path.display().to_string(),
            reason,
        };
        let file = File::create(&path).map_err(|e| fail(e.to_string()))?;
        let level = ZstdLevel::try_new(self.limits.zstd_level).map_err(|e| fail(e.to_string()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(None)
            .set_column_dictionary_enabled("tokens.list.item".into(), false)
            .build();
        let sink = HashingWriter {
            inner: BufWriter::new(file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let writer =
            ArrowWriter::try_new(sink, schema(), Some(props)).map_err(|e| fail(e.to_string()))?;
        Ok(OpenShard {
            name,
            writer,
            rows: 0,
            tokens: 0,
        })
    }

    /// Closes the open shard: footer, fsync, rename into place.
    fn finish_shard(&mut self) -> Result<(), WriteError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let path = self.dir.join(&open.name);
        let fail = |reason: String| WriteError {
            path: path.display().to_string(),
            reason,
        };
        let sink = open.writer.into_inner().map_err(|e| fail(e.to_string()))?;
        let (file, sha256, bytes) = sink.finish().map_err(|e| fail(e.to_string()))?;
        file.sync_all().map_err(|e| fail(e.to_string()))?;
        std::fs::rename(tmp_path(&path), &path).map_err(|e| fail(e.to_string()))?;
        self.finished.push(ShardEntry {
            file: open.name,
            split: self.split,
            rows: open.rows,
            tokens: open.tokens,
            bytes,
            sha256,
        });
        Ok(())
    }

    /// Flushes what is buffered and closes the last shard; returns every shard written.
    pub fn finish(mut self) -> Result<Vec<ShardEntry>, WriteError> {
        self.flush_row_group()?;
        self.finish_shard()?;
        Ok(self.finished)
    }
}

/// Columns of the row group being built.
#[derive(Default)]
struct Buffer {
    doc_id: Vec<u64>,
    chunk: Vec<u32>,
    source: StringBuilder,
    kind: StringBuilder,
    lang: StringBuilder,
    token_lists: ListBuilder<UInt32Builder>,
    n_tokens: Vec<u32>,
    rows: usize,
    tokens: usize,
}

impl Buffer {
    fn push(&mut self, row: &Row) {
        self.doc_id.push(row.doc_id);
        self.chunk.push(row.chunk);
        self.source.append_value(row.source);
        self.kind.append_value(row.kind);
        self.lang.append_value(row.lang);
        self.token_lists.values().append_slice(row.tokens);
        self.token_lists.append(true);
        self.n_tokens.push(row.tokens.len() as u32);
        self.rows += 1;
        self.tokens += row.tokens.len();
    }

    fn finish(mut self) -> RecordBatch {
        let item = Arc::new(arrow_schema::Field::new(
            "item",
            arrow_schema::DataType::UInt32,
            false,
        ));
        let tokens = self.token_lists.with_field(item).finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(self.doc_id)),
            Arc::new(UInt32Array::from(self.chunk)),
            Arc::new(self.source.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.lang.finish()),
            Arc::new(tokens),
            Arc::new(UInt32Array::from(self.n_tokens)),
        ];
        // The columns are built to match `schema()` exactly, so this cannot fail.
        RecordBatch::try_new(schema(), columns).expect("row group matches the shard schema")
    }
}

/// A file writer that hashes and counts what passes through it.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl HashingWriter {
    fn finish(self) -> std::io::Result<(File, String, u64)> {
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        Ok((file, super::hex(&self.hasher.finalize()), self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn row_groups_and_shards_are_bounded_and_named_per_split() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ShardLimits {
            row_group_tokens: 10,
            shard_tokens: 25,
            zstd_level: 3,
        };
        let mut writer = ShardWriter::new(dir.path(), Split::Val, limits);
        let tokens: Vec<u32> = (0..4).collect();
        for i in 0..20u32 {
            let row = Row {
                doc_id: 7,
                chunk: i,
                source: "a.txt",
                kind: "text",
                lang: "plain",
                tokens: &tokens,
            };
            writer.push(row).unwrap();
        }
        let shards = writer.finish().unwrap();
        // 80 tokens: row groups of 3 rows (12 tokens >= 10), shards closed past 25 tokens.
        let names: Vec<_> = shards.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "val-00000.parquet",
                "val-00001.parquet",
                "val-00002.parquet"
            ]
        );
        assert_eq!(shards.iter().map(|s| s.rows).collect::<Vec<_>>(), [9, 9, 2]);
        assert_eq!(shards.iter().map(|s| s.tokens).sum::<u64>(), 80);
        for shard in &shards {
            let path = dir.path().join(&shard.file);
            assert_eq!(super::super::sha256_file(&path).unwrap(), shard.sha256);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), shard.bytes);
            let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
            for rg in reader.metadata().row_groups() {
                assert!(rg.num_rows() <= 3, "row group of {} rows", rg.num_rows());
            }
        }
        let leftovers = std::fs::read_dir(dir.path()).unwrap().filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        });
        assert_eq!(leftovers.count(), 0);
    }
}
