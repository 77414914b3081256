//! Choosing the next token from logits: repetition penalty (Keskar et al. 2019, CTRL: a seen
//! token's positive logit is divided by the penalty, a negative one multiplied), temperature,
//! top-k, top-p (nucleus, Holtzman et al. 2019), then a draw from a seeded generator; or the
//! argmax when the temperature is 0. Everything runs on plain `f32` slices over the real
//! vocabulary (the padded tail of the embedding is never a candidate).

use crate::train::shuffle::SplitMix64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplingError {
    #[error("--temperature {0} is out of range: use 0 (greedy) or a positive number")]
    Temperature(f32),
    #[error("--top-p {0} is out of range: use a number in (0, 1]")]
    TopP(f32),
    #[error("--repetition-penalty {0} is out of range: use a positive number (1 = none)")]
    Penalty(f32),
}

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// 0: greedy.
    pub temperature: f32,
    /// 0: no top-k.
    pub top_k: usize,
    /// 1: no nucleus cut.
    pub top_p: f32,
    /// 1: none.
    pub repetition_penalty: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingConfig {
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(SamplingError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError::TopP(self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(SamplingError::Penalty(self.repetition_penalty));
        }
        Ok(())
    }
}

/// Divides positive and multiplies negative logits of every token in `seen` by `penalty`.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &t in seen {
        let t = t as usize;
        if t < logits.len() && !done[t] {
            done[t] = true;
            let x = logits[t];
            logits[t] = if x > 0.0 { x / penalty } else { x * penalty };
        }
    }
}

/// Token ids ordered by logit, highest first (ties by id, so the order is deterministic).
fn ranked(logits: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx
}

/// Keeps the `k` highest logits, setting the rest to -inf (0 or k >= len: no change).
pub fn top_k_mask(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    for &i in &ranked(logits)[k..] {
        logits[i] = f32::NEG_INFINITY;
    }
}

/// Softmax of `logits` in f64 (masked entries at -inf get probability 0).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let mut p: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= sum);
    p
}

/// Keeps the smallest set of most likely tokens whose probability reaches `p` (at least
/// one), setting the rest to -inf.
pub fn top_p_mask(logits: &mut [f32], p: f32) {
    if p >= 1.0 {
        return;
    }
    let probs = softmax(logits);
    let order = ranked(logits);
    let mut cum = 0.0;
    let mut keep = order.len();
    for (n, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum >= p as f64 {
            keep = n + 1;
            break;
        }
    }
    for &i in &order[keep..] {
        logits[i] = f32::NEG_INFINITY;
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// A sampler with its own seeded generator: the same seed and logits give the same tokens.
pub struct Sampler {
    pub cfg: SamplingConfig,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(cfg: SamplingConfig, seed: u64) -> Result<Sampler, SamplingError> {
        cfg.validate()?;
        Ok(Sampler {
            cfg,
            rng: SplitMix64::new(seed),
        })
    }

    /// The next token given `logits` over the vocabulary and the tokens so far (`history`,
    /// for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut l = logits.to_vec();
        apply_repetition_penalty(&mut l, history, self.cfg.repetition_penalty);
        if self.cfg.temperature == 0.0 {
            return argmax(&l) as u32;
        }
        l.iter_mut().for_each(|x| *x /= self.cfg.temperature);
        top_k_mask(&mut l, self.cfg.top_k);
        top_p_mask(&mut l, self.cfg.top_p);
        let probs = softmax(&l);
        // 53 random bits -> a uniform draw in [0, 1).
        let r = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut cum = 0.0;
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                cum += p;
                last = i;
                if r < cum {
                    return i as u32;
                }
            }
        }
        last as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_exactly_the_k_largest() {
        let mut l = vec![0.5, 3.0, -1.0, 2.0, 2.5];
        top_k_mask(&mut l, 2);
        let kept: Vec<usize> = (0..5).filter(|&i| l[i].is_finite()).collect();
        assert_eq!(kept, vec![1, 4]);
        assert_eq!(l[1], 3.0);
        let mut all = vec![1.0, 2.0];
        top_k_mask(&mut all, 0);
        assert_eq!(all, vec![1.0, 2.0]);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // probabilities 0.5, 0.25, 0.125, 0.125
        let base: Vec<f32> = [0.5f32, 0.25, 0.125, 0.125]
            .iter()
            .map(|p| p.ln())
            .collect();
        let kept = |p: f32| {
            let mut l = base.clone();
            top_p_mask(&mut l, p);
            (0..4).filter(|&i| l[i].is_finite()).collect::<Vec<_>>()
        };
        assert_eq!(kept(0.4), vec![0]);
        assert_eq!(kept(0.5), vec![0]);
        assert_eq!(kept(0.6), vec![0, 1]);
        assert_eq!(kept(0.8), vec![0, 1, 2]);
        assert_eq!(kept(1.0), vec![0, 1, 2, 3]);
    }

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn same_seed_same_tokens_and_the_masks_hold() {
        let cfg = SamplingConfig {
            temperature: 0.8,
            top_k: 3,
            top_p: 1.0,
            repetition_penalty: 1.0,
        };
        let logits: Vec<f32> = (0..20).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(cfg.clone(), seed).unwrap();
            (0..200)
                .map(|_| s.sample(&logits, &[]))
                .collect::<Vec<u32>>()
        };
        let (a, b, c) = (draw(1), draw(1), draw(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut top = logits.clone();
        top_k_mask(&mut top, 3);
        assert!(a.iter().all(|&t| top[t as usize].is_finite()));
        // Each of the three is drawn: the draw is random, not an argmax.
        for t in (0..20).filter(|&i| top[i].is_finite()) {
            assert!(a.contains(&(t as u32)), "token {t} never drawn");
        }
    }

    #[test]
    fn draws_follow_the_distribution() {
        let logits: Vec<f32> = [0.7f32, 0.2, 0.1].iter().map(|p| p.ln()).collect();
        let mut s = Sampler::new(SamplingConfig::default(), 3).unwrap();
        let mut counts = [0usize; 3];
        for _ in 0..20000 {
            counts[s.sample(&logits, &[]) as usize] += 1;
        }
        let share = counts[0] as f64 / 20000.0;
        assert!((share - 0.7).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn greedy_and_bad_values() {
        let mut s = Sampler::new(
            SamplingConfig {
                temperature: 0.0,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        assert_eq!(s.sample(&[0.1, 0.9, 0.3], &[]), 1);
        let bad = |cfg: SamplingConfig| Sampler::new(cfg, 0).err().unwrap();
        let d = SamplingConfig::default;
        assert_eq!(
            bad(SamplingConfig {
                temperature: -1.0,
                ..d()
            }),
            SamplingError::Temperature(-1.0)
        );
        assert_eq!(
            bad(SamplingConfig { top_p: 0.0, ..d() }),
            SamplingError::TopP(0.0)
        );
        assert_eq!(
            bad(SamplingConfig {
                repetition_penalty: 0.0,
                ..d()
            }),
            SamplingError::Penalty(0.0)
        );
    }
}
