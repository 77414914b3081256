//! Length distributions in bounded memory: exact counts for short lengths, and buckets of
//! less than 1% relative width above, so percentiles of a billion chunks need a few
//! thousand counters rather than a billion lengths.

use std::collections::BTreeMap;

use serde::Serialize;

/// Lengths below this are counted exactly (chunks of the default 16 KiB are shorter).
const EXACT_BELOW: u64 = 8192;
/// Significant bits kept above [`EXACT_BELOW`]: 8 bits, so a bucket is at most 1/128 of
/// its lower bound wide.
const KEPT_BITS: u32 = 8;
/// The percentiles reported.
pub const PERCENTILES: [u8; 5] = [10, 25, 50, 90, 99];

#[derive(Clone, Debug, Default)]
pub struct LengthHistogram {
    /// Bucket lower bound -> count.
    buckets: BTreeMap<u64, u64>,
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
}

/// A distribution as reported: percentiles and a histogram with power-of-two bins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Distribution {
    pub count: u64,
    pub total: u64,
    pub min: u64,
    pub max: u64,
    pub mean: f64,
    pub percentiles: Vec<Percentile>,
    pub histogram: Vec<Bin>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentile {
    pub p: u8,
    pub value: u64,
}

/// Lengths `lo..=hi`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    pub lo: u64,
    pub hi: u64,
    pub count: u64,
}

impl LengthHistogram {
    pub fn add(&mut self, len: u64) {
        *self.buckets.entry(bucket(len)).or_default() += 1;
        if self.count == 0 || len < self.min {
            self.min = len;
        }
        self.max = self.max.max(len);
        self.count += 1;
        self.sum += len;
    }

    /// The nearest-rank percentile `p`: the smallest length with at least `p`% of the
    /// lengths at or below it (exact below [`EXACT_BELOW`], a bucket's lower bound above).
    pub fn percentile(&self, p: u8) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = (u128::from(p) * u128::from(self.count))
            .div_ceil(100)
            .max(1) as u64;
        let mut seen = 0;
        for (&lo, &n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return lo.max(self.min);
            }
        }
        self.max
    }

    pub fn distribution(&self) -> Distribution {
        Distribution {
            count: self.count,
            total: self.sum,
            min: self.min,
            max: self.max,
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum as f64 / self.count as f64
            },
            percentiles: PERCENTILES
                .iter()
                .map(|&p| Percentile {
                    p,
                    value: self.percentile(p),
                })
                .collect(),
            histogram: self.bins(),
        }
    }

    /// Power-of-two bins from the shortest length to the longest, empty ones included so
    /// the chart's x axis is even. Buckets never straddle a power of two.
    fn bins(&self) -> Vec<Bin> {
        if self.count == 0 {
            return Vec::new();
        }
        let (first, last) = (power(self.min), power(self.max));
        let mut bins: Vec<Bin> = (first..=last)
            .map(|e| Bin {
                lo: if e == 0 { 0 } else { 1 << (e - 1) },
                hi: (1u64 << e) - 1,
                count: 0,
            })
            .collect();
        for (&lo, &n) in &self.buckets {
            bins[(power(lo) - first) as usize].count += n;
        }
        bins
    }
}

/// The bin of a length: 0 for 0, else `floor(log2(len)) + 1`.
fn power(len: u64) -> u32 {
    64 - len.leading_zeros()
}

fn bucket(len: u64) -> u64 {
    if len < EXACT_BELOW {
        return len;
    }
    let shift = power(len) - KEPT_BITS;
    (len >> shift) << shift
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentile over the sorted lengths.
    fn reference(sorted: &[u64], p: u8) -> u64 {
        let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn short_lengths_are_exact() {
        let mut lengths: Vec<u64> = (0..997u64).map(|i| (i * 7919) % 1000 + 1).collect();
        let mut h = LengthHistogram::default();
        lengths.iter().for_each(|&l| h.add(l));
        lengths.sort();
        let d = h.distribution();
        for p in &d.percentiles {
            assert_eq!(p.value, reference(&lengths, p.p), "p{}", p.p);
        }
        assert_eq!(d.min, lengths[0]);
        assert_eq!(d.max, *lengths.last().unwrap());
        assert_eq!(d.total, lengths.iter().sum::<u64>());
        assert_eq!(d.histogram.iter().map(|b| b.count).sum::<u64>(), 997);
        for b in &d.histogram {
            let n = lengths.iter().filter(|&&l| l >= b.lo && l <= b.hi).count() as u64;
            assert_eq!(b.count, n, "{b:?}");
        }
    }

    #[test]
    fn long_lengths_are_within_one_percent() {
        let mut lengths: Vec<u64> = (0..5000u64).map(|i| 8000 + i * i % 3_000_017).collect();
        let mut h = LengthHistogram::default();
        lengths.iter().for_each(|&l| h.add(l));
        lengths.sort();
        for p in PERCENTILES {
            let (got, want) = (h.percentile(p) as f64, reference(&lengths, p) as f64);
            assert!(got <= want && got >= want * 0.99, "p{p}: {got} vs {want}");
        }
        assert!(h.buckets.len() < 10_000, "{}", h.buckets.len());
    }

    #[test]
    fn empty_is_all_zero() {
        let d = LengthHistogram::default().distribution();
        assert_eq!((d.count, d.max, d.mean), (0, 0, 0.0));
        assert!(d.histogram.is_empty());
        assert!(d.percentiles.iter().all(|p| p.value == 0));
    }
}
