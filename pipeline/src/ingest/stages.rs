//! The stage threads: discover -> extract + chunk (N) -> tokenize (N) -> the caller's writer.
//!
//! Stages talk through bounded channels, so memory is bounded by channel depth times piece
//! size, never by corpus size. Pieces carry `(file, seq)` so the writer can restore order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::order::Order;
use crate::chunk;
use crate::discover::{self, Format, Found, Skip};
use crate::extract::{self, Document, ExtractOptions, Kind, Repair};
use crate::tokenize::Vocab;

/// Settings the stages need.
pub struct StageOptions {
    pub inputs: Vec<PathBuf>,
    pub exclude: PathBuf,
    pub follow_symlinks: bool,
    pub threads: usize,
    pub max_file_bytes: u64,
    pub chunk_bytes: usize,
    pub extract: ExtractOptions,
}

/// A slice of one file's output: a batch of documents, and on the file's last piece, how
/// the file ended.
pub struct Piece {
    pub file: usize,
    pub seq: u32,
    pub source: Arc<str>,
    pub kind: Option<Kind>,
    pub bytes: u64,
    pub docs: Vec<Doc>,
    pub end: Option<End>,
}

pub struct Doc {
    /// Hash of the whole text: the document's identity for dedup, id and split.
    pub hash: u128,
    pub kind: Kind,
    pub lang: &'static str,
    pub chunks: Vec<String>,
    pub tokens: Vec<Vec<u32>>,
}

pub enum End {
    Ingested(Vec<Repair>),
    Skipped(String),
    Failed(String),
}

pub fn kind_of(format: Format) -> Kind {
    match format {
        Format::Pdf => Kind::Pdf,
        Format::Text => Kind::Text,
        Format::Code(_) => Kind::Code,
        Format::Config(_) => Kind::Config,
        Format::Dataset(_) => Kind::Dataset,
    }
}

/// Starts discovery and the extract workers inside `scope`; returns their pieces.
///
/// With `order`, files enter under its credits and stream under its turnstile (for an
/// ordered consumer); without, they flow as fast as they are read.
pub fn spawn_extract<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    opts: &'s StageOptions,
    order: Option<&'s Order>,
) -> Receiver<Piece> {
    let depth = 2 * opts.threads.max(1);
    let (found_tx, found_rx) = bounded::<Found>(depth);
    let (piece_tx, piece_rx) = bounded::<Piece>(depth);
    scope.spawn(move || {
        discover::walk(&opts.inputs, opts.follow_symlinks, &opts.exclude, |found| {
            if order.is_some_and(|o| !o.acquire()) {
                return;
            }
            let _ = found_tx.send(found);
        })
    });
    for _ in 0..opts.threads.max(1) {
        let (found_rx, piece_tx) = (found_rx.clone(), piece_tx.clone());
        scope.spawn(move || {
            for found in found_rx {
                if !extract_file(found, opts, order, &piece_tx) {
                    break;
                }
            }
        });
    }
    piece_rx
}

/// Starts the tokenize workers: pieces in, pieces with token ids out.
pub fn spawn_tokenize<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    threads: usize,
    vocab: &'s Vocab,
    pieces: Receiver<Piece>,
) -> Receiver<Piece> {
    let (tx, rx) = bounded::<Piece>(2 * threads.max(1));
    for _ in 0..threads.max(1) {
        let (pieces, tx) = (pieces.clone(), tx.clone());
        scope.spawn(move || {
            for mut piece in pieces {
                tokenize_piece(&mut piece, vocab);
                if tx.send(piece).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

fn tokenize_piece(piece: &mut Piece, vocab: &Vocab) {
    for doc in &mut piece.docs {
        let encoded: Result<Vec<_>, _> = doc.chunks.iter().map(|c| vocab.encode(c)).collect();
        match encoded {
            Ok(tokens) => doc.tokens = tokens,
            Err(e) => {
                // Byte-level tokenizers do not fail on text; a custom one might. The file fails.
                piece.docs.clear();
                piece.end = Some(End::Failed(format!("tokenizer: {e}")));
                return;
            }
        }
    }
}

/// Reads one file into pieces; false when the consumer has gone away.
fn extract_file(
    found: Found,
    opts: &StageOptions,
    order: Option<&Order>,
    tx: &Sender<Piece>,
) -> bool {
    let Found {
        index,
        path,
        source,
        verdict,
    } = found;
    let source: Arc<str> = source.into();
    let piece = |seq, kind, bytes, docs, end| Piece {
        file: index,
        seq,
        source: source.clone(),
        kind,
        bytes,
        docs,
        end,
    };
    let (format, size) = match verdict {
        Ok(v) => v,
        Err(Skip::Skipped(r)) => {
            return tx
                .send(piece(0, None, 0, vec![], Some(End::Skipped(r))))
                .is_ok()
        }
        Err(Skip::Failed(r)) => {
            return tx
                .send(piece(0, None, 0, vec![], Some(End::Failed(r))))
                .is_ok()
        }
    };
    let kind = Some(kind_of(format));
    if size > opts.max_file_bytes && !matches!(format, Format::Dataset(_)) {
        let reason = format!("too large ({} MB; raise --max-file-mb)", size >> 20);
        return tx
            .send(piece(0, kind, size, vec![], Some(End::Skipped(reason))))
            .is_ok();
    }
    // The latest batch is held back so the last one can carry the file's end.
    let (mut held, mut seq, mut docs_seen, mut alive) = (None::<Vec<Doc>>, 0u32, 0usize, true);
    let send_held = |held: Vec<Doc>, seq: &mut u32, end: Option<End>| {
        let streaming = *seq > 0;
        if streaming && order.is_some_and(|o| !o.wait_turn(index)) {
            return false;
        }
        let bytes = if end.is_some() { size } else { 0 };
        let ok = tx.send(piece(*seq, kind, bytes, held, end)).is_ok();
        *seq += 1;
        ok
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        extract::extract(&path, format, &opts.extract, &mut |docs| {
            let docs: Vec<Doc> = docs
                .into_iter()
                .filter(|d| !d.text.trim().is_empty())
                .map(|d| chunk_doc(d, opts.chunk_bytes))
                .collect();
            docs_seen += docs.len();
            if let Some(prev) = held.replace(docs) {
                alive = send_held(prev, &mut seq, None);
            }
            alive
        })
    }));
    if !alive {
        return false;
    }
    let end = match result {
        Ok(Ok(repairs)) if docs_seen > 0 => End::Ingested(repairs),
        Ok(Ok(_)) => End::Skipped("no text".into()),
        Ok(Err(reason)) => End::Failed(reason),
        Err(panic) => End::Failed(format!(
            "internal error while reading: {}",
            panic_message(&panic)
        )),
    };
    send_held(held.unwrap_or_default(), &mut seq, Some(end))
}

fn chunk_doc(doc: Document, budget: usize) -> Doc {
    let hash = xxhash_rust::xxh3::xxh3_128(doc.text.as_bytes());
    let chunks = match doc.code {
        Some(lang) => chunk::code::split(&doc.text, lang, budget).chunks,
        None => chunk::text::split(&doc.text, budget),
    };
    let chunks = chunks.into_iter().map(str::to_owned).collect();
    Doc {
        hash,
        kind: doc.kind,
        lang: doc.lang,
        chunks,
        tokens: Vec::new(),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "panic".into(),
    }
}
