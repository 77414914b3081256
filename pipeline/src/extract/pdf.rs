//! PDF text extraction: the text of each page, in page order, with word spaces and line
//! breaks placed from the glyphs' positions.
//!
//! lopdf reads the file's object structure; everything after that is ours: a bounded stream
//! decoder ([`filters`]), fonts and their encodings ([`font`], [`cmap`], [`encoding`],
//! [`glyphs`], [`metrics`]), a content-stream interpreter ([`content`]) and the layout of
//! glyphs into lines ([`layout`]). A PDF is untrusted input, so the whole run is held to
//! [`PdfLimits`] and a panic anywhere inside becomes [`PdfError::Malformed`].

mod cmap;
mod content;
mod encoding;
mod filters;
mod font;
mod glyphs;
mod layout;
mod limits;
mod metrics;
mod scan;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId};

use content::Interpreter;
use filters::{decode_stream, Undecodable};
use layout::PageText;
use limits::Budget;
pub use limits::PdfLimits;

/// Why a PDF yielded no text.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("pdf is encrypted and needs a password")]
    Encrypted,
    #[error("malformed pdf: {0}")]
    Malformed(String),
    #[error("pdf took longer than the time limit (--file-timeout) to extract")]
    TimeLimit,
    #[error("pdf too large: {0}")]
    SizeLimit(String),
    #[error("pdf forms nest deeper than {0} levels or draw themselves")]
    DepthLimit(usize),
}

/// PDFs at least this large are extracted one at a time: parsed, a PDF takes tens of times
/// its size in memory, so two large ones at once would set the run's peak.
const LARGE_PDF_BYTES: usize = 2 << 20;
static LARGE_PDF: Mutex<()> = Mutex::new(());

/// The turn of a PDF of `len` bytes among threads that extract PDFs at once: `None` for a
/// small one; for a large one, a guard to hold while it is extracted (see [`LARGE_PDF_BYTES`]).
/// Taken before the time limit starts, so waiting for the turn does not count against it.
pub fn large_turn(len: usize) -> Option<MutexGuard<'static, ()>> {
    (len >= LARGE_PDF_BYTES).then(|| {
        LARGE_PDF
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    })
}

/// The text of every page of the PDF in `bytes`, in page order; a page without text gives
/// an empty string. Lines end in `\n`; words on a line are separated by one space. Callers
/// that extract several at once take [`large_turn`] first.
pub fn extract_pages(bytes: &[u8], limits: &PdfLimits) -> Result<Vec<String>, PdfError> {
    match catch_unwind(AssertUnwindSafe(|| extract(bytes, limits))) {
        Ok(result) => result,
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".to_string());
            Err(PdfError::Malformed(format!("parser failed: {why}")))
        }
    }
}

fn extract(bytes: &[u8], limits: &PdfLimits) -> Result<Vec<String>, PdfError> {
    let budget = Budget::new(limits);
    scan::check(bytes)?;
    let doc = load(bytes, limits)?;
    budget.check_time()?;
    let mut interpreter = Interpreter::new(&doc, budget);
    let mut pages = Vec::new();
    for page_id in doc.page_iter() {
        interpreter.budget.check_time()?;
        pages.push(page_text(&doc, page_id, &mut interpreter)?);
    }
    Ok(pages)
}

/// Where the `%PDF-` header starts, if it does within the first 1024 bytes (where readers
/// look for it: some files carry a mail or HTTP prefix).
pub fn header_offset(bytes: &[u8]) -> Option<usize> {
    let head = &bytes[..bytes.len().min(1024 + 4)];
    head.windows(5).position(|w| w == b"%PDF-")
}

fn load(bytes: &[u8], limits: &PdfLimits) -> Result<Document, PdfError> {
    let Some(start) = header_offset(bytes) else {
        return Err(PdfError::Malformed("no %PDF header".to_string()));
    };
    // Offsets in the file count from the header, as readers take them.
    let bytes = &bytes[start..];
    let options = LoadOptions::with_max_decompressed_size(limits.max_stream_bytes);
    let doc = Document::load_mem_with_options(bytes, options).map_err(|e| match e {
        lopdf::Error::InvalidPassword | lopdf::Error::Decryption(_) => PdfError::Encrypted,
        lopdf::Error::AlreadyEncrypted => PdfError::Encrypted,
        other => PdfError::Malformed(other.to_string()),
    })?;
    // An empty user password opens a document lopdf decrypts itself; anything else is locked.
    if doc.is_encrypted() {
        return Err(PdfError::Encrypted);
    }
    if doc.catalog().is_err() {
        return Err(PdfError::Malformed("no document catalog".to_string()));
    }
    Ok(doc)
}

/// The text of one page: its content streams run with its (inherited) resources.
fn page_text<'d>(
    doc: &'d Document,
    page_id: ObjectId,
    interpreter: &mut Interpreter<'d>,
) -> Result<String, PdfError> {
    let Ok(page) = doc.get_dictionary(page_id) else {
        return Ok(String::new());
    };
    let mut resources: Vec<&Dictionary> = Vec::new();
    if let Ok((direct, referenced)) = doc.get_page_resources(page_id) {
        resources.extend(direct);
        resources.extend(
            referenced
                .into_iter()
                .filter_map(|id| doc.get_dictionary(id).ok()),
        );
    }
    let streams: Vec<&lopdf::Stream> = match dict_get(doc, page, b"Contents") {
        Some(Object::Stream(s)) => vec![s],
        Some(Object::Array(items)) => items
            .iter()
            .filter_map(|i| resolve(doc, i).as_stream().ok())
            .collect(),
        _ => Vec::new(),
    };
    let mut content = Vec::new();
    for stream in streams {
        match decode_stream(doc, stream, &mut interpreter.budget) {
            Ok(data) => content.extend_from_slice(&data),
            Err(Undecodable::Unsupported) => {}
            Err(Undecodable::Limit(e)) => return Err(e),
        }
        // Streams split a page's content at token boundaries only (7.8.2).
        content.push(b'\n');
    }
    let mut text = PageText::default();
    interpreter.run(
        &content,
        &resources,
        [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        &mut text,
    )?;
    Ok(text.finish())
}

/// `obj` with references followed, or `Null` where one leads nowhere (or in a circle).
pub(crate) fn resolve<'a>(doc: &'a Document, obj: &'a Object) -> &'a Object {
    const NULL: &Object = &Object::Null;
    match obj {
        Object::Reference(_) => doc.dereference(obj).map_or(NULL, |(_, o)| o),
        _ => obj,
    }
}

/// `dict[key]` with references followed.
pub(crate) fn dict_get<'a>(
    doc: &'a Document,
    dict: &'a Dictionary,
    key: &[u8],
) -> Option<&'a Object> {
    dict.get(key)
        .ok()
        .map(|o| resolve(doc, o))
        .filter(|o| !matches!(o, Object::Null))
}

#[cfg(test)]
mod tests;
