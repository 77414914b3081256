//! The PDF extractor on arbitrary bytes: it returns text or an error, within its limits.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mamba_pipeline::extract::pdf::{extract_pages, PdfLimits};

fuzz_target!(|data: &[u8]| {
    let limits = PdfLimits {
        deadline: Duration::from_secs(5),
        max_stream_bytes: 8 << 20,
        max_total_bytes: 32 << 20,
        max_depth: 16,
    };
    let _ = extract_pages(data, &limits);
});
