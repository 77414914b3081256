//! Extract: turn one input file into documents, per format.
//!
//! A file gives one document (its whole text), except a dataset, which gives one per row and
//! is streamed in batches so a file of any size is never held whole.

pub mod config;
pub mod dataset;
pub mod pdf;
pub mod text;

use std::path::Path;

use crate::chunk::code::Lang;
use crate::discover::Format;

/// What kind of source a document came from: the `kind` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pdf,
    Text,
    Code,
    Config,
    Dataset,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Text => "text",
            Kind::Code => "code",
            Kind::Config => "config",
            Kind::Dataset => "dataset",
        }
    }
}

/// One extracted document, before chunking.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub kind: Kind,
    /// Programming language, config format or text markup: the `lang` column.
    pub lang: &'static str,
    /// For code: the grammar the chunker cuts it by.
    pub code: Option<Lang>,
    pub text: String,
}

/// A repair made while reading a file that was still ingested, listed in `report.jsonl`.
pub type Repair = String;

/// Limits and settings extraction needs.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    pub text_column: String,
    /// Rows per dataset batch: the unit a dataset file is streamed in.
    pub batch_rows: usize,
    pub pdf: pdf::PdfLimits,
}

/// Reads `path` as `format`, passing documents to `emit` (which returns false to stop).
///
/// Returns the repairs made, or the reason the file failed.
pub fn extract(
    path: &Path,
    format: Format,
    opts: &ExtractOptions,
    emit: &mut dyn FnMut(Vec<Document>) -> bool,
) -> Result<Vec<Repair>, String> {
    let read = || std::fs::read(path).map_err(|e| format!("unreadable: {e}"));
    match format {
        Format::Dataset(f) => dataset::read(path, f, opts, emit),
        Format::Pdf => {
            let pages = pdf::extract_pages(&read()?, &opts.pdf).map_err(|e| e.to_string())?;
            let text = pages.join("\n\n");
            if text.trim().is_empty() {
                return Err("no text (scanned or image-only PDF?)".into());
            }
            emit(vec![Document { kind: Kind::Pdf, lang: "pdf", code: None, text }]);
            Ok(Vec::new())
        }
        Format::Text => {
            let (text, repairs) = text::decode(&read()?)?;
            let lang = text::markup(path);
            emit(vec![Document { kind: Kind::Text, lang, code: None, text }]);
            Ok(repairs)
        }
        Format::Code(lang) => {
            let (text, repairs) = text::decode(&read()?)?;
            let doc = Document { kind: Kind::Code, lang: lang.name(), code: Some(lang), text };
            emit(vec![doc]);
            Ok(repairs)
        }
        Format::Config(f) => {
            let (text, mut repairs) = text::decode(&read()?)?;
            let doc = match config::check(f, &text) {
                Ok(()) => Document { kind: Kind::Config, lang: config::name(f), code: None, text },
                Err(e) => {
                    repairs.push(format!("invalid {}, ingested as text: {e}", config::name(f)));
                    Document { kind: Kind::Text, lang: config::name(f), code: None, text }
                }
            };
            emit(vec![doc]);
            Ok(repairs)
        }
    }
}
