//! Causal self-attention as the hybrid families compute it (transformers' `BambaAttention`,
//! `GraniteMoeHybridAttention`, `NemotronHAttention`), with grouped key/value heads:
//!
//! ```text
//! q, k, v = h Wq^T, h Wk^T, h Wv^T        H query heads, KV key/value heads of head_dim
//! q, k    = rope(q, pos), rope(k, pos)    the first rotary_dim channels, halves rotated
//! y       = softmax(q k^T scale + mask) v query head i reads key/value head i / (H / KV)
//! out     = y Wo^T
//! ```
//!
//! In a packed sequence the mask keeps each position to its own document, and positions
//! count from the document's start, so a document is computed as it would be alone. The
//! recurrent state for generation is the keys (after RoPE) and values so far.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::state::MixerState;
use crate::config::{AttnConfig, Config};
use crate::error::Error;
use crate::layers::ops::linear;
use crate::layers::params::{param_table, Init};
use crate::lora::Lora;

pub(crate) mod step;

param_table! {
    /// Parameters of one attention layer, named as in transformers (`...q_proj.weight`).
    pub struct Params for c {
        q: "q_proj.weight", [c.attn.heads * c.attn.head_dim, c.d_model], Linear;
        k: "k_proj.weight", [c.attn.kv_heads * c.attn.head_dim, c.d_model], Linear;
        v: "v_proj.weight", [c.attn.kv_heads * c.attn.head_dim, c.d_model], Linear;
        o: "o_proj.weight", [c.d_model, c.attn.heads * c.attn.head_dim], OutProj;
    }
}

/// One attention layer: its parameters and sizes.
#[derive(Clone, Debug)]
pub struct Attention {
    pub(crate) p: Params,
    /// Adapters on its projections (none unless training with LoRA).
    pub(crate) lora: Lora,
    pub(crate) a: AttnConfig,
}

/// The projections LoRA adapts by default.
pub const LORA_TARGETS: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj"];

/// One sequence's state: keys and values so far, a row of KV x head_dim per position (the
/// leading 0 stands for "as many rows as positions").
pub fn state_shapes(c: &Config) -> (Vec<usize>, Vec<usize>) {
    let width = c.attn.kv_heads * c.attn.head_dim;
    (vec![0, width], vec![0, width])
}

/// Values backward keeps per token at context `seq_len` (candle keeps every op's inputs):
/// the residual, the norm output and o_proj's output; q, k, v; RoPE's halves and products for
/// q and k; the scaled q, the shared k and v; per query head the scores, masked, shifted,
/// exponentiated and normalised over the context; the attention output and its reshape.
pub fn activations_per_token(c: &Config, seq_len: usize) -> u64 {
    let a = &c.attn;
    let (q, kv) = (
        (a.heads * a.head_dim) as u64,
        (a.kv_heads * a.head_dim) as u64,
    );
    let scores = 5 * a.heads as u64 * seq_len as u64;
    3 * c.d_model as u64 + (q + 2 * kv) + 4 * (q + kv) + 5 * q + scores
}

/// Its own sizes, for `model-info`.
pub fn describe(c: &Config) -> String {
    let a = &c.attn;
    let rope = match a.rope_theta {
        Some(t) => format!("RoPE theta {t} on {} channels", a.rotary_dim),
        None => "no position encoding".into(),
    };
    format!(
        "heads {} (key/value {}) x head_dim {}  {rope}",
        a.heads, a.kv_heads, a.head_dim
    )
}

