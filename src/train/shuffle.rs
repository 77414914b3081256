//! Seeded, serialisable randomness for the loader ([`SplitMix64`], one `u64` of state, so it can
//! be written into `trainer_state.json`): seeded permutations of shards and row
//! groups, and a bounded shuffle buffer of packed windows.

pub use mamba_model::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// A seeded permutation of `0..n` (Fisher-Yates).
pub fn permutation(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        p.swap(i, j);
    }
    p
}

/// A bounded shuffle buffer: items go in, and once it holds `capacity` items each push lets a
/// random one out. Memory is `capacity` items whatever the stream length; capacity 0 passes
/// items straight through (the val split is read in order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShuffleBuffer<T> {
    pub capacity: usize,
    pub items: Vec<T>,
    pub rng: SplitMix64,
}

impl<T> ShuffleBuffer<T> {
    pub fn new(capacity: usize, rng: SplitMix64) -> Self {
        ShuffleBuffer {
            capacity,
            items: Vec::with_capacity(capacity),
            rng,
        }
    }

    /// Adds `item`; returns one item (chosen at random) once the buffer is over capacity.
    pub fn push(&mut self, item: T) -> Option<T> {
        self.items.push(item);
        if self.items.len() <= self.capacity {
            return None;
        }
        let i = self.rng.below(self.items.len());
        Some(self.items.swap_remove(i))
    }

    /// Takes the remaining items out in random order (end of a finite stream).
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.items.len());
        while !self.items.is_empty() {
            let i = self.rng.below(self.items.len());
            out.push(self.items.swap_remove(i));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(100, &mut SplitMix64::derive(7, &[0]));
        let b = permutation(100, &mut SplitMix64::derive(7, &[0]));
        let c = permutation(100, &mut SplitMix64::derive(7, &[1]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, sorted, "a permutation of 100 left in order");
    }

    #[test]
    fn below_stays_in_range_and_spreads() {
        let mut rng = SplitMix64::new(1);
        let mut counts = [0usize; 10];
        for _ in 0..10_000 {
            counts[rng.below(10)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn shuffle_buffer_is_bounded_deterministic_and_loses_nothing() {
        let run = |seed| {
            let mut buf = ShuffleBuffer::new(8, SplitMix64::new(seed));
            let mut out = Vec::new();
            for i in 0..100 {
                out.extend(buf.push(i));
                assert!(buf.items.len() <= 8);
            }
            out.extend(buf.drain());
            out
        };
        let a = run(3);
        assert_eq!(a, run(3));
        assert_ne!(a, run(4));
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_resumed_buffer_continues_identically() {
        let mut buf = ShuffleBuffer::new(4, SplitMix64::new(9));
        let mut first = Vec::new();
        for i in 0..10 {
            first.extend(buf.push(i));
        }
        let saved: ShuffleBuffer<i32> =
            serde_json::from_str(&serde_json::to_string(&buf).unwrap()).unwrap();
        let mut resumed = saved;
        let rest_a: Vec<_> = (10..30).filter_map(|i| buf.push(i)).collect();
        let rest_b: Vec<_> = (10..30).filter_map(|i| resumed.push(i)).collect();
        assert_eq!(rest_a, rest_b);
    }

    #[test]
    fn capacity_zero_passes_through_in_order() {
        let mut buf = ShuffleBuffer::new(0, SplitMix64::new(0));
        let out: Vec<_> = (0..5).filter_map(|i| buf.push(i)).collect();
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
    }
}
