//! The stage threads: discover -> extract + chunk (N) -> tokenize (N) -> the caller's writer.
//!
//! Stages talk through bounded channels, so memory is bounded by channel depth times piece
//! size, never by corpus size. Pieces carry `(file, seq)` so the writer can restore order.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::ScopedJoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::order::Order;
use super::watchdog::Watchdog;
use crate::chunk;
use crate::clean::{self, CleanOptions, Findings};
use crate::discover::{self, DatasetFormat, Format, Found, Skip, Walked};
use crate::extract::{self, dataset, Document, ExtractOptions, Kind, Repair};
use crate::tokenize::{Encoder, Vocab};

/// Settings the stages need.
pub struct StageOptions {
    pub inputs: Vec<PathBuf>,
    /// Which of the files met are read (all, one part of several, a sample).
    pub select: discover::Select,
    pub exclude: PathBuf,
    pub follow_symlinks: bool,
    pub threads: usize,
    pub max_file_bytes: u64,
    pub chunk_bytes: usize,
    /// Wall-clock budget to read one file (for a dataset, one batch of it): past it the file
    /// fails and the run goes on.
    pub file_timeout: Duration,
    pub extract: ExtractOptions,
    /// The cleaning stages between extraction and chunking.
    pub clean: CleanOptions,
}

/// Files read so far, by the hash of their bytes, shared by the extract workers.
///
/// Byte-identical copies are common in real folders (a PDF saved twice, vendored code).
/// A copy is not read again when an earlier file with the same bytes has been read already;
/// a copy read anyway (the earlier file was not done yet) carries its bytes' hash, and the
/// writer, which takes files in input order, turns it into the copy skipped unread (see
/// `Tally::add`): so nothing, the part logs included, depends on which worker got there first.
#[derive(Default)]
pub struct SeenFiles(std::sync::Mutex<std::collections::HashMap<u128, (usize, u128)>>);

impl SeenFiles {
    /// The document hash of an earlier file (by input order) with these bytes, if one was read.
    fn earlier_copy(&self, raw_hash: u128, index: usize) -> Option<u128> {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&raw_hash)
            .filter(|(first, _)| *first < index)
            .map(|(_, doc)| *doc)
    }

    fn record(&self, raw_hash: u128, index: usize, doc_hash: u128) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen.entry(raw_hash).or_insert((index, doc_hash));
        if index < entry.0 {
            *entry = (index, doc_hash);
        }
    }
}

/// A slice of one file's output: a batch of documents, and on the file's last piece, how
/// the file ended.
pub struct Piece {
    pub file: usize,
    /// The file's number in the walk over all inputs (see [`discover::Found`]).
    pub number: usize,
    pub seq: u32,
    pub source: Arc<str>,
    pub kind: Option<Kind>,
    pub bytes: u64,
    pub docs: Vec<Doc>,
    pub end: Option<End>,
    /// The hash of the file's bytes, for a file read whole.
    pub raw: Option<u128>,
    /// The text bytes this piece holds against the in-flight budget (see [`Order::reserve`]),
    /// given back when the writer has taken it.
    pub reserved: usize,
}

pub struct Doc {
    /// Hash of the whole text: the document's identity for dedup, id and split.
    pub hash: u128,
    pub kind: Kind,
    pub lang: Cow<'static, str>,
    pub chunks: Vec<String>,
    pub tokens: Vec<Vec<u32>>,
    /// What the cleaning stages found (a dropped document has no chunks).
    pub found: Findings,
}

pub enum End {
    Ingested(Vec<Repair>),
    Skipped(String),
    Failed(String),
    /// Byte-identical to an earlier file, whose document had this hash; not read again.
    Duplicate(u128),
}

impl Piece {
    /// The first piece of the same file, with no documents and no end.
    fn empty_like(&self) -> Piece {
        Piece {
            file: self.file,
            number: self.number,
            seq: 0,
            source: self.source.clone(),
            kind: self.kind,
            bytes: 0,
            docs: Vec::new(),
            end: None,
            raw: None,
            reserved: 0,
        }
    }

    /// The bytes of text the piece's documents hold.
    fn text_bytes(&self) -> usize {
        let doc = |d: &Doc| d.chunks.iter().map(String::len).sum::<usize>();
        self.docs.iter().map(doc).sum()
    }
}

