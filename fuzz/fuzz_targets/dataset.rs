//! The dataset readers (Parquet, Arrow IPC, JSON Lines plain / gzip / zstd) on arbitrary
//! file contents: every batch they emit is text, and they end with documents or an error.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use mamba_pipeline::discover::DatasetFormat;
use mamba_pipeline::extract::{dataset, ExtractOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ExtractOptions {
        text_column: "text".into(),
        batch_rows: 64,
        pdf: Default::default(),
    };
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    for format in [
        DatasetFormat::Parquet,
        DatasetFormat::Arrow,
        DatasetFormat::Jsonl,
        DatasetFormat::JsonlGz,
        DatasetFormat::JsonlZst,
    ] {
        let mut rows = 0usize;
        let _ = dataset::read(file.path(), format, &opts, &mut |docs| {
            rows += docs.len();
            rows < 1_000_000
        });
    }
});
