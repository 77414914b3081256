//! The dataset readers on small files of every format, written by the tests themselves.

use super::*;
use std::io::Write;

fn opts() -> ExtractOptions {
    ExtractOptions {
        text_column: "text".into(),
        batch_rows: 2,
        batch_bytes: 1 << 20,
        max_row_bytes: 1 << 20,
        pdf: Default::default(),
    }
}

fn collect(path: &Path, format: DatasetFormat) -> (Result<Vec<Repair>, String>, Vec<Vec<String>>) {
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
fn long_rows_stream_in_batches_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.jsonl.gz");
    let row = "word ".repeat(100);
    let mut enc = flate2::write::GzEncoder::new(File::create(&path).unwrap(), Default::default());
    for _ in 0..5 {
        writeln!(enc, "{}", serde_json::json!({ "text": row })).unwrap();
    }
    enc.finish().unwrap();
    let mut o = opts();
    (o.batch_rows, o.batch_bytes) = (1000, 1000);
    let mut sizes = Vec::new();
    read(&path, DatasetFormat::JsonlGz, &o, &mut |docs| {
        sizes.push(docs.len());
        true
    })
    .unwrap();
    // 500 bytes a row: a batch ends once it holds 1000 bytes, whatever batch_rows says.
    assert_eq!(sizes, [2, 2, 1]);

    // A row longer than the limit, counted after decompression, fails the file.
    o.max_row_bytes = 300;
    let err = read(&path, DatasetFormat::JsonlGz, &o, &mut |_| true).unwrap_err();
    assert_eq!(
        err,
        "line 1: a row over 300 bytes as read (raise --max-file-mb)"
    );
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
    let body =
        "\u{feff}{\"text\": \"first\"}\r\n{\"text\": \"second\"}\r\n\r\n{\"text\": \"third\"}\r\n";
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
    let values = arrow_array::StringArray::from(vec![Some("alpha"), Some("beta"), None, Some(" ")]);
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
    let data = RecordBatch::try_from_iter([("text", Arc::new(dict) as Arc<dyn Array>)]).unwrap();
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
    let mut w =
        arrow_ipc::writer::FileWriter::try_new(File::create(&file_path).unwrap(), &data.schema())
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
