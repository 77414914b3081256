//! Shard reader: opens one shard, checks its schema, and decodes one row group at a time,
//! reading only the columns asked for.
//!
//! Memory is bounded by the largest row group (the writer caps them at `row_group_tokens`),
//! never by the shard: the footer is read once at open and each row group is decoded on its
//! own. Errors name the file and, past the footer, the row group.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::schema;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open shard {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("{path} is not a shard of this schema: {reason}")]
    Schema { path: String, reason: String },
    #[error("{path} row group {row_group}: {reason}")]
    RowGroup {
        path: String,
        row_group: usize,
        reason: String,
    },
}

/// A column of the shard schema (see [`super::schema`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    DocId,
    Chunk,
    Source,
    Kind,
    Lang,
    Tokens,
    NTokens,
}

impl Column {
    pub const ALL: [Column; 7] = [
        Column::DocId,
        Column::Chunk,
        Column::Source,
        Column::Kind,
        Column::Lang,
        Column::Tokens,
        Column::NTokens,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::DocId => "doc_id",
            Column::Chunk => "chunk",
            Column::Source => "source",
            Column::Kind => "kind",
            Column::Lang => "lang",
            Column::Tokens => "tokens",
            Column::NTokens => "n_tokens",
        }
    }

    /// Position in the schema, which is also the Parquet root column index.
    fn index(self) -> usize {
        self as usize
    }
}

/// One row of a shard, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub doc_id: u64,
    pub chunk: u32,
    pub source: String,
    pub kind: String,
    pub lang: String,
    pub tokens: Vec<u32>,
    pub n_tokens: u32,
}

/// The token lists of a row group, flat: row `i` is `values[offsets[i]..offsets[i + 1]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenLists {
    pub offsets: Vec<usize>,
    pub values: Vec<u32>,
}

