//! `--sample N`: N chunks of the train split drawn at random with a seed, decoded, so a
//! person can read what the model will be fed. Only the row groups that hold a drawn chunk
//! are read.

use std::collections::BTreeSet;
use std::path::Path;

use tokenizers::Tokenizer;

use super::report::Sample;
use super::InspectError;
use crate::shard::manifest::Manifest;
use crate::shard::reader::ShardReader;
use crate::shard::Split;

/// SplitMix64: a tiny, well-mixed generator; the seed alone fixes the draw.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `n` distinct row numbers below `rows`, sorted (all of them when `n >= rows`).
pub fn draw(rows: u64, n: usize, seed: u64) -> Vec<u64> {
    if n as u64 >= rows {
        return (0..rows).collect();
    }
    let mut rng = SplitMix(seed);
    let mut picked = BTreeSet::new();
    while picked.len() < n {
        picked.insert(rng.next() % rows);
    }
    picked.into_iter().collect()
}

/// Draws from the train split, or from val when train is empty.
pub fn sample(
    dir: &Path,
    manifest: &Manifest,
    tokenizer: &Tokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Sample>, InspectError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let split = if manifest.shards(Split::Train).any(|s| s.rows > 0) {
        Split::Train
    } else {
        Split::Val
    };
    let rows: u64 = manifest.shards(split).map(|s| s.rows).sum();
    let mut wanted = draw(rows, n, seed).into_iter().peekable();
    let mut out = Vec::new();
    let mut first = 0u64;
    for entry in manifest.shards(split) {
        if wanted.peek().is_none() {
            break;
        }
        let reader = ShardReader::open(&dir.join(&entry.file))?;
        for g in 0..reader.num_row_groups() {
            let end = first + reader.row_group_rows(g);
            if wanted.peek().is_some_and(|&w| w < end) {
                let rows = reader.row_group(g)?;
                while let Some(w) = wanted.next_if(|&w| w < end) {
                    let row = (w - first) as usize;
                    let Some(r) = rows.get(row) else { continue };
                    out.push(Sample {
                        file: entry.file.clone(),
                        row_group: g,
                        row,
                        source: r.source.clone(),
                        doc_id: r.doc_id,
                        chunk: r.chunk,
                        n_tokens: r.n_tokens,
                        text: tokenizer.decode(&r.tokens, false).map_err(|e| {
                            InspectError::Tokenizer {
                                path: manifest.tokenizer.file.clone(),
                                reason: e.to_string(),
                            }
                        })?,
                    });
                }
            }
            first = end;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_distinct_sorted_seeded_and_in_range() {
        let a = draw(1000, 20, 7);
        assert_eq!(a.len(), 20);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(a.iter().all(|&r| r < 1000));
        assert_eq!(a, draw(1000, 20, 7));
        assert_ne!(a, draw(1000, 20, 8));
        assert_eq!(draw(5, 9, 1), vec![0, 1, 2, 3, 4]);
        assert!(draw(0, 3, 1).is_empty());
    }
}
