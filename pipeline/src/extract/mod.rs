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

    /// The kind named by [`Kind::as_str`].
    pub fn parse(name: &str) -> Option<Kind> {
        [
            Kind::Pdf,
            Kind::Text,
            Kind::Code,
            Kind::Config,
            Kind::Dataset,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
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
    /// Text bytes per dataset batch: a batch ends at whichever of the two comes first, so a
    /// file of book-length rows streams in batches of the same size as one of short rows.
    pub batch_bytes: usize,
    /// The largest row a dataset may hold, in bytes as read (after decompression): one row
    /// is the unit held whole, so past it the file fails rather than filling memory.
    pub max_row_bytes: u64,
    pub pdf: pdf::PdfLimits,
}

/// Reads a whole file (any format but a dataset, which is streamed by [`dataset::read`])
/// into one document, with the repairs made; or the reason the file failed.
pub fn document(
    path: &Path,
    bytes: &[u8],
    format: Format,
    opts: &ExtractOptions,
) -> Result<(Document, Vec<Repair>), String> {
    let doc = |kind, lang, code, text| Document {
        kind,
        lang,
        code,
        text,
    };
    match format {
        Format::Dataset(_) => Err("a dataset is streamed, not read whole".into()),
        Format::Pdf => {
            let pages = pdf::extract_pages(bytes, &opts.pdf).map_err(|e| e.to_string())?;
            let text = pages.join("\n\n");
            if text.trim().is_empty() {
                return Err("no text (scanned or image-only PDF?)".into());
            }
            Ok((doc(Kind::Pdf, "pdf", None, text), Vec::new()))
        }
        Format::Text => {
            let (text, repairs) = text::decode(bytes)?;
            Ok((doc(Kind::Text, text::markup(path), None, text), repairs))
        }
        Format::Code(lang) => {
            let (text, repairs) = text::decode(bytes)?;
            Ok((doc(Kind::Code, lang.name(), Some(lang), text), repairs))
        }
        Format::Config(f) => {
            let (text, mut repairs) = text::decode(bytes)?;
            match config::check(f, &text) {
                Ok(()) => Ok((doc(Kind::Config, config::name(f), None, text), repairs)),
                Err(e) => {
                    repairs.push(format!(
                        "invalid {}, ingested as text: {e}",
                        config::name(f)
                    ));
                    Ok((doc(Kind::Text, config::name(f), None, text), repairs))
                }
            }
        }
    }
}
