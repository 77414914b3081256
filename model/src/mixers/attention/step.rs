//! Attention in the CPU fast step ([`crate::decode`]): q, k, v of every token through their
//! matrices together, then token by token RoPE at its position, its key and value appended to
//! the layer's, and each query head's softmax over the keys so far; o_proj. Same arithmetic as
//! [`Attention::step`](super::Attention::step).

use candle_core::Result;

use super::Attention;
use crate::config::AttnConfig;
use crate::kernels::rows::{fast_mixer, RunArgs, Weights};

/// An attention layer's weights for the step, with RoPE's frequencies computed once.
pub(crate) struct Step {
    w: Weights,
    a: AttnConfig,
    inv_freq: Vec<f32>,
}

impl Step {
    pub(crate) fn new(m: &Attention, int8: bool) -> Result<Step> {
        Ok(Step {
            w: Weights::new(m.p.named_with_init(), int8)?,
            a: m.a.clone(),
            inv_freq: m.inv_freq(),
        })
    }

    /// RoPE at position `pos` on each head of `x` (heads x head_dim).
    #[inline(always)]
    fn rope(&self, x: &mut [f32], pos: usize) {
        let half = self.inv_freq.len();
        for head in x.chunks_mut(self.a.head_dim) {
            for (i, f) in self.inv_freq.iter().enumerate() {
                let (sin, cos) = (pos as f32 * f).sin_cos();
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * cos - x2 * sin;
                head[i + half] = x2 * cos + x1 * sin;
            }
        }
    }

    /// Each token in turn: `conv` the keys so far, `ssm` the values (a row of KV x head_dim
    /// per position), both growing by the token's.
    #[inline(always)]
    fn run_body(&self, a: RunArgs) -> Result<()> {
        let (h, keys, values, sc, out, threads) = (a.h, a.conv, a.ssm, a.scratch, a.out, a.threads);
        let (heads, kv, hd) = (self.a.heads, self.a.kv_heads, self.a.head_dim);
        let scale = self.a.scale.unwrap_or(1.0 / (hd as f64).sqrt()) as f32;
        let tokens = h.len();
        self.w.with(|m| {
            let [q, k, v, y] = sc.take([
                (tokens, heads * hd),
                (tokens, kv * hd),
                (tokens, kv * hd),
                (tokens, heads * hd),
            ]);
            m.mat("q_proj.weight")?.matmul(h, q, threads);
            m.mat("k_proj.weight")?.matmul(h, k, threads);
            m.mat("v_proj.weight")?.matmul(h, v, threads);
            let mut scores = Vec::new();
            for (((q, k), v), y) in q
                .iter_mut()
                .zip(k.iter_mut())
                .zip(v.iter())
                .zip(y.iter_mut())
            {
                let pos = keys.len() / (kv * hd);
                self.rope(q, pos);
                self.rope(k, pos);
                keys.extend_from_slice(k);
                values.extend_from_slice(v);
                let n = pos + 1;
                for head in 0..heads {
                    let g = head / (heads / kv);
                    let qh = &q[head * hd..(head + 1) * hd];
                    let at = |j: usize| (j * kv + g) * hd;
                    scores.clear();
                    scores.extend((0..n).map(|j| {
                        let kj = &keys[at(j)..at(j) + hd];
                        qh.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale
                    }));
                    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
                    scores.iter_mut().for_each(|s| *s = (*s - max).exp());
                    let total: f32 = scores.iter().sum();
                    let yh = &mut y[head * hd..(head + 1) * hd];
                    yh.fill(0.0);
                    for (j, p) in scores.iter().enumerate() {
                        let vj = &values[at(j)..at(j) + hd];
                        yh.iter_mut().zip(vj).for_each(|(o, x)| *o += p / total * x);
                    }
                }
            }
            m.mat("o_proj.weight")?.matmul(y, out, threads);
            Ok(())
        })
    }
}

fast_mixer!(Step);
