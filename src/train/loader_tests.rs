//! Loader tests on a generated store: every token delivered once per epoch in document order,
//! determinism, resume from a saved state, and damaged shards named in the error.

use super::*;
use crate::train::testutil::{doc_tokens, write_store, EOS};

fn opts(seed: u64, shuffle_buffer: usize, epochs: Option<u64>) -> LoaderOptions {
    LoaderOptions {
        seq_len: 8,
        batch_size: 2,
        eos: EOS,
        seed,
        shuffle_buffer,
        shuffle: true,
        prefetch: 2,
        threads: 3,
        epochs,
        snapshot_every: 5,
    }
}

fn store(docs: u64) -> (tempfile::TempDir, Vec<ShardSource>) {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path(), docs);
    let m = Manifest::load(dir.path()).unwrap();
    let shards = open_split(dir.path(), &m, Split::Train, true).unwrap();
    (dir, shards)
}

fn collect(shards: &[ShardSource], o: LoaderOptions, st: LoaderState, n: usize) -> Vec<Item> {
    let loader = Loader::spawn(shards.to_vec(), o, st);
    (0..n)
        .map_while(|_| loader.recv().map(|r| r.unwrap()))
        .collect()
}

#[test]
fn one_epoch_in_order_is_the_documents_joined_with_eos() {
    let (_d, shards) = store(40);
    assert!(shards.len() > 1 && shards[0].row_groups > 1, "{shards:?}");
    let o = LoaderOptions {
        shuffle: false,
        ..opts(1, 0, Some(1))
    };
    let items = collect(&shards, o.clone(), LoaderState::start(&o), usize::MAX);
    // The expected stream and where its documents start.
    let (mut stream, mut starts) = (Vec::new(), Vec::new());
    for d in 0..40u64 {
        if d > 0 {
            stream.push(EOS);
        }
        starts.push(stream.len());
        stream.extend(doc_tokens(d, 20 + (d as usize * 13) % 41));
    }
    // Window k covers stream[8k..8k + 9]; its inputs are the first 8 tokens.
    let mut k = 0;
    for it in &items {
        let b = &it.batch;
        for r in 0..b.batch_size {
            let at = k * 8;
            assert_eq!(b.inputs[r * 8..r * 8 + 8], stream[at..at + 8], "window {k}");
            assert_eq!(
                b.targets[r * 8..r * 8 + 8],
                stream[at + 1..at + 9],
                "window {k}"
            );
            for i in 0..8 {
                let start = starts.contains(&(at + i));
                assert_eq!(b.resets[r * 8 + i] == 1, start, "window {k} position {i}");
            }
            k += 1;
        }
    }
    // Only the tail that does not fill a batch is left out.
    assert!(
        stream.len() - (k * 8 + 1) < 2 * 8 + 1,
        "{} of {} tokens",
        k * 8,
        stream.len()
    );
}

#[test]
fn shuffling_is_seeded() {
    let (_d, shards) = store(40);
    let run = |seed| {
        let o = opts(seed, 16, None);
        collect(&shards, o.clone(), LoaderState::start(&o), 30)
            .into_iter()
            .map(|i| i.batch.inputs)
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
}

#[test]
fn resuming_from_a_snapshot_replays_the_same_batches() {
    let (_d, shards) = store(40);
    let o = opts(3, 16, None);
    // Far enough to cross epochs (40 docs ~ 1600 tokens ~ 100 batches of 16).
    let full = collect(&shards, o.clone(), LoaderState::start(&o), 260);
    let mut resumed = 0;
    for (i, item) in full.iter().enumerate() {
        let Some(st) = &item.state else { continue };
        assert_eq!(st.batches as usize, i + 1);
        if i % 45 != 44 {
            continue;
        }
        let saved: LoaderState = serde_json::from_str(&serde_json::to_string(st).unwrap()).unwrap();
        let rest = collect(&shards, o.clone(), saved, full.len() - i - 1);
        for (a, b) in full[i + 1..].iter().zip(&rest) {
            assert_eq!(a.batch, b.batch);
            assert_eq!(a.epoch, b.epoch);
        }
        resumed += 1;
    }
    assert!(resumed >= 4);
    assert!(
        full.last().unwrap().epoch >= 1,
        "the run never reached a second epoch"
    );
}

#[test]
fn damaged_shards_are_named() {
    let (dir, _) = store(40);
    let m = Manifest::load(dir.path()).unwrap();
    let victim = dir.path().join(&m.shards[1].file);
    let mut bytes = std::fs::read(&victim).unwrap();
    // Same size, one byte flipped: only the checksum notices.
    bytes[100] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let err = open_split(dir.path(), &m, Split::Train, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum") && err.contains(&m.shards[1].file),
        "{err}"
    );
    // Truncated.
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err = open_split(dir.path(), &m, Split::Train, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated") && err.contains(&m.shards[1].file),
        "{err}"
    );
    // Missing.
    std::fs::remove_file(&victim).unwrap();
    let err = open_split(dir.path(), &m, Split::Train, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains(&m.shards[1].file),
        "{err}"
    );
}

#[test]
fn a_corrupt_row_group_is_named_while_streaming() {
    let (dir, _) = store(40);
    let m = Manifest::load(dir.path()).unwrap();
    let shards = open_split(dir.path(), &m, Split::Train, true).unwrap();
    let victim = &shards[0].path;
    let mut bytes = std::fs::read(victim).unwrap();
    // Zero the data pages (the footer at the end stays readable).
    for b in bytes.iter_mut().skip(8).take(600) {
        *b = 0;
    }
    std::fs::write(victim, &bytes).unwrap();
    let o = LoaderOptions {
        shuffle: false,
        ..opts(0, 0, Some(1))
    };
    let loader = Loader::spawn(shards.clone(), o.clone(), LoaderState::start(&o));
    let err = std::iter::from_fn(|| loader.recv())
        .find_map(|r| r.err())
        .expect("a corrupt row group went unnoticed")
        .to_string();
    assert!(
        err.contains(&*victim.display().to_string()) && err.contains("row group"),
        "{err}"
    );
}
