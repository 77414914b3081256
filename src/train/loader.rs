//! Streaming loader: reader threads decode Parquet row groups, one packer thread turns them into
//! windows, shuffles them in a bounded buffer and groups them into batches, and the train loop
//! `recv`s finished batches from a bounded channel. Memory is bounded by the prefetch depth,
//! the shuffle buffer and the row-group size, never by the corpus.
//!
//! Order is a pure function of the seed: each epoch visits the shards in a seeded order and
//! each shard's row groups in a seeded order. The packer's [`LoaderState`] (epoch, row group,
//! row, token offset, partial window, shuffle buffer and its RNG) is attached to the batches
//! the caller asks for, so a checkpoint can resume the exact same stream.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use mamba_pipeline::shard::manifest::Manifest;
use mamba_pipeline::shard::reader::{Column, ReadError, ShardReader, TokenLists};
use mamba_pipeline::shard::{sha256_file, Split};
use serde::{Deserialize, Serialize};

use super::pack::{Batch, Packer, Window};
use super::shuffle::{permutation, ShuffleBuffer, SplitMix64};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("shard {0} is listed in the manifest but missing")]
    Missing(String),
    #[error("shard {path} is truncated or resized: {found} bytes, the manifest says {expected}")]
    Size {
        path: String,
        found: u64,
        expected: u64,
    },
    #[error("shard {path} fails its checksum: sha256 {found}, the manifest says {expected}")]
    Checksum {
        path: String,
        found: String,
        expected: String,
    },
    #[error("cannot read shard {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the {split} split has {tokens} tokens, fewer than one batch ({need})")]
    TooSmall {
        split: &'static str,
        tokens: u64,
        need: u64,
    },
}

/// One shard of a split: its path and number of row groups.
#[derive(Clone, Debug)]
pub struct ShardSource {
    pub path: PathBuf,
    pub row_groups: usize,
}

/// The shards of `split`, each checked against the manifest (present, same size, and with
/// `verify`, same sha256) and opened once to count its row groups.
pub fn open_split(
    dir: &Path,
    manifest: &Manifest,
    split: Split,
    verify: bool,
) -> Result<Vec<ShardSource>, LoadError> {
    let mut out = Vec::new();
    for entry in manifest.shards(split) {
        let path = dir.join(&entry.file);
        let shown = path.display().to_string();
        let meta = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::Missing(shown))
            }
            Err(e) => {
                return Err(LoadError::Io {
                    path: shown,
                    source: e,
                })
            }
            Ok(m) => m,
        };
        if meta.len() != entry.bytes {
            return Err(LoadError::Size {
                path: shown,
                found: meta.len(),
                expected: entry.bytes,
            });
        }
        if verify {
            let found = sha256_file(&path).map_err(|source| LoadError::Io {
                path: shown.clone(),
                source,
            })?;
            if found != entry.sha256 {
                return Err(LoadError::Checksum {
                    path: shown,
                    found,
                    expected: entry.sha256.clone(),
                });
            }
        }
        let reader = ShardReader::open(&path)?;
        out.push(ShardSource {
            path,
            row_groups: reader.num_row_groups(),
        });
    }
    Ok(out)
}

/// The (shard, row group) pairs of one epoch, in the order they are read.
pub fn epoch_units(
    shards: &[ShardSource],
    seed: u64,
    epoch: u64,
    shuffle: bool,
) -> Vec<(usize, usize)> {
    let order = if shuffle {
        permutation(shards.len(), &mut SplitMix64::derive(seed, &[epoch]))
    } else {
        (0..shards.len()).collect()
    };
    let mut units = Vec::new();
    for s in order {
        let n = shards[s].row_groups;
        let rgs = if shuffle {
            permutation(n, &mut SplitMix64::derive(seed, &[epoch, s as u64 + 1]))
        } else {
            (0..n).collect()
        };
        units.extend(rgs.into_iter().map(|r| (s, r)));
    }
    units
}

/// Where the packer is in the stream, with everything needed to continue it exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// Index into [`epoch_units`] of the row group being packed.
    pub unit: usize,
    pub row: usize,
    pub tok: usize,
    pub row_begun: bool,
    pub packer: Packer,
    pub buffer: ShuffleBuffer<Window>,
    /// Batches produced so far.
    pub batches: u64,
}

impl LoaderState {
    pub fn start(opts: &LoaderOptions) -> Self {
        LoaderState {
            epoch: 0,
            unit: 0,
            row: 0,
            tok: 0,
            row_begun: false,
            packer: Packer::new(opts.seq_len, opts.eos),
            buffer: ShuffleBuffer::new(
                opts.shuffle_buffer,
                SplitMix64::derive(opts.seed, &[u64::MAX]),
            ),
            batches: 0,
        }
    }
}

/// Settings of a loader.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub seq_len: usize,
    pub batch_size: usize,
    pub eos: u32,
    pub seed: u64,
    /// Windows held for shuffling (0: in stream order).
    pub shuffle_buffer: usize,
    /// Shuffle shard and row-group order per epoch.
    pub shuffle: bool,
    /// Finished batches queued ahead of the loop.
    pub prefetch: usize,
    pub threads: usize,
    /// `None`: cycle forever (training); `Some(n)`: stop after n epochs (eval).
    pub epochs: Option<u64>,
    /// Attach a [`LoaderState`] to the batch that brings the count of batches to `n` when
    /// `n` is a multiple of this (0: never).
    pub snapshot_every: u64,
}