/// Checks the attention sizes: heads of head_dim channels, key/value heads that divide them,
/// an even rotary width within the head.
pub fn check(c: &Config) -> crate::error::Result<()> {
    let a = &c.attn;
    let bad = |m: String| Err(Error::Config(m));
    if a.heads == 0 || a.head_dim == 0 || a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) {
        return bad(format!(
            "attention needs heads ({}), key/value heads ({}) that divide them and head_dim ({}) positive",
            a.heads, a.kv_heads, a.head_dim
        ));
    }
    if a.rope_theta.is_some()
        && (a.rotary_dim == 0 || a.rotary_dim % 2 == 1 || a.rotary_dim > a.head_dim)
    {
        return bad(format!(
            "RoPE on {} channels of a {}-channel head: it must be even, positive and at most the head",
            a.rotary_dim, a.head_dim
        ));
    }
    Ok(())
}

/// Per sequence and position, the position within its document and the document's number
/// (counting resets), from `resets` (b, l) or none.
fn documents(resets: Option<&Tensor>, b: usize, l: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let rows = match resets {
        Some(r) => r.to_dtype(DType::U8)?.to_vec2::<u8>()?,
        None => vec![vec![0u8; l]; b],
    };
    let (mut pos, mut doc) = (Vec::with_capacity(b * l), Vec::with_capacity(b * l));
    for row in rows {
        let (mut p, mut d) = (0u32, 0u32);
        for (t, &r) in row.iter().enumerate() {
            if r != 0 && t > 0 {
                (p, d) = (0, d + 1);
            }
            pos.push(p);
            doc.push(d);
            p += 1;
        }
    }
    Ok((pos, doc))
}

/// The additive mask (b, 1, l, l): 0 where position j is at or before i in i's document,
/// -inf elsewhere.
fn mask(doc: &[u32], b: usize, l: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![f32::NEG_INFINITY; b * l * l];
    for s in 0..b {
        let doc = &doc[s * l..(s + 1) * l];
        for i in 0..l {
            for j in (0..=i).rev().take_while(|&j| doc[j] == doc[i]) {
                m[(s * l + i) * l + j] = 0.0;
            }
        }
    }
    Tensor::from_vec(m, (b, 1, l, l), device)
}

impl Attention {
    /// Reads the parameters of [`Params::table`] from `vb` (below the layer's prefix).
    pub fn new(cfg: &Config, vb: &VarBuilder) -> Result<Self> {
        Ok(Attention {
            p: Params::read(cfg, vb)?,
            lora: Lora::default(),
            a: cfg.attn.clone(),
        })
    }

    /// The same layer with every parameter through `f` (see [`Params::map`]).
    pub fn map(&self, f: impl FnMut(&Tensor, Init) -> Result<Tensor>) -> Result<Attention> {
        Ok(Attention {
            p: self.p.map(f)?,
            lora: self.lora.clone(),
            a: self.a.clone(),
        })
    }

    /// h: (b, l, d_model) normalised input -> (b, l, d_model); `resets` (b, l) nonzero at
    /// document starts; the projections run in `dt`, the attention itself in f32.
    pub fn forward(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        Ok(self.run(h, resets, dt)?.0)
    }

