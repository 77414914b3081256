//! The trainer's evaluation set: the same batches of the val split at every periodic eval (its
//! first `eval_batches` batches in stream order), and what they cover, said on every eval line
//! so that the number is not taken for the whole split's. `mamba eval` reads a split through the
//! same [`eval_loader`], so told to score the tokens an eval covered (`--max-tokens`), it scores
//! the same windows to the same loss.

use super::loader::{LoadError, Loader, LoaderOptions, LoaderState, ShardSource};
use super::pack::Batch;
use super::ranks::Ranks;

/// The shortest window a small val split is evaluated with.
pub const MIN_EVAL_SEQ_LEN: usize = 16;

/// The val batches every periodic eval scores.
#[derive(Clone, Debug, Default)]
pub struct EvalSet {
    /// This rank's share of each batch (after [`EvalSet::shared`]).
    pub batches: Vec<Batch>,
    /// Whole batches of the split in the set.
    pub count: usize,
    /// Target tokens one eval scores over all ranks.
    pub tokens: u64,
    /// Whether the set is every batch the split fills, rather than its first `count`.
    pub whole_split: bool,
}

impl EvalSet {
    /// The first `n` batches of the val split `shards`, read in order with the training run's
    /// loader options `train` (without shuffling); empty when the split fills no batch.
    pub fn load(
        shards: &[ShardSource],
        train: &LoaderOptions,
        n: usize,
    ) -> Result<EvalSet, LoadError> {
        let opts = LoaderOptions {
            shuffle: false,
            shuffle_buffer: 0,
            epochs: Some(1),
            snapshot_every: 0,
            ..train.clone()
        };
        let Some((loader, first)) = eval_loader(shards, &opts)? else {
            return Ok(EvalSet::default());
        };
        let mut batches = vec![first];
        // One batch past the `n` says whether the split holds more than the set.
        let whole_split = loop {
            match loader.recv() {
                None => break true,
                Some(_) if batches.len() == n => break false,
                Some(item) => batches.push(item?.batch),
            }
        };
        let tokens = batches
            .iter()
            .map(|b| (b.batch_size * b.seq_len) as u64)
            .sum();
        Ok(EvalSet {
            count: batches.len(),
            batches,
            tokens,
            whole_split,
        })
    }

    /// Each rank scores its share of every batch (all of it when a batch is too small to split);
    /// the mean over the ranks is then the loss of the whole batches.
    pub fn shared(self, ranks: &Ranks) -> EvalSet {
        EvalSet {
            batches: self
                .batches
                .into_iter()
                .map(|b| ranks.share_whole(b))
                .collect(),
            ..self
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// What one eval scores: `the first 768 tokens of the val split (3 batches)`, or `all 2560
    /// tokens of the val split (20 batches)` when the set is every batch the split fills.
    pub fn covers(&self) -> String {
        let batches = match self.count {
            1 => "1 batch".to_string(),
            n => format!("{n} batches"),
        };
        match self.whole_split {
            true => format!("all {} tokens of the val split ({batches})", self.tokens),
            false => format!(
                "the first {} tokens of the val split ({batches})",
                self.tokens
            ),
        }
    }
}

/// A loader over a split with the options `opts` in the first of the [`eval_shapes`] the split
/// fills a batch of, and that first batch; `None` when it fills none.
pub fn eval_loader(
    shards: &[ShardSource],
    opts: &LoaderOptions,
) -> Result<Option<(Loader, Batch)>, LoadError> {
    for (batch_size, seq_len) in eval_shapes(opts.batch_size, opts.seq_len) {
        let opts = LoaderOptions {
            batch_size,
            seq_len,
            ..opts.clone()
        };
        let start = LoaderState::start(&opts);
        let loader = Loader::spawn(shards.to_vec(), opts, start);
        if let Some(first) = loader.recv() {
            return Ok(Some((loader, first?.batch)));
        }
    }
    Ok(None)
}

/// The batch shapes (batch size, window length) a split is evaluated with, in the order to
/// try them: the training shape; then, for a split smaller than one batch (a small corpus),
/// one window, halved until the split fills it, rather than no eval at all. `mamba eval`
/// takes the same fallback, so it scores what the trainer scored.
pub fn eval_shapes(batch_size: usize, seq_len: usize) -> Vec<(usize, usize)> {
    let mut shapes = vec![(batch_size, seq_len)];
    let mut seq_len = seq_len;
    while seq_len >= 2 * MIN_EVAL_SEQ_LEN {
        seq_len /= 2;
        shapes.push((1, seq_len));
    }
    shapes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::loader::open_split;
    use crate::train::testutil::{write_store, EOS};
    use mamba_pipeline::shard::manifest::Manifest;
    use mamba_pipeline::shard::Split;

    fn val(dir: &std::path::Path) -> Vec<ShardSource> {
        let manifest = Manifest::load(dir).unwrap();
        open_split(dir, &manifest, Split::Val, true).unwrap()
    }

    fn opts(batch_size: usize, seq_len: usize) -> LoaderOptions {
        LoaderOptions {
            seq_len,
            batch_size,
            eos: EOS,
            seed: 0,
            shuffle_buffer: 8,
            shuffle: true,
            prefetch: 2,
            threads: 2,
            epochs: None,
            snapshot_every: 0,
        }
    }

    #[test]
    fn the_set_says_whether_it_is_the_whole_split() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), 40);
        let shards = val(dir.path());
        let all = EvalSet::load(&shards, &opts(2, 8), 100_000).unwrap();
        assert!(all.whole_split && all.count > 2, "{}", all.covers());
        assert_eq!(all.tokens, all.count as u64 * 2 * 8);
        assert!(all
            .covers()
            .starts_with(&format!("all {} tokens", all.tokens)));
        let first = EvalSet::load(&shards, &opts(2, 8), 2).unwrap();
        assert!(!first.whole_split);
        assert_eq!(
            first.covers(),
            "the first 32 tokens of the val split (2 batches)"
        );
        assert_eq!(
            first.batches[..],
            all.batches[..2],
            "the same batches, in order"
        );
        // Exactly as many batches as the split fills: still all of it.
        let exact = EvalSet::load(&shards, &opts(2, 8), all.count).unwrap();
        assert!(exact.whole_split);
    }
}