/// Sends `piece` once it fits the in-flight budget (with an ordered consumer); false when
/// the consumer has gone away.
fn send(tx: &Sender<Piece>, order: Option<&Order>, mut piece: Piece) -> bool {
    if let Some(order) = order {
        piece.reserved = piece.text_bytes();
        if !order.reserve(piece.file, piece.reserved) {
            return false;
        }
    }
    tx.send(piece).is_ok()
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

/// Starts discovery and the extract workers inside `scope`; returns their pieces, and the
/// discovery thread, which ends with what the whole walk met.
///
/// With `order`, files enter under its credits and stream under its turnstile (for an
/// ordered consumer); without, they flow as fast as they are read. With `seen`, copies of
/// files already read are passed on as duplicates without being read again.
pub fn spawn_extract<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    opts: &'s StageOptions,
    order: Option<&'s Order>,
    seen: Option<&'s SeenFiles>,
) -> (Receiver<Piece>, ScopedJoinHandle<'s, Walked>) {
    let depth = 2 * opts.threads.max(1);
    let (found_tx, found_rx) = bounded::<Found>(depth);
    let (piece_tx, piece_rx) = bounded::<Piece>(depth);
    let walked = scope.spawn(move || {
        let (inputs, exclude) = (&opts.inputs, &opts.exclude);
        discover::walk(
            inputs,
            opts.follow_symlinks,
            exclude,
            opts.select,
            |found| {
                if order.is_some_and(|o| !o.acquire()) {
                    return;
                }
                let _ = found_tx.send(found);
            },
        )
    });
    for _ in 0..opts.threads.max(1) {
        let (found_rx, piece_tx) = (found_rx.clone(), piece_tx.clone());
        scope.spawn(move || {
            let mut watchdog = Watchdog::new(opts.file_timeout);
            for found in found_rx {
                if !extract_file(found, opts, order, seen, &mut watchdog, &piece_tx) {
                    break;
                }
            }
        });
    }
    (piece_rx, walked)
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
            let mut encoder = vocab.encoder();
            for mut piece in pieces {
                tokenize_piece(&mut piece, &mut encoder);
                // The writer needs only the ids: the text would double what is in flight.
                for doc in &mut piece.docs {
                    doc.chunks = Vec::new();
                }
                if tx.send(piece).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

fn tokenize_piece(piece: &mut Piece, encoder: &mut Encoder) {
    for doc in &mut piece.docs {
        match encoder.encode_chunks(&doc.chunks) {
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
    seen: Option<&SeenFiles>,
    watchdog: &mut Watchdog,
    tx: &Sender<Piece>,
) -> bool {
    let Found {
        index,
        number,
        path,
        source,
        verdict,
    } = found;
    let mut piece = Piece {
        file: index,
        number,
        seq: 0,
        source: source.into(),
        kind: None,
        bytes: 0,
        docs: Vec::new(),
        end: None,
        raw: None,
        reserved: 0,
    };
    let (format, size) = match verdict {
        Ok(v) => v,
        Err(Skip::Skipped(r)) => return send_end(tx, order, piece, End::Skipped(r)),
        Err(Skip::Failed(r)) => return send_end(tx, order, piece, End::Failed(r)),
    };
    piece.kind = Some(kind_of(format));
    piece.bytes = size;
    if let Format::Dataset(f) = format {
        return stream_dataset(piece, path, f, opts, order, watchdog, tx);
    }
    if size > opts.max_file_bytes {
        let reason = format!("too large ({} MB; raise --max-file-mb)", size >> 20);
        return send_end(tx, order, piece, End::Skipped(reason));
    }
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => return send_end(tx, order, piece, End::Failed(format!("unreadable: {e}"))),
    };
    let raw_hash = xxhash_rust::xxh3::xxh3_128(&bytes);
    if let Some(text_hash) = seen.and_then(|s| s.earlier_copy(raw_hash, index)) {
        return send_end(tx, order, piece, End::Duplicate(text_hash));
    }
    // A large PDF waits for its turn before its clock starts (see `pdf::large_turn`).
    let _turn = match format {
        Format::Pdf => extract::pdf::large_turn(bytes.len()),
        _ => None,
    };
    let extract_opts = opts.extract.clone();
    let read = watchdog.run(move |tx| {
        stall_if_told(&path);
        let _ = tx.send(guarded(|| {
            extract::document(&path, &bytes, format, &extract_opts)
        }));
    });
    let end = match watchdog.next(&read).and_then(|read| read) {
        Err(reason) => End::Failed(reason),
        Ok((doc, _)) if doc.text.trim().is_empty() => End::Skipped("no text".into()),
        Ok((doc, repairs)) => {
            let doc = chunk_doc(doc, opts);
            // A dropped document stands for no copy: its copies are read and dropped too.
            if let (Some(seen), None) = (seen, &doc.found.dropped) {
                seen.record(raw_hash, index, doc.hash);
            }
            piece.raw = Some(raw_hash);
            piece.docs.push(doc);
            End::Ingested(repairs)
        }
    };
    send_end(tx, order, piece, end)
}

/// `read()`, with a panic inside it turned into an error naming it.
fn guarded<T>(read: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        Err(format!(
            "internal error while reading: {}",
            panic_message(&panic)
        ))
    })
}

/// Tests stand in for a file whose extraction never finishes by naming it so.
#[cfg(test)]
pub(crate) const NEVER_FINISHES: &str = "never-finishes.txt";

fn stall_if_told(_path: &std::path::Path) {
    #[cfg(test)]
    if _path.file_name().is_some_and(|n| n == NEVER_FINISHES) {
        loop {
            std::thread::park();
        }
    }
}

fn send_end(tx: &Sender<Piece>, order: Option<&Order>, mut piece: Piece, end: End) -> bool {
    piece.end = Some(end);
    send(tx, order, piece)
}

/// What a dataset reader sends the worker: a batch of documents, then how the file ended.
enum Read {
    Batch(Vec<Document>),
    End(Result<Vec<Repair>, String>),
}

/// Streams a dataset file as a piece per batch. Only the first piece may run ahead of the
/// writer; later ones wait for the file's turn, which bounds what the writer buffers. The
/// reader runs under the watchdog, each batch held to the file budget.
fn stream_dataset(
    file: Piece,
    path: PathBuf,
    format: DatasetFormat,
    opts: &StageOptions,
    order: Option<&Order>,
    watchdog: &mut Watchdog,
    tx: &Sender<Piece>,
) -> bool {
    let send = |piece: Piece| {
        let turn = piece.seq == 0 || order.is_none_or(|o| o.wait_turn(piece.file));
        turn && send(tx, order, piece)
    };
    let extract_opts = opts.extract.clone();
    let reader = watchdog.run(move |tx| {
        let result = guarded(|| {
            dataset::read(&path, format, &extract_opts, &mut |docs| {
                tx.send(Read::Batch(docs)).is_ok()
            })
        });
        let _ = tx.send(Read::End(result));
    });
    // The latest batch is held back so that the last one can carry the file's end.
    let (mut held, mut next_seq, mut docs_seen) = (None::<Piece>, 0, 0usize);
    let result = loop {
        let docs = match watchdog.next(&reader) {
            Ok(Read::Batch(docs)) => docs,
            Ok(Read::End(result)) => break result,
            Err(reason) => break Err(reason),
        };
        // `dataset::read` leaves blank rows out (and counts them).
        let docs: Vec<Doc> = docs.into_iter().map(|d| chunk_doc(d, opts)).collect();
        docs_seen += docs.len();
        let piece = Piece {
            seq: next_seq,
            docs,
            bytes: 0,
            ..file.empty_like()
        };
        next_seq += 1;
        if let Some(previous) = held.replace(piece) {
            if !send(previous) {
                return false;
            }
        }
    };
    let mut last = held.unwrap_or_else(|| file.empty_like());
    last.bytes = file.bytes;
    last.end = Some(match result {
        Ok(repairs) if docs_seen > 0 => End::Ingested(repairs),
        Ok(repairs) if repairs.is_empty() => End::Skipped("no text".into()),
        Ok(repairs) => End::Skipped(format!("no text ({})", repairs.join("; "))),
        Err(reason) => End::Failed(reason),
    });
    send(last)
}

/// Cleans one document and cuts it into chunks; a document the cleaning drops keeps none.
fn chunk_doc(mut doc: Document, opts: &StageOptions) -> Doc {
    let found = clean::clean(&mut doc.text, doc.kind, &opts.clean);
    let hash = xxhash_rust::xxh3::xxh3_128(doc.text.as_bytes());
    let budget = opts.chunk_bytes;
    let chunks = match (&found.dropped, doc.code) {
        (Some(_), _) => Vec::new(),
        (None, Some(lang)) => chunk::code::split(&doc.text, lang, budget).chunks,
        (None, None) => chunk::text::split(&doc.text, budget),
    };
    let chunks = chunks.into_iter().map(str::to_owned).collect();
    Doc {
        hash,
        kind: doc.kind,
        lang: Cow::Borrowed(found.lang.unwrap_or(doc.lang)),
        chunks,
        tokens: Vec::new(),
        found,
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "panic".into(),
    }
}
