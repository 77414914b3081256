//! Local Hugging Face dataset files: Parquet, Arrow IPC and JSON Lines (plain, gzip, zstd).
//!
//! Only the text column is read, in batches of `batch_rows` rows or `batch_bytes` of text,
//! whichever comes first, so memory grows neither with the file nor with its rows' length.
//! Each non-empty row is one document.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{Document, ExtractOptions, Kind, Repair};
use crate::discover::DatasetFormat;

/// Streams the text column of a dataset file to `emit`, one batch of documents at a time.
pub fn read(
    path: &Path,
    format: DatasetFormat,
    opts: &ExtractOptions,
    emit: &mut dyn FnMut(Vec<Document>) -> bool,
) -> Result<Vec<Repair>, String> {
    let file = File::open(path).map_err(|e| format!("unreadable: {e}"))?;
    let mut empty = 0usize;
    let mut emit_docs = |texts: Vec<String>| {
        let total = texts.len();
        let docs: Vec<Document> = texts
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .map(|text| Document {
                kind: Kind::Dataset,
                lang: "plain",
                code: None,
                text,
            })
            .collect();
        empty += total - docs.len();
        emit(docs)
    };
    // A reader's batch (Parquet's, Arrow's) is cut again to the byte budget.
    let batch_bytes = opts.batch_bytes.max(1);
    let mut send = |texts: Vec<String>| {
        let mut texts = texts.into_iter().peekable();
        loop {
            let (mut part, mut bytes) = (Vec::new(), 0usize);
            while let Some(text) = texts.next_if(|_| part.is_empty() || bytes < batch_bytes) {
                bytes += text.len();
                part.push(text);
            }
            let more = texts.peek().is_some();
            if !emit_docs(part) {
                return false;
            }
            if !more {
                return true;
            }
        }
    };
    let column = opts.text_column.as_str();
    let batching = Batching {
        rows: opts.batch_rows.max(1),
        bytes: batch_bytes,
        max_row: opts.max_row_bytes,
    };
    let mut repairs = match format {
        DatasetFormat::Parquet => read_parquet(file, column, batching, &mut send),
        DatasetFormat::Arrow => read_arrow(file, column, &mut send),
        DatasetFormat::Jsonl => read_jsonl(BufReader::new(file), column, batching, &mut send),
        DatasetFormat::JsonlGz => {
            let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
            read_jsonl(reader, column, batching, &mut send)
        }
        DatasetFormat::JsonlZst => {
            let decoder = zstd::Decoder::new(file).map_err(|e| format!("bad zstd stream: {e}"))?;
            read_jsonl(BufReader::new(decoder), column, batching, &mut send)
        }
    }?;
    if empty > 0 {
        repairs.push(format!("{empty} row(s) with an empty '{column}' skipped"));
    }
    Ok(repairs)
}

/// Where a batch ends (rows or text bytes, whichever first), and the largest row read.
#[derive(Clone, Copy)]
struct Batching {
    rows: usize,
    bytes: usize,
    max_row: u64,
}

fn missing_column(column: &str, schema: &Schema) -> String {
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    format!(
        "no column '{column}' (columns: {}); pick one with --text-column",
        names.join(", ")
    )
}

/// The strings of a text column, and how many of its rows are null.
fn texts(batch: &RecordBatch, column: &str) -> Result<(Vec<String>, usize), String> {
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| missing_column(column, &batch.schema()))?;
    let values = strings(array.as_ref())
        .map_err(|other| format!("column '{column}' is {other}, not text"))?;
    let nulls = values.iter().filter(|v| v.is_none()).count();
    Ok((values.into_iter().flatten().collect(), nulls))
}

/// Every row of a string-like array: any of Arrow's string types, or a dictionary of them
/// (as `datasets` and pandas write repeated text); `None` for a null. Another type is
/// returned as the error.
fn strings(array: &dyn Array) -> Result<Vec<Option<String>>, DataType> {
    let owned =
        |it: &mut dyn Iterator<Item = Option<&str>>| it.map(|v| v.map(str::to_owned)).collect();
    Ok(match array.data_type() {
        DataType::Utf8 => owned(&mut array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => owned(&mut array.as_string::<i64>().iter()),
        DataType::Utf8View => owned(&mut array.as_string_view().iter()),
        DataType::Dictionary(_, _) => {
            let dict = array
                .as_any_dictionary_opt()
                .ok_or_else(|| array.data_type().clone())?;
            let values = strings(dict.values().as_ref()).map_err(|_| array.data_type().clone())?;
            let keys = dict.keys();
            // An all-null batch may carry no values at all (and then no key to look up).
            if values.is_empty() {
                return Ok(vec![None; keys.len()]);
            }
            dict.normalized_keys()
                .into_iter()
                .enumerate()
                .map(|(row, key)| match keys.is_null(row) {
                    true => None,
                    false => values.get(key).cloned().flatten(),
                })
                .collect()
        }
        other => return Err(other.clone()),
    })
}

/// The repair line of a dataset file with null text rows.
fn null_rows(nulls: usize, column: &str) -> Vec<Repair> {
    match nulls {
        0 => Vec::new(),
        n => vec![format!("{n} row(s) with a null '{column}' skipped")],
    }
}

fn read_parquet(
    file: File,
    column: &str,
    batching: Batching,
    send: &mut dyn FnMut(Vec<String>) -> bool,
) -> Result<Vec<Repair>, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let schema = builder.schema().clone();
    let index = schema
        .index_of(column)
        .map_err(|_| missing_column(column, &schema))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let rows = parquet_batch_rows(builder.metadata(), index, batching);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(rows)
        .build()
        .map_err(|e| e.to_string())?;
    send_batches(reader, column, send)
}

