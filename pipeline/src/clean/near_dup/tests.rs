//! Copies of one document edited at 1%, 5% and 30% of their words, against the threshold
//! the module doc states.

use std::collections::HashSet;

use super::*;

/// A small deterministic generator, so the corpus is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn vocabulary() -> Vec<String> {
    (0..2000).map(|i| format!("w{i}x")).collect()
}

fn document(rng: &mut Rng, words: usize) -> Vec<String> {
    let vocab = vocabulary();
    (0..words)
        .map(|_| vocab[rng.below(vocab.len())].clone())
        .collect()
}

/// `doc` with `fraction` of its words replaced by other words.
fn edited(rng: &mut Rng, doc: &[String], fraction: f64) -> Vec<String> {
    let vocab = vocabulary();
    let mut out = doc.to_vec();
    let changes = (doc.len() as f64 * fraction).round() as usize;
    for _ in 0..changes {
        let at = rng.below(out.len());
        out[at] = vocab[rng.below(vocab.len())].clone();
    }
    out
}

fn jaccard(a: &[String], b: &[String]) -> f64 {
    let set = |d: &[String]| -> HashSet<Vec<String>> {
        d.windows(SHINGLE_WORDS).map(|w| w.to_vec()).collect()
    };
    let (a, b) = (set(a), set(b));
    a.intersection(&b).count() as f64 / a.union(&b).count() as f64
}

/// How many of `copies` edited at `fraction` share a band with the original, and their mean
/// Jaccard similarity to it.
fn caught(fraction: f64, copies: usize) -> (usize, f64) {
    let mut rng = Rng(0x5EED);
    let (mut hits, mut similarity) = (0, 0.0);
    for _ in 0..copies {
        let original = document(&mut rng, 1000);
        let copy = edited(&mut rng, &original, fraction);
        similarity += jaccard(&original, &copy) / copies as f64;
        let mut seen = Seen::default();
        assert!(seen.check(&bands(&original.join(" ")), &0).is_none());
        hits += seen.check(&bands(&copy.join(" ")), &1).is_some() as usize;
    }
    (hits, similarity)
}

#[test]
fn one_percent_edits_are_near_duplicates() {
    let (hits, j) = caught(0.01, 40);
    assert!(j > 0.85, "{j}");
    assert_eq!(hits, 40);
}

#[test]
fn five_percent_edits_sit_near_the_threshold() {
    // J near 0.63: 1 - (1 - J^8)^14 is about 0.3, so some copies are caught and most not.
    let (hits, j) = caught(0.05, 40);
    assert!((0.55..0.72).contains(&j), "{j}");
    assert!((2..=24).contains(&hits), "{hits} of 40");
}

#[test]
fn thirty_percent_edits_are_kept() {
    let (hits, j) = caught(0.30, 40);
    assert!(j < 0.2, "{j}");
    assert_eq!(hits, 0);
}

#[test]
fn case_and_punctuation_do_not_matter_and_short_texts_have_no_bands() {
    let a = "The quick brown fox jumps over the lazy dog near the river bank today";
    let b = "the QUICK brown fox, jumps over the lazy dog -- near the river bank today!";
    assert_eq!(bands(a), bands(b));
    assert_eq!(bands(a).len(), BANDS);
    assert!(bands("too short").is_empty());
    assert!(bands("").is_empty());
}