    /// The f32 forward of a prompt and the keys and values it leaves (b, l, KV x head_dim).
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        let (out, k, v) = self.run(h, None, DType::F32)?;
        Ok((out, MixerState { conv: k, ssm: v }))
    }

    fn run(
        &self,
        h: &Tensor,
        resets: Option<&Tensor>,
        dt: DType,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, l, _) = h.dims3()?;
        let (pos, doc) = documents(resets, b, l)?;
        let q = self.rope(&self.lora.linear("q_proj", h, &self.p.q, dt)?, &pos, b, l)?;
        let k = self.rope(&self.lora.linear("k_proj", h, &self.p.k, dt)?, &pos, b, l)?;
        let v = self.lora.linear("v_proj", h, &self.p.v, dt)?;
        let mask = mask(&doc, b, l, h.device())?;
        let y = self.attend(&q, &k, &v, Some(&mask))?;
        let out = self.lora.linear("o_proj", &y, &self.p.o, dt)?;
        Ok((out, k, v))
    }

    /// One position of each sequence: h (b, d_model) -> (b, d_model); its key and value join
    /// `st`'s (the position is the number of keys before it).
    pub fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        let b = h.dim(0)?;
        let t = st.conv.dim(1)?;
        let pos = vec![t as u32; b];
        let h = h.unsqueeze(1)?;
        let q = self.rope(&linear(&h, &self.p.q)?, &pos, b, 1)?;
        let k = self.rope(&linear(&h, &self.p.k)?, &pos, b, 1)?;
        let v = linear(&h, &self.p.v)?;
        st.conv = Tensor::cat(&[&st.conv, &k], 1)?;
        st.ssm = Tensor::cat(&[&st.ssm, &v], 1)?;
        let y = self.attend(&q, &st.conv, &st.ssm, None)?;
        linear(&y, &self.p.o)?.squeeze(1)
    }

    /// softmax(q k^T scale + mask) v for q (b, lq, H hd), k and v (b, lk, KV hd) -> (b, lq,
    /// H hd).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let a = &self.a;
        let (b, lq, _) = q.dims3()?;
        let lk = k.dim(1)?;
        let heads = |x: &Tensor, n: usize, l: usize| -> Result<Tensor> {
            x.reshape((b, l, n, a.head_dim))?.transpose(1, 2)
        };
        let q = heads(q, a.heads, lq)?.contiguous()?;
        // Each key/value head serves H / KV query heads.
        let shared = |x: &Tensor| -> Result<Tensor> {
            let x = heads(x, a.kv_heads, lk)?.unsqueeze(2)?;
            let rep = a.heads / a.kv_heads;
            x.broadcast_as((b, a.kv_heads, rep, lk, a.head_dim))?
                .reshape((b, a.heads, lk, a.head_dim))
        };
        let (k, v) = (shared(k)?, shared(v)?);
        let scale = a.scale.unwrap_or(1.0 / (a.head_dim as f64).sqrt());
        // The scale on q (head_dim wide) rather than on the scores (context wide).
        let mut scores = (q * scale)?.matmul(&k.t()?)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let max = scores.max_keepdim(D::Minus1)?.detach();
        let e = scores.broadcast_sub(&max)?.exp()?;
        let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, lq, a.heads * a.head_dim))
    }

    /// RoPE's frequency of each channel of a half: 1 / theta^(2i / rotary_dim) (none
    /// without RoPE).
    pub(crate) fn inv_freq(&self) -> Vec<f32> {
        let (r, theta) = (self.a.rotary_dim, self.a.rope_theta.unwrap_or(0.0));
        match self.a.rope_theta {
            None => vec![],
            Some(_) => (0..r / 2)
                .map(|i| (1.0 / theta.powf((2 * i) as f64 / r as f64)) as f32)
                .collect(),
        }
    }

    /// RoPE on x (b, l, heads x head_dim) at positions `pos` (b x l): within each head, the
    /// first rotary_dim channels as two halves (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin),
    /// angle pos / theta^(2i / rotary_dim) for channel i of a half.
    fn rope(&self, x: &Tensor, pos: &[u32], b: usize, l: usize) -> Result<Tensor> {
        let a = &self.a;
        if a.rope_theta.is_none() {
            return Ok(x.clone());
        }
        let (r, half) = (a.rotary_dim, a.rotary_dim / 2);
        let n = x.dim(2)? / a.head_dim;
        let inv = self.inv_freq();
        let angles: Vec<f32> = pos
            .iter()
            .flat_map(|&p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        let angles = Tensor::from_vec(angles, (b, l, 1, half), x.device())?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let x = x.reshape((b, l, n, a.head_dim))?;
        let (x1, x2) = (
            x.narrow(D::Minus1, 0, half)?,
            x.narrow(D::Minus1, half, half)?,
        );
        let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
        let rest = x.narrow(D::Minus1, r, a.head_dim - r)?;
        Tensor::cat(&[r1, r2, rest], D::Minus1)?.reshape((b, l, n * a.head_dim))
    }
}
