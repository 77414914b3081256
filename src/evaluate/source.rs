//! Where eval batches come from: a split of a shard store, read by the trainer's loader in
//! stream order, or text files tokenized with the checkpoint's tokenizer and packed the way
//! the trainer packs documents (EOS between them, a state reset at each start).

use std::path::{Path, PathBuf};

use mamba_pipeline::shard::manifest::Manifest;
use mamba_pipeline::shard::Split;
use mamba_pipeline::tokenize::Vocab;

use super::EvalError;
use crate::train::loader::{open_split, Loader, LoaderOptions};
use crate::train::pack::{Batch, Packer, Window};

/// Text is encoded in chunks of at most this many bytes (cut as ingest cuts text), so no
/// single tokenizer call is huge; the chunks stay one document.
const PIECE_BYTES: usize = 16 * 1024;

fn io(path: &Path, source: std::io::Error) -> EvalError {
    EvalError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn unusable(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Unusable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// A split's batches, the number of tokens in the split, and the window length they have.
pub struct ShardSource {
    pub loader: Loader,
    /// The first batch, read to find a shape the split fills.
    first: Option<Batch>,
    pub split_tokens: u64,
    pub seq_len: usize,
}

/// Opens `split` of the store at `dir` for a model of `model_vocab` rows whose tokenizer is
/// `tokenizer` (refused if it is not the store's).
pub fn shards(
    dir: &Path,
    split: Split,
    tokenizer: Option<&Path>,
    model_vocab: usize,
    seq_len: usize,
    batch_size: usize,
) -> Result<ShardSource, EvalError> {
    let manifest = Manifest::load(dir)?;
    let tok = &manifest.tokenizer;
    if let Some(t) = tokenizer.filter(|t| t.is_file()) {
        let store = dir.join(&tok.file);
        let differ = mamba_pipeline::tokenize::differences(t, &store)?;
        if !differ.is_empty() {
            return Err(EvalError::Mismatch(format!(
                "{}: not the tokenizer of the shard store {} (they differ in {}); the scores would be meaningless",
                t.display(),
                dir.display(),
                differ.join(", ")
            )));
        }
    }
    if tok.vocab_size > model_vocab {
        return Err(EvalError::Mismatch(format!(
            "the shard store's tokenizer has {} tokens but the model's vocabulary is {model_vocab}",
            tok.vocab_size
        )));
    }
    let split_tokens = manifest.shards(split).map(|s| s.tokens).sum();
    let sources = open_split(dir, &manifest, split, false)?;
    let opts = LoaderOptions {
        seq_len,
        batch_size,
        eos: tok.eos_id,
        seed: 0,
        shuffle_buffer: 0,
        shuffle: false,
        prefetch: 2,
        threads: 1,
        epochs: Some(1),
        snapshot_every: 0,
    };
    // A split smaller than one batch is scored with the trainer's shorter shapes.
    match crate::train::eval::eval_loader(&sources, &opts)? {
        Some((loader, first)) => Ok(ShardSource {
            loader,
            seq_len: first.seq_len,
            first: Some(first),
            split_tokens,
        }),
        None => {
            let shapes = crate::train::eval::eval_shapes(batch_size, seq_len);
            let shortest = shapes.iter().map(|&(_, l)| l).min().unwrap_or(seq_len);
            Err(EvalError::Empty {
                what: format!("the {} split of {}", split.as_str(), dir.display()),
                why: format!(
                    "{split_tokens} tokens, fewer than one window of {} (pass a shorter --seq-len)",
                    shortest + 1
                ),
            })
        }
    }
}

impl ShardSource {
    pub fn batches(&mut self) -> impl Iterator<Item = Result<Batch, EvalError>> + '_ {
        let first = self.first.take().map(Ok);
        first.into_iter().chain(std::iter::from_fn(move || {
            self.loader
                .recv()
                .map(|r| r.map(|i| i.batch).map_err(EvalError::from))
        }))
    }
}

/// Files under `path` (itself if a file), sorted, hidden entries left out.
fn files(path: &Path) -> Result<Vec<PathBuf>, EvalError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(files(&p)?);
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(out)
}