/// A batch, its epoch, and if asked for, the loader state right after it.
pub struct Item {
    pub batch: Batch,
    pub epoch: u64,
    pub state: Option<LoaderState>,
}

/// A running loader; dropping it stops its threads.
pub struct Loader {
    rx: Option<Receiver<Result<Item, LoadError>>>,
    threads: Vec<JoinHandle<()>>,
}

type Decoded = (u64, usize, Result<(Vec<u64>, TokenLists), ReadError>);

impl Loader {
    /// Starts the threads at `state` (fresh: [`LoaderState::start`]).
    pub fn spawn(shards: Vec<ShardSource>, opts: LoaderOptions, state: LoaderState) -> Loader {
        let k = opts.threads.max(1);
        let (tx, rx) = bounded(opts.prefetch.max(1));
        let mut threads = Vec::new();
        let mut worker_rx = Vec::new();
        for w in 0..k {
            let (wtx, wrx) = bounded(2);
            worker_rx.push(wrx);
            let (shards, opts, start) = (shards.clone(), opts.clone(), (state.epoch, state.unit));
            threads.push(std::thread::spawn(move || {
                read_units(&shards, &opts, start, w, k, wtx)
            }));
        }
        threads.push(std::thread::spawn(move || {
            pack_units(&shards, &opts, state, worker_rx, tx)
        }));
        Loader {
            rx: Some(rx),
            threads,
        }
    }

    /// The next batch, or `None` at the end of a finite stream.
    pub fn recv(&self) -> Option<Result<Item, LoadError>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the packer's send fail, which closes the workers' channels.
        self.rx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Worker `w` of `k` decodes every k-th row group of the stream, from `start` on.
fn read_units(
    shards: &[ShardSource],
    opts: &LoaderOptions,
    start: (u64, usize),
    w: usize,
    k: usize,
    tx: Sender<Decoded>,
) {
    let mut current: Option<(usize, ShardReader)> = None;
    let mut seq = 0usize;
    let (mut epoch, mut first) = start;
    loop {
        if opts.epochs.is_some_and(|n| epoch >= n) {
            return;
        }
        let units = epoch_units(shards, opts.seed, epoch, opts.shuffle);
        for (u, &(s, rg)) in units.iter().enumerate().skip(first) {
            seq += 1;
            if (seq - 1) % k != w {
                continue;
            }
            // Row groups of a shard come together, so one open reader per worker suffices
            // (keeping every shard's footer would grow with the corpus).
            if current.as_ref().is_none_or(|(i, _)| *i != s) {
                match ShardReader::open(&shards[s].path) {
                    Ok(r) => current = Some((s, r)),
                    Err(err) => {
                        let _ = tx.send((epoch, u, Err(err)));
                        return;
                    }
                }
            }
            let Some((_, reader)) = current.as_ref() else {
                return;
            };
            let decoded = reader
                .read(rg, &[Column::DocId, Column::Tokens])
                .map(|c| (c.doc_id, c.tokens));
            let failed = decoded.is_err();
            if tx.send((epoch, u, decoded)).is_err() || failed {
                return;
            }
        }
        if units.is_empty() {
            return;
        }
        first = 0;
        epoch += 1;
    }
}

/// Takes row groups from the workers in stream order, packs, shuffles and batches them.
fn pack_units(
    shards: &[ShardSource],
    opts: &LoaderOptions,
    mut st: LoaderState,
    workers: Vec<Receiver<Decoded>>,
    tx: Sender<Result<Item, LoadError>>,
) {
    let b = opts.batch_size;
    let mut units_in_epoch = epoch_units(shards, opts.seed, st.epoch, opts.shuffle).len();
    let mut pending: Vec<Window> = Vec::with_capacity(b);
    let mut seq = 0usize;
    while let Ok((epoch, unit, decoded)) = workers[seq % workers.len()].recv() {
        seq += 1;
        debug_assert_eq!((epoch, unit), (st.epoch, st.unit));
        let (doc_ids, tokens) = match decoded {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return;
            }
        };
        while st.row < doc_ids.len() {
            let row = tokens.get(st.row).unwrap_or(&[]);
            if !st.row_begun {
                st.packer.begin_row(doc_ids[st.row]);
                st.row_begun = true;
            }
            while let Some(w) = st.packer.next_window(row, &mut st.tok) {
                let Some(w) = st.buffer.push(w) else { continue };
                pending.push(w);
                if pending.len() < b {
                    continue;
                }
                st.batches += 1;
                let snapshot =
                    opts.snapshot_every > 0 && st.batches.is_multiple_of(opts.snapshot_every);
                let item = Item {
                    batch: Batch::from_windows(&pending, opts.seq_len),
                    epoch: st.epoch,
                    state: snapshot.then(|| st.clone()),
                };
                pending.clear();
                if tx.send(Ok(item)).is_err() {
                    return;
                }
            }
            st.row += 1;
            st.tok = 0;
            st.row_begun = false;
        }
        st.row = 0;
        st.unit += 1;
        if st.unit >= units_in_epoch {
            st.unit = 0;
            st.epoch += 1;
            units_in_epoch = epoch_units(shards, opts.seed, st.epoch, opts.shuffle).len();
        }
    }
    // A finite stream ends: what the shuffle buffer still holds makes the last full batches.
    for w in st.buffer.drain() {
        pending.push(w);
        if pending.len() == b {
            let item = Item {
                batch: Batch::from_windows(&pending, opts.seq_len),
                epoch: st.epoch,
                state: None,
            };
            pending.clear();
            if tx.send(Ok(item)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
