//! Near-duplicates: MinHash signatures over word shingles, cut into LSH bands.
//!
//! The parameters are datatrove's defaults (`MinhashConfig`): shingles of 5 words, 14 bands
//! of 8 hashes (112 in all). Two documents share a band with probability 1 - (1 - J^8)^14
//! for a Jaccard similarity J of their shingle sets: the curve crosses 1/2 near J = 0.77
//! (its threshold (1/14)^(1/8) is 0.72). A copy with 1% of its words changed has J near
//! 0.9 and is caught with probability above 0.999; 5% gives J near 0.63 (caught about one
//! time in four); 30% gives J near 0.1 (never).
//!
//! Here only the band hashes are computed (in the extract workers); the decision is the
//! writer's, in walk order (see `ingest::tally`): a document sharing a band with any earlier
//! document is dropped, so the first of a cluster is kept at any thread count and in a
//! merge of parts, whose logs carry the bands.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Words per shingle.
pub const SHINGLE_WORDS: usize = 5;
/// Bands, and hashes per band.
pub const BANDS: usize = 14;
pub const ROWS: usize = 8;
const HASHES: usize = BANDS * ROWS;
/// Seed of the hash permutations (datatrove's default seed is 1 as well).
const SEED: u64 = 1;

/// The band hashes of `text`, one per band, each salted with its band's number so equal
/// values in different bands do not meet; empty for a text shorter than one shingle.
pub fn bands(text: &str) -> Vec<u64> {
    let words: Vec<u64> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(word_hash)
        .collect();
    if words.len() < SHINGLE_WORDS {
        return Vec::new();
    }
    let (a, b) = permutations();
    let mut mins = [u32::MAX; HASHES];
    for window in words.windows(SHINGLE_WORDS) {
        let mut h = 0u64;
        for w in window {
            h = (h.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        // An affine map mod 2^32 of a well-mixed shingle hash per permutation: 32-bit lanes,
        // so the loop runs on SIMD registers (a 64-bit product would not).
        let h = ((h >> 32) ^ h) as u32;
        for i in 0..HASHES {
            mins[i] = mins[i].min(a[i].wrapping_mul(h).wrapping_add(b[i]));
        }
    }
    mins.chunks(ROWS)
        .enumerate()
        .map(|(band, rows)| {
            let bytes: Vec<u8> = rows.iter().flat_map(|r| r.to_le_bytes()).collect();
            xxh3_64_with_seed(&bytes, band as u64)
        })
        .collect()
}

/// The hash of a word, case folded (without an allocation for the usual short ASCII word).
fn word_hash(word: &str) -> u64 {
    let mut buf = [0u8; 32];
    match word.len() <= buf.len() && word.is_ascii() {
        true => {
            let buf = &mut buf[..word.len()];
            buf.copy_from_slice(word.as_bytes());
            buf.make_ascii_lowercase();
            xxh3_64(buf)
        }
        false => xxh3_64(word.to_lowercase().as_bytes()),
    }
}

/// The multipliers (odd) and offsets of the hash family, the same in every run.
fn permutations() -> &'static ([u32; HASHES], [u32; HASHES]) {
    static PERMS: std::sync::OnceLock<([u32; HASHES], [u32; HASHES])> = std::sync::OnceLock::new();
    PERMS.get_or_init(|| {
        let mut state = SEED;
        let mut next = || {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut a = [0u32; HASHES];
        let mut b = [0u32; HASHES];
        for i in 0..HASHES {
            a[i] = (next() >> 32) as u32 | 1;
            b[i] = (next() >> 32) as u32;
        }
        (a, b)
    })
}

/// The band hashes seen so far, in walk order, each with what the first document that had
/// it came from (`T`: its source, in the writer).
pub struct Seen<T>(std::collections::HashMap<u64, T>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(Default::default())
    }
}

impl<T: Clone> Seen<T> {
    /// The origin of an earlier document that shares a band with this one, if any. The
    /// bands are remembered either way, so a chain of near copies forms one cluster.
    pub fn check(&mut self, bands: &[u64], origin: &T) -> Option<T> {
        let mut first = None;
        for band in bands {
            match self.0.get(band) {
                Some(earlier) => {
                    first.get_or_insert_with(|| earlier.clone());
                }
                None => {
                    self.0.insert(*band, origin.clone());
                }
            }
        }
        first
    }
}

#[cfg(test)]
mod tests;