/// Rows per Parquet batch: `batching.rows`, or fewer where the column's mean row (from the
/// footer's uncompressed sizes) would put a batch past `batching.bytes`.
fn parquet_batch_rows(
    meta: &parquet::file::metadata::ParquetMetaData,
    column: usize,
    batching: Batching,
) -> usize {
    let (mut bytes, mut rows) = (0u64, 0u64);
    for group in meta.row_groups() {
        rows += group.num_rows().max(0) as u64;
        let size = group.columns().get(column).map(|c| c.uncompressed_size());
        bytes += size.unwrap_or(0).max(0) as u64;
    }
    let mean = (bytes / rows.max(1)).max(1);
    (batching.bytes as u64 / mean).clamp(1, batching.rows as u64) as usize
}

/// Sends the text of each record batch; the repairs name the null rows.
fn send_batches(
    batches: impl Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>,
    column: &str,
    send: &mut dyn FnMut(Vec<String>) -> bool,
) -> Result<Vec<Repair>, String> {
    let mut nulls = 0;
    for batch in batches {
        let batch = batch.map_err(|e| e.to_string())?;
        let (texts, batch_nulls) = texts(&batch, column)?;
        nulls += batch_nulls;
        if !send(texts) {
            break;
        }
    }
    Ok(null_rows(nulls, column))
}

/// Arrow IPC: the file format (`ARROW1` magic) or the stream format `datasets` caches use.
fn read_arrow(
    mut file: File,
    column: &str,
    send: &mut dyn FnMut(Vec<String>) -> bool,
) -> Result<Vec<Repair>, String> {
    let mut magic = [0u8; 6];
    let is_file = file.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
    let file = reopen(file)?;
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, arrow_schema::ArrowError>>> =
        if is_file {
            let reader = arrow_ipc::reader::FileReader::try_new(file, None);
            let reader = reader.map_err(|e| format!("bad Arrow file: {e}"))?;
            check_schema(&reader.schema(), column)?;
            Box::new(reader)
        } else {
            let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None);
            let reader = reader.map_err(|e| format!("bad Arrow stream: {e}"))?;
            check_schema(&reader.schema(), column)?;
            Box::new(reader)
        };
    send_batches(batches, column, send)
}

fn check_schema(schema: &Arc<Schema>, column: &str) -> Result<(), String> {
    schema
        .index_of(column)
        .map(drop)
        .map_err(|_| missing_column(column, schema))
}

fn reopen(mut file: File) -> Result<File, String> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))
        .map_err(|e| format!("unreadable: {e}"))?;
    Ok(file)
}

/// JSON Lines: one object per line, LF or CRLF, a leading byte-order mark ignored. Lines that
/// are not objects with a string field `column` are dropped, counted and reported; so are
/// rows whose `column` is null. A line is read through a limit of `batching.max_row` bytes,
/// so a stream that decompresses to one endless line fails instead of filling memory.
fn read_jsonl(
    mut reader: impl BufRead,
    column: &str,
    batching: Batching,
    send: &mut dyn FnMut(Vec<String>) -> bool,
) -> Result<Vec<Repair>, String> {
    let (mut batch, mut bad, mut first_bad, mut rows) = (Vec::new(), 0usize, None, 0usize);
    let (mut nulls, mut since_send, mut batch_bytes) = (0, 0usize, 0usize);
    let mut buf = Vec::new();
    for n in 0.. {
        buf.clear();
        let limit = batching.max_row.saturating_add(1);
        let read = (&mut reader).take(limit).read_until(b'\n', &mut buf);
        match read.map_err(|e| format!("line {}: {e}", n + 1))? {
            0 => break,
            len if len as u64 > batching.max_row && buf.last() != Some(&b'\n') => {
                return Err(format!(
                    "line {}: a row over {} as read (raise --max-file-mb)",
                    n + 1,
                    size_text(batching.max_row)
                ))
            }
            _ => {}
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|_| format!("line {}: stream did not contain valid UTF-8", n + 1))?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = match n {
            0 => line.strip_prefix('\u{feff}').unwrap_or(line),
            _ => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        rows += 1;
        let value: Result<serde_json::Value, _> = serde_json::from_str(line);
        match value
            .as_ref()
            .map(|v| v.get(column).and_then(|t| t.as_str()))
        {
            Ok(Some(text)) => {
                batch_bytes += text.len();
                batch.push(text.to_owned())
            }
            Ok(None)
                if value
                    .as_ref()
                    .is_ok_and(|v| v.get(column).is_some_and(|t| t.is_null())) =>
            {
                nulls += 1
            }
            failed => {
                bad += 1;
                first_bad.get_or_insert_with(|| match failed {
                    Err(e) => format!("line {}: invalid JSON: {e}", n + 1),
                    Ok(_) => format!("line {}: no string field '{column}'", n + 1),
                });
            }
        }
        // A batch per `batching.rows` rows read, whatever they held: the reader reports
        // progress (to the file's time budget) through a stretch of null or bad rows too.
        since_send += 1;
        if since_send == batching.rows || batch_bytes >= batching.bytes {
            (since_send, batch_bytes) = (0, 0);
            if !send(std::mem::take(&mut batch)) {
                return Ok(Vec::new());
            }
        }
    }
    if !batch.is_empty() {
        send(batch);
    }
    let mut repairs = null_rows(nulls, column);
    match first_bad {
        Some(first) if bad == rows => {
            return Err(format!(
                "{first} (no usable rows; pick the column with --text-column)"
            ))
        }
        Some(first) => repairs.push(format!("{bad} of {rows} rows dropped; first: {first}")),
        None => {}
    }
    Ok(repairs)
}

/// A size for a message: whole MB where it is one (the unit of `--max-file-mb`).
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{} MB", b >> 20),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests;
