//! Config files of each format (and text decoding before them) on arbitrary bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mamba_pipeline::discover::{ConfigFormat, Format};
use mamba_pipeline::extract::{document, ExtractOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ExtractOptions {
        text_column: "text".into(),
        batch_rows: 64,
        pdf: Default::default(),
    };
    for format in [ConfigFormat::Json, ConfigFormat::Yaml, ConfigFormat::Toml, ConfigFormat::Xml] {
        let _ = document(Path::new("fuzz.cfg"), data, Format::Config(format), &opts);
    }
});
