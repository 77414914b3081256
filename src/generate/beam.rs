//! Beam search: keeps the `num_beams` continuations of highest total log-probability, all
//! live beams decoded together as one batch of recurrent states (reordered by parent at every
//! step). A beam that emits EOS is finished and competes with its score as it stands; scores
//! are plain sums of log-probabilities (no length penalty).

use candle_core::Result;
use mamba_model::Decoder;

/// One finished or cut-off continuation (without the prompt).
#[derive(Clone, Debug, PartialEq)]
pub struct Beam {
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of `tokens`.
    pub score: f64,
    /// Ended with EOS.
    pub done: bool,
}

/// log-softmax of each row of `logits` (over the padded vocabulary), over the first `vocab`
/// entries.
fn log_probs(logits: &[Vec<f32>], vocab: usize) -> Vec<Vec<f64>> {
    logits
        .iter()
        .map(|r| {
            let r = &r[..vocab];
            let max = r.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let lse = max + r.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            r.iter().map(|&x| x as f64 - lse).collect()
        })
        .collect()
}

/// The `num_beams` best continuations of `prompt` of at most `max_new` tokens, best first,
/// over the first `vocab` tokens.
pub fn beam_search(
    decoder: &Decoder,
    vocab: usize,
    prompt: &[u32],
    num_beams: usize,
    max_new: usize,
    eos: Option<u32>,
) -> Result<Vec<Beam>> {
    let (mut state, logits) = decoder.prefill(&[prompt])?;
    let mut rows = log_probs(&logits, vocab);
    let mut beams = vec![Beam {
        tokens: Vec::new(),
        score: 0.0,
        done: false,
    }];
    for step in 0..max_new {
        // (score, parent beam, token or None for a finished beam carried over)
        let mut cands: Vec<(f64, usize, Option<u32>)> = Vec::new();
        let mut live = 0;
        let mut row_of = vec![usize::MAX; beams.len()];
        for (i, b) in beams.iter().enumerate() {
            if b.done {
                cands.push((b.score, i, None));
                continue;
            }
            row_of[i] = live;
            for (t, lp) in rows[live].iter().enumerate() {
                cands.push((b.score + lp, i, Some(t as u32)));
            }
            live += 1;
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        cands.truncate(num_beams.max(1));
        let mut next = Vec::with_capacity(cands.len());
        let (mut parents, mut feed) = (Vec::new(), Vec::new());
        for (score, parent, tok) in cands {
            let mut b = beams[parent].clone();
            b.score = score;
            if let Some(t) = tok {
                b.tokens.push(t);
                b.done = Some(t) == eos;
                if !b.done {
                    parents.push(row_of[parent]);
                    feed.push(t);
                }
            }
            next.push(b);
        }
        beams = next;
        if feed.is_empty() || step + 1 == max_new {
            break;
        }
        state = state.select(&parents)?;
        rows = log_probs(&decoder.step(&feed, &mut state)?, vocab);
    }
    beams.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(beams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use mamba_model::{Config, MambaLM};

    /// Sum of log p(seq | prompt) from one full forward over prompt + seq.
    fn score(model: &MambaLM, prompt: &[u32], seq: &[u32], vocab: usize) -> f64 {
        let all: Vec<u32> = prompt.iter().chain(seq).copied().collect();
        let ids = Tensor::from_slice(&all, (1, all.len()), &Device::Cpu).unwrap();
        let logits = model.forward(&ids, None).unwrap().squeeze(0).unwrap();
        let rows = log_probs(&logits.to_vec2::<f32>().unwrap(), vocab);
        seq.iter()
            .enumerate()
            .map(|(i, &t)| rows[prompt.len() - 1 + i][t as usize])
            .sum()
    }

    /// Every continuation of up to `len` tokens (ending early only at EOS), with its score.
    fn brute_force(
        model: &MambaLM,
        prompt: &[u32],
        len: usize,
        vocab: usize,
        eos: u32,
    ) -> Vec<(Vec<u32>, f64)> {
        let mut out = Vec::new();
        let mut stack = vec![Vec::<u32>::new()];
        while let Some(seq) = stack.pop() {
            let ended = seq.last() == Some(&eos) || seq.len() == len;
            if ended {
                out.push((seq.clone(), score(model, prompt, &seq, vocab)));
                continue;
            }
            for t in 0..vocab as u32 {
                let mut s = seq.clone();
                s.push(t);
                stack.push(s);
            }
        }
        out
    }

    #[test]
    fn wide_beams_find_the_brute_force_optimum() {
        let vocab = 5;
        let cfg = Config::preset("tiny", vocab).unwrap();
        let dev = Device::Cpu;
        let (len, eos) = (3, 4u32);
        let prompt = [1u32, 3, 2, 0, 1];
        for seed in [1, 2, 3] {
            let (model, _) = MambaLM::init(&cfg, seed, &dev).unwrap();
            let mut all = brute_force(&model, &prompt, len, vocab, eos);
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            // vocab^(len-1) beams hold every prefix: the search is exhaustive.
            let dec = model.decoder().unwrap();
            let beams = beam_search(&dec, vocab, &prompt, vocab * vocab, len, Some(eos)).unwrap();
            assert_eq!(beams[0].tokens, all[0].0, "seed {seed}");
            assert!((beams[0].score - all[0].1).abs() < 1e-4);
            assert_eq!(beams[0].done, all[0].0.last() == Some(&eos));
            // The top beams are the top sequences, in order.
            for (b, (seq, s)) in beams.iter().zip(&all).take(5) {
                assert_eq!(&b.tokens, seq);
                assert!((b.score - s).abs() < 1e-4);
            }
            // One beam is greedy decoding.
            let greedy = beam_search(&dec, vocab, &prompt, 1, len, None).unwrap();
            let mut seq = Vec::new();
            for _ in 0..len {
                let all: Vec<u32> = prompt.iter().chain(&seq).copied().collect();
                let ids = Tensor::from_slice(&all, (1, all.len()), &dev).unwrap();
                let l = model.forward(&ids, None).unwrap().squeeze(0).unwrap();
                let last = l.get(all.len() - 1).unwrap().to_vec1::<f32>().unwrap();
                seq.push(super::super::sampling::argmax(&last[..vocab]) as u32);
            }
            assert_eq!(greedy[0].tokens, seq);
        }
    }
}
