//! The entry points the fuzz targets (`fuzz/`) drive, one per extractor, here so that a test
//! can replay an input fuzzing finds through the same call. Each takes arbitrary bytes; a
//! panic, a hang or runaway memory inside is a bug.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::chunk::{code, text};
use crate::discover::{ConfigFormat, DatasetFormat, Format};
use crate::extract::pdf::{extract_pages, PdfLimits};
use crate::extract::{dataset, document, ExtractOptions};

fn options() -> ExtractOptions {
    ExtractOptions {
        text_column: "text".into(),
        batch_rows: 64,
        batch_bytes: 1 << 20,
        max_row_bytes: 1 << 20,
        pdf: PdfLimits {
            deadline: Duration::from_secs(5),
            max_stream_bytes: 8 << 20,
            max_total_bytes: 32 << 20,
            max_depth: 16,
        },
    }
}

/// The PDF extractor: text or an error, within its limits.
pub fn pdf(data: &[u8]) {
    let _ = extract_pages(data, &options().pdf);
}

/// The code chunker in every language and the prose chunker, at a budget the first byte
/// picks: the chunks must give back the text.
pub fn code(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let budget = 1 + usize::from(first) * 4;
    let source = String::from_utf8_lossy(rest);
    for lang in code::Lang::ALL {
        let cut = code::split(&source, lang, budget);
        assert_eq!(cut.chunks.concat(), source, "{lang:?}: chunks lost text");
    }
    assert_eq!(text::split(&source, budget).concat(), source, "prose");
}

/// Text decoding and the config check of each format.
pub fn config(data: &[u8]) {
    let opts = options();
    for format in [
        ConfigFormat::Json,
        ConfigFormat::Yaml,
        ConfigFormat::Toml,
        ConfigFormat::Xml,
    ] {
        let _ = document(Path::new("fuzz.cfg"), data, Format::Config(format), &opts);
    }
}

/// The dataset readers (Parquet, Arrow IPC, JSON Lines plain, gzip and zstd) on the bytes as
/// a file's contents.
pub fn dataset(data: &[u8]) {
    let opts = options();
    let Ok(mut file) = temp_file() else {
        return;
    };
    if file.1.write_all(data).and_then(|_| file.1.flush()).is_err() {
        return;
    }
    for format in [
        DatasetFormat::Parquet,
        DatasetFormat::Arrow,
        DatasetFormat::Jsonl,
        DatasetFormat::JsonlGz,
        DatasetFormat::JsonlZst,
    ] {
        let _ = dataset::read(&file.0, format, &opts, &mut |_| true);
    }
    let _ = std::fs::remove_file(&file.0);
}

/// A fresh file in the temporary folder, unique to this process and call.
fn temp_file() -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("mamba-fuzz-{}-{n}", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}