impl TokenLists {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tokens of row `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<&[u32]> {
        let (start, end) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        self.values.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.offsets
            .windows(2)
            .map(|w| self.values.get(w[0]..w[1]).unwrap_or_default())
    }
}

/// The columns of one row group that were asked for; the others are left empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns {
    pub rows: usize,
    pub doc_id: Vec<u64>,
    pub chunk: Vec<u32>,
    pub source: Vec<String>,
    pub kind: Vec<String>,
    pub lang: Vec<String>,
    pub tokens: TokenLists,
    pub n_tokens: Vec<u32>,
}

/// An open shard: its footer is read and its schema checked.
pub struct ShardReader {
    path: PathBuf,
    file: File,
    meta: ArrowReaderMetadata,
}

impl ShardReader {
    /// Opens a shard and reads its footer; fails if the file is not a Parquet file of the
    /// shard schema.
    pub fn open(path: &Path) -> Result<ShardReader, ReadError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|e| ReadError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| {
            ReadError::Open {
                path: shown.clone(),
                reason: e.to_string(),
            }
        })?;
        let expected = schema();
        let found = meta.schema();
        if found.fields() != expected.fields() {
            let names: Vec<String> = found
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect();
            return Err(ReadError::Schema {
                path: shown,
                reason: format!("columns are [{}]", names.join(", ")),
            });
        }
        Ok(ShardReader {
            path: path.to_path_buf(),
            file,
            meta,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_row_groups(&self) -> usize {
        self.meta.metadata().num_row_groups()
    }

    /// Rows in the whole shard, from the footer.
    pub fn num_rows(&self) -> u64 {
        (0..self.num_row_groups())
            .map(|i| self.row_group_rows(i))
            .sum()
    }

    /// Rows in row group `i`, from the footer (0 past the end).
    pub fn row_group_rows(&self, i: usize) -> u64 {
        let groups = self.meta.metadata().row_groups();
        groups.get(i).map_or(0, |g| g.num_rows().max(0) as u64)
    }

    /// Compressed and uncompressed bytes of the column data, from the footer.
    pub fn data_bytes(&self) -> (u64, u64) {
        let groups = self.meta.metadata().row_groups();
        groups.iter().fold((0, 0), |(c, u), g| {
            (
                c + g.compressed_size().max(0) as u64,
                u + g.total_byte_size().max(0) as u64,
            )
        })
    }

    /// Every column of row group `i`, as owned rows.
    pub fn row_group(&self, i: usize) -> Result<Vec<Row>, ReadError> {
        let mut c = self.read(i, &Column::ALL)?;
        let mut rows = Vec::with_capacity(c.rows);
        let strings = |v: &mut Vec<String>| std::mem::take(v).into_iter();
        let (mut source, mut kind, mut lang) = (
            strings(&mut c.source),
            strings(&mut c.kind),
            strings(&mut c.lang),
        );
        for r in 0..c.rows {
            rows.push(Row {
                doc_id: c.doc_id[r],
                chunk: c.chunk[r],
                source: source.next().unwrap_or_default(),
                kind: kind.next().unwrap_or_default(),
                lang: lang.next().unwrap_or_default(),
                tokens: c.tokens.get(r).unwrap_or_default().to_vec(),
                n_tokens: c.n_tokens[r],
            });
        }
        Ok(rows)
    }

    /// Only the token lists of row group `i` (what the trainer needs).
    pub fn row_group_tokens(&self, i: usize) -> Result<TokenLists, ReadError> {
        Ok(self.read(i, &[Column::Tokens])?.tokens)
    }

    /// The given columns of row group `i`; the Parquet pages of other columns are not read.
    pub fn read(&self, i: usize, columns: &[Column]) -> Result<Columns, ReadError> {
        let fail = |reason: String| ReadError::RowGroup {
            path: self.path.display().to_string(),
            row_group: i,
            reason,
        };
        if i >= self.num_row_groups() {
            return Err(fail(format!(
                "no such row group (the shard has {})",
                self.num_row_groups()
            )));
        }
        let file = self.file.try_clone().map_err(|e| fail(e.to_string()))?;
        let mask = ProjectionMask::roots(
            self.meta.parquet_schema(),
            columns.iter().map(|c| c.index()),
        );
        let expected_rows = self.row_group_rows(i) as usize;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_row_groups(vec![i])
            .with_projection(mask)
            .with_batch_size(expected_rows.max(1))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut out = Columns::default();
        out.tokens.offsets.push(0);
        for batch in reader {
            let batch = batch.map_err(|e| fail(e.to_string()))?;
            append(&mut out, &batch, columns).map_err(fail)?;
        }
        if out.rows != expected_rows {
            return Err(fail(format!(
                "decoded {} rows, the footer says {expected_rows}",
                out.rows
            )));
        }
        if !columns.contains(&Column::Tokens) {
            out.tokens = TokenLists::default();
        }
        Ok(out)
    }
}

/// Appends the asked-for columns of one decoded batch.
fn append(out: &mut Columns, batch: &RecordBatch, columns: &[Column]) -> Result<(), String> {
    for &column in columns {
        let array = batch
            .column_by_name(column.name())
            .ok_or_else(|| format!("column {} missing", column.name()))?;
        let wrong = || format!("column {} has type {}", column.name(), array.data_type());
        match column {
            Column::DocId => out.doc_id.extend(
                array
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(wrong)?
                    .values(),
            ),
            Column::Chunk | Column::NTokens => {
                let values = array.as_primitive_opt::<UInt32Type>().ok_or_else(wrong)?;
                let target = if column == Column::Chunk {
                    &mut out.chunk
                } else {
                    &mut out.n_tokens
                };
                target.extend(values.values());
            }
            Column::Source | Column::Kind | Column::Lang => {
                let values = array.as_string_opt::<i32>().ok_or_else(wrong)?;
                let target = match column {
                    Column::Source => &mut out.source,
                    Column::Kind => &mut out.kind,
                    _ => &mut out.lang,
                };
                target.extend(values.iter().map(|v| v.unwrap_or_default().to_string()));
            }
            Column::Tokens => {
                let lists = array.as_list_opt::<i32>().ok_or_else(wrong)?;
                let values = lists.values().as_primitive_opt::<UInt32Type>();
                let values = values.ok_or_else(wrong)?;
                let offsets = lists.value_offsets();
                let base = offsets.first().copied().unwrap_or(0).max(0) as usize;
                let start = out.tokens.values.len();
                let end = offsets.last().copied().unwrap_or(0).max(0) as usize;
                let slice = values
                    .values()
                    .get(base..end)
                    .ok_or("token offsets past the values")?;
                out.tokens.values.extend_from_slice(slice);
                for &o in &offsets[1..] {
                    out.tokens.offsets.push(start + (o.max(0) as usize - base));
                }
            }
        }
    }
    out.rows += batch.num_rows();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::writer::{self, ShardLimits, ShardWriter};
    use crate::shard::Split;

    /// Writes a train shard of `n` rows; row `r` has `r % 5 + 1` tokens `r*10, r*10+1, ...`.
    fn shard(dir: &Path, n: u32, row_group_tokens: usize) -> PathBuf {
        let limits = ShardLimits {
            row_group_tokens,
            shard_tokens: usize::MAX,
            zstd_level: 1,
        };
        let mut w = ShardWriter::new(dir, Split::Train, limits);
        for r in 0..n {
            let tokens: Vec<u32> = (0..r % 5 + 1).map(|t| r * 10 + t).collect();
            let source = format!("file-{}.txt", r / 3);
            w.push(writer::Row {
                doc_id: u64::from(r / 3),
                chunk: r % 3,
                source: &source,
                kind: "text",
                lang: if r.is_multiple_of(2) {
                    "markdown"
                } else {
                    "plain"
                },
                tokens: &tokens,
            })
            .unwrap();
        }
        let entries = w.finish().unwrap();
        dir.join(&entries[0].file)
    }

    #[test]
    fn rows_round_trip_across_row_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let path = shard(tmp.path(), 40, 20);
        let reader = ShardReader::open(&path).unwrap();
        assert!(reader.num_row_groups() > 1, "{}", reader.num_row_groups());
        assert_eq!(reader.num_rows(), 40);
        let rows: Vec<Row> = (0..reader.num_row_groups())
            .flat_map(|i| reader.row_group(i).unwrap())
            .collect();
        assert_eq!(rows.len(), 40);
        for (r, row) in rows.iter().enumerate() {
            let r = r as u32;
            assert_eq!(row.doc_id, u64::from(r / 3));
            assert_eq!(row.chunk, r % 3);
            assert_eq!(row.source, format!("file-{}.txt", r / 3));
            assert_eq!(
                row.lang,
                if r.is_multiple_of(2) {
                    "markdown"
                } else {
                    "plain"
                }
            );
            assert_eq!(
                row.tokens,
                (0..r % 5 + 1).map(|t| r * 10 + t).collect::<Vec<_>>()
            );
            assert_eq!(row.n_tokens as usize, row.tokens.len());
        }
    }

    #[test]
    fn token_lists_alone_match_the_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let path = shard(tmp.path(), 25, 12);
        let reader = ShardReader::open(&path).unwrap();
        for i in 0..reader.num_row_groups() {
            let rows = reader.row_group(i).unwrap();
            let lists = reader.row_group_tokens(i).unwrap();
            assert_eq!(lists.len(), rows.len());
            let from_lists: Vec<&[u32]> = lists.iter().collect();
            let from_rows: Vec<&[u32]> = rows.iter().map(|r| r.tokens.as_slice()).collect();
            assert_eq!(from_lists, from_rows);
            let some = reader.read(i, &[Column::NTokens, Column::DocId]).unwrap();
            assert!(some.source.is_empty() && some.tokens.is_empty());
            assert_eq!(some.n_tokens.len(), rows.len());
            assert_eq!(
                some.doc_id,
                rows.iter().map(|r| r.doc_id).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn errors_name_the_file_and_row_group() {
        let tmp = tempfile::tempdir().unwrap();
        let path = shard(tmp.path(), 10, 1000);
        let reader = ShardReader::open(&path).unwrap();
        let err = reader.row_group(7).unwrap_err().to_string();
        assert!(err.contains("train-00000.parquet row group 7"), "{err}");

        let missing = ShardReader::open(&tmp.path().join("nope.parquet"))
            .err()
            .unwrap();
        assert!(missing.to_string().contains("nope.parquet"), "{missing}");

        let bytes = std::fs::read(&path).unwrap();
        let cut = tmp.path().join("cut.parquet");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = ShardReader::open(&cut).err().unwrap().to_string();
        assert!(err.contains("cut.parquet"), "{err}");
    }

    #[test]
    fn a_parquet_file_of_another_schema_is_refused() {
        use arrow_array::{ArrayRef, UInt64Array};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("other.parquet");
        let batch = RecordBatch::try_from_iter([(
            "doc_id",
            std::sync::Arc::new(UInt64Array::from(vec![1u64, 2])) as ArrayRef,
        )])
        .unwrap();
        let file = File::create(&path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = ShardReader::open(&path).err().unwrap();
        assert!(matches!(err, ReadError::Schema { .. }), "{err}");
    }
}
