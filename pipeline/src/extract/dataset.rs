//! Local Hugging Face dataset files: Parquet, Arrow IPC and JSON Lines (plain, gzip, zstd).
//!
//! Only the text column is read, in batches of `batch_rows`, so memory does not grow with
//! the file. Each non-empty row is one document.

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
    let mut send = |texts: Vec<String>| {
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
    let column = opts.text_column.as_str();
    let mut repairs = match format {
        DatasetFormat::Parquet => read_parquet(file, column, opts.batch_rows, &mut send),
        DatasetFormat::Arrow => read_arrow(file, column, &mut send),
        DatasetFormat::Jsonl => {
            read_jsonl(BufReader::new(file), column, opts.batch_rows, &mut send)
        }
        DatasetFormat::JsonlGz => {
            let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
            read_jsonl(reader, column, opts.batch_rows, &mut send)
        }
        DatasetFormat::JsonlZst => {
            let decoder = zstd::Decoder::new(file).map_err(|e| format!("bad zstd stream: {e}"))?;
            read_jsonl(BufReader::new(decoder), column, opts.batch_rows, &mut send)
        }
    }?;
    if empty > 0 {
        repairs.push(format!("{empty} row(s) with an empty '{column}' skipped"));
    }
    Ok(repairs)
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
    batch_rows: usize,
    send: &mut dyn FnMut(Vec<String>) -> bool,
) -> Result<Vec<Repair>, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let schema = builder.schema().clone();
    let index = schema
        .index_of(column)
        .map_err(|_| missing_column(column, &schema))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| e.to_string())?;
    send_batches(reader, column, send)
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
/// rows whose `column` is null.
fn read_jsonl(
    reader: impl BufRead,
    column: &str,
    batch_rows: usize,
    send: &mut dyn FnMut(Vec<String>) -> bool,
) -> Result<Vec<Repair>, String> {
    let (mut batch, mut bad, mut first_bad, mut rows) = (Vec::new(), 0usize, None, 0usize);
    let (mut nulls, mut since_send) = (0, 0usize);
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        let line = match n {
            0 => line.strip_prefix('\u{feff}').unwrap_or(&line),
            _ => &line,
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
            Ok(Some(text)) => batch.push(text.to_owned()),
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
        // A batch per `batch_rows` rows read, whatever they held: the reader reports progress
        // (to the file's time budget) through a stretch of null or bad rows too.
        since_send += 1;
        if since_send == batch_rows {
            since_send = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn opts() -> ExtractOptions {
        ExtractOptions {
            text_column: "text".into(),
            batch_rows: 2,
            pdf: Default::default(),
        }
    }

    fn collect(
        path: &Path,
        format: DatasetFormat,
    ) -> (Result<Vec<Repair>, String>, Vec<Vec<String>>) {
        let mut batches = Vec::new();
        let result = read(path, format, &opts(), &mut |docs| {
            batches.push(docs.into_iter().map(|d| d.text).collect());
            true
        });
        (result, batches)
    }

    const LINES: &str = "{\"text\": \"one\"}\n{\"text\": \"two\", \"id\": 2}\n\n{\"text\": null}\n{\"text\": \"three\"}\n";

    #[test]
    fn jsonl_plain_gzip_and_zstd_stream_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.jsonl");
        std::fs::write(&plain, LINES).unwrap();
        let gz = dir.path().join("a.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        enc.write_all(LINES.as_bytes()).unwrap();
        enc.finish().unwrap();
        let zst = dir.path().join("a.jsonl.zst");
        std::fs::write(&zst, zstd::encode_all(LINES.as_bytes(), 3).unwrap()).unwrap();
        for (path, format) in [
            (&plain, DatasetFormat::Jsonl),
            (&gz, DatasetFormat::JsonlGz),
            (&zst, DatasetFormat::JsonlZst),
        ] {
            let (result, batches) = collect(path, format);
            assert_eq!(
                result,
                Ok(vec!["1 row(s) with a null 'text' skipped".into()])
            );
            assert_eq!(batches, [vec!["one", "two"], vec!["three"]]);
        }
    }

    #[test]
    fn jsonl_bad_rows_are_dropped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, "{\"text\": \"ok\"}\n{broken\n{\"body\": \"x\"}\n").unwrap();
        let (result, batches) = collect(&path, DatasetFormat::Jsonl);
        assert_eq!(batches, [vec!["ok"]]);
        let repairs = result.unwrap();
        assert!(
            repairs[0].starts_with("2 of 3 rows dropped; first: line 2: invalid JSON"),
            "{repairs:?}"
        );

        std::fs::write(&path, "{\"body\": \"x\"}\n").unwrap();
        let (result, _) = collect(&path, DatasetFormat::Jsonl);
        assert!(result.unwrap_err().contains("no string field 'text'"));
    }

    #[test]
    fn jsonl_with_a_byte_order_mark_and_crlf_keeps_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.jsonl");
        let body = "\u{feff}{\"text\": \"first\"}\r\n{\"text\": \"second\"}\r\n\r\n{\"text\": \"third\"}\r\n";
        std::fs::write(&path, body).unwrap();
        let (result, batches) = collect(&path, DatasetFormat::Jsonl);
        assert_eq!(result, Ok(vec![]));
        assert_eq!(batches, [vec!["first", "second"], vec!["third"]]);
    }

    #[test]
    fn dictionary_encoded_text_is_text_and_nulls_are_counted() {
        use arrow_array::types::Int32Type;
        use arrow_array::{DictionaryArray, LargeStringArray};
        let dir = tempfile::tempdir().unwrap();
        let keys =
            arrow_array::Int32Array::from(vec![Some(0), None, Some(1), Some(0), Some(2), Some(3)]);
        let values =
            arrow_array::StringArray::from(vec![Some("alpha"), Some("beta"), None, Some(" ")]);
        let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap();
        let large =
            LargeStringArray::from(vec![Some("a"), None, Some("c"), Some("d"), None, Some("f")]);
        let data = RecordBatch::try_from_iter([
            ("text", Arc::new(dict) as Arc<dyn Array>),
            ("large", Arc::new(large) as Arc<dyn Array>),
        ])
        .unwrap();
        let path = dir.path().join("d.parquet");
        let file = File::create(&path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, data.schema(), None).unwrap();
        w.write(&data).unwrap();
        w.close().unwrap();
        let arrow_path = dir.path().join("d.arrow");
        let file = File::create(&arrow_path).unwrap();
        let mut w = arrow_ipc::writer::FileWriter::try_new(file, &data.schema()).unwrap();
        w.write(&data).unwrap();
        w.finish().unwrap();
        for (path, format) in [
            (&path, DatasetFormat::Parquet),
            (&arrow_path, DatasetFormat::Arrow),
        ] {
            let (result, batches) = collect(path, format);
            // A null key and a key to a null value are both null rows; blank text is no document.
            let want = [
                "2 row(s) with a null 'text' skipped",
                "1 row(s) with an empty 'text' skipped",
            ];
            assert_eq!(result, Ok(want.map(String::from).to_vec()));
            assert_eq!(batches.concat(), ["alpha", "beta", "alpha"]);
            let mut o = opts();
            o.text_column = "large".into();
            let mut got = Vec::new();
            let result = read(path, format, &o, &mut |docs| {
                got.extend(docs.into_iter().map(|d| d.text));
                true
            });
            assert_eq!(
                result,
                Ok(vec!["2 row(s) with a null 'large' skipped".into()])
            );
            assert_eq!(got, ["a", "c", "d", "f"]);
        }
    }

    #[test]
    fn a_stretch_of_rows_without_text_still_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        let mut body = "{\"other\": 1}\n".repeat(5);
        body.push_str("{\"text\": \"good\"}\n");
        std::fs::write(&path, body).unwrap();
        let (result, batches) = collect(&path, DatasetFormat::Jsonl);
        // A batch per two rows read (the options' batch_rows), empty where none had text.
        let empty: Vec<String> = Vec::new();
        assert_eq!(batches, [empty.clone(), empty, vec!["good".to_string()]]);
        assert!(result.unwrap()[0].starts_with("5 of 6 rows dropped"));
    }

    #[test]
    fn an_all_null_dictionary_batch_is_null_rows() {
        use arrow_array::types::Int32Type;
        use arrow_array::DictionaryArray;
        let dir = tempfile::tempdir().unwrap();
        let keys = arrow_array::Int32Array::from(vec![None, None, None]);
        let values = arrow_array::StringArray::from(Vec::<Option<&str>>::new());
        let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap();
        let data =
            RecordBatch::try_from_iter([("text", Arc::new(dict) as Arc<dyn Array>)]).unwrap();
        let path = dir.path().join("nulls.arrow");
        let file = File::create(&path).unwrap();
        let mut w = arrow_ipc::writer::FileWriter::try_new(file, &data.schema()).unwrap();
        w.write(&data).unwrap();
        w.finish().unwrap();
        let (result, batches) = collect(&path, DatasetFormat::Arrow);
        assert_eq!(
            result,
            Ok(vec!["3 row(s) with a null 'text' skipped".into()])
        );
        assert!(batches.concat().is_empty());
    }

    fn batch(texts: &[Option<&str>]) -> RecordBatch {
        let text = arrow_array::StringArray::from(texts.to_vec());
        let ids = arrow_array::UInt32Array::from_iter_values(0..texts.len() as u32);
        RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as Arc<dyn Array>),
            ("text", Arc::new(text) as Arc<dyn Array>),
        ])
        .unwrap()
    }

    #[test]
    fn parquet_reads_only_the_text_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let data = batch(&[Some("alpha"), None, Some("beta"), Some("gamma")]);
        let mut w =
            parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), data.schema(), None)
                .unwrap();
        w.write(&data).unwrap();
        w.close().unwrap();
        let (result, batches) = collect(&path, DatasetFormat::Parquet);
        assert_eq!(
            result,
            Ok(vec!["1 row(s) with a null 'text' skipped".into()])
        );
        assert_eq!(batches, [vec!["alpha"], vec!["beta", "gamma"]]);

        let mut o = opts();
        o.text_column = "content".into();
        let err = read(&path, DatasetFormat::Parquet, &o, &mut |_| true).unwrap_err();
        assert_eq!(
            err,
            "no column 'content' (columns: id, text); pick one with --text-column"
        );
    }

    #[test]
    fn arrow_file_and_stream_formats() {
        let dir = tempfile::tempdir().unwrap();
        let data = batch(&[Some("x"), Some("y")]);
        let file_path = dir.path().join("f.arrow");
        let mut w = arrow_ipc::writer::FileWriter::try_new(
            File::create(&file_path).unwrap(),
            &data.schema(),
        )
        .unwrap();
        w.write(&data).unwrap();
        w.finish().unwrap();
        let stream_path = dir.path().join("s.arrow");
        let mut w = arrow_ipc::writer::StreamWriter::try_new(
            File::create(&stream_path).unwrap(),
            &data.schema(),
        )
        .unwrap();
        w.write(&data).unwrap();
        w.write(&data).unwrap();
        w.finish().unwrap();
        assert_eq!(
            collect(&file_path, DatasetFormat::Arrow).1,
            [vec!["x", "y"]]
        );
        assert_eq!(
            collect(&stream_path, DatasetFormat::Arrow).1,
            [vec!["x", "y"], vec!["x", "y"]]
        );
        std::fs::write(&stream_path, b"garbage that is not arrow").unwrap();
        assert!(collect(&stream_path, DatasetFormat::Arrow).0.is_err());
    }
}