/// Text batches and what was read.
pub struct TextSource {
    pub batches: Vec<Batch>,
    pub tokens: u64,
    pub files: usize,
    /// Files that are not text (binary), left out.
    pub skipped: Vec<PathBuf>,
}

/// Tokenizes every UTF-8 file under `path` as one document each and packs them into
/// `seq_len + 1` windows; a last, shorter window is scored too.
pub fn text(
    path: &Path,
    vocab: &Vocab,
    seq_len: usize,
    batch_size: usize,
) -> Result<TextSource, EvalError> {
    if !path.exists() {
        return Err(unusable(path, "not found"));
    }
    let mut packer = Packer::new(seq_len, vocab.eos_id);
    let mut encoder = vocab.encoder();
    let mut windows: Vec<Window> = Vec::new();
    let (mut tokens, mut n_files, mut skipped) = (0u64, 0usize, Vec::new());
    for (doc, file) in files(path)?.into_iter().enumerate() {
        let bytes = std::fs::read(&file).map_err(|e| io(&file, e))?;
        // Decoded as ingest decodes text: byte-order marks, UTF-16, repaired UTF-8.
        let Ok((text, _)) = mamba_pipeline::extract::text::decode(&bytes) else {
            skipped.push(file);
            continue;
        };
        if text.is_empty() {
            continue;
        }
        n_files += 1;
        packer.begin_row(doc as u64);
        let chunks = mamba_pipeline::chunk::text::split(&text, PIECE_BYTES);
        for ids in encoder
            .encode_chunks(&chunks)
            .map_err(|e| unusable(&file, e))?
        {
            tokens += ids.len() as u64;
            let mut at = 0;
            while let Some(w) = packer.next_window(&ids, &mut at) {
                windows.push(w);
            }
        }
    }
    let mut batches: Vec<Batch> = windows
        .chunks(batch_size.max(1))
        .filter(|c| c.len() == batch_size.max(1))
        .map(|c| Batch::from_windows(c, seq_len))
        .collect();
    // Windows that do not fill a batch, and the last partial window, go one by one.
    let full = batches.len() * batch_size.max(1);
    for w in &windows[full..] {
        batches.push(Batch::from_windows(std::slice::from_ref(w), seq_len));
    }
    let tail = &packer.cur;
    if tail.tokens.len() >= 2 {
        batches.push(Batch::from_windows(
            std::slice::from_ref(tail),
            tail.tokens.len() - 1,
        ));
    }
    Ok(TextSource {
        batches,
        tokens,
        files: n_files,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_windows_hold_every_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let texts = [
            "one two three four five six seven. ",
            "alpha beta gamma delta. ",
        ];
        std::fs::write(dir.path().join("a.txt"), texts[0].repeat(20)).unwrap();
        std::fs::write(dir.path().join("b.txt"), texts[1].repeat(20)).unwrap();
        std::fs::write(dir.path().join("c.bin"), [0x9fu8, 0x92, 0x96, 0xc3, 0xff]).unwrap();
        let vocab = Vocab::train(texts.iter(), 300).unwrap();
        let src = text(dir.path(), &vocab, 16, 2).unwrap();
        assert_eq!(src.files, 2);
        assert_eq!(src.skipped.len(), 1);
        // Targets: every token after the first, plus the EOS between the two files.
        let targets: u64 = src.batches.iter().map(|b| b.targets.len() as u64).sum();
        assert_eq!(targets, src.tokens - 1 + 1);
        // The second file starts a document: one reset somewhere past the start.
        let resets: usize = src
            .batches
            .iter()
            .map(|b| b.resets.iter().filter(|&&r| r == 1).count())
            .sum();
        assert_eq!(resets, 2);
    }
}
