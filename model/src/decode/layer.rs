//! The recurrent form on plain `f32` rows: the CPU fast path of [`Decoder`](super::Decoder).
//! At batch 1 a step is a chain of matrix-vector products that reads every weight once
//! ([`crate::kernels::matvec`]). A short prompt runs the same way, its tokens through each
//! matrix together (the weights stream once for the prompt) and through the conv and the scan
//! one after another: a general matmul packs every weight matrix per call, which costs more
//! than the whole product at a few rows. Here: the embedding, each layer's norm and residual
//! add, the final norm and the head; each layer's mixer is its kind's fast step
//! ([`FastMixer`], in the kind's module). Same arithmetic as the mixers' candle steps, tested
//! against them and the forward.

use candle_core::{DType, Result, Tensor};

use crate::config::Config;
use crate::kernels::rows::{rms_norm, FastMixer, RunArgs, Scratch, Weights};
use crate::layers::params::Init;
use crate::model::MambaLM;

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// The model's weights for the step: the model's own tensors (no copy; read in place each
/// step), or with 8-bit weights an 8-bit copy of every projection, read instead.
pub(super) struct FastStep {
    /// embedding, head (when not tied) and norm_f.
    outer: Weights,
    layers: Vec<Layer>,
    pub(super) cfg: Config,
    threads: usize,
    /// Prompts up to this many tokens run here ([`FastStep::prefill`]); longer ones through
    /// the full forward, whose matmuls win past it.
    pub(super) short_prompt: usize,
}

/// One layer: its norm and its kind's mixer.
struct Layer {
    norm: Vec<f32>,
    mixer: Box<dyn FastMixer>,
}

/// One sequence's state: per layer the conv window and the SSM state, flat, in the shapes of
/// the layer's kind.
#[derive(Clone, Debug)]
pub(super) struct SeqState {
    conv: Vec<Vec<f32>>,
    ssm: Vec<Vec<f32>>,
}

impl SeqState {
    /// Per-layer (conv, ssm) tensors of a batch as one state per sequence.
    pub(super) fn from_tensors(layers: &[(Tensor, Tensor)]) -> Result<Vec<SeqState>> {
        let b = layers.first().map_or(0, |(c, _)| c.dims()[0]);
        let rows =
            |t: &Tensor| -> Result<Vec<Vec<f32>>> { (0..b).map(|i| flat(&t.get(i)?)).collect() };
        let mut seqs = vec![
            SeqState {
                conv: vec![],
                ssm: vec![]
            };
            b
        ];
        for (c, s) in layers {
            for (seq, (c, s)) in seqs.iter_mut().zip(rows(c)?.into_iter().zip(rows(s)?)) {
                seq.conv.push(c);
                seq.ssm.push(s);
            }
        }
        Ok(seqs)
    }

    /// An empty state (before the first token) of a model of `c`.
    fn empty(c: &Config) -> SeqState {
        let size = |s: &[usize]| s.iter().product::<usize>();
        let (conv, ssm) = c
            .layers
            .iter()
            .map(|k| {
                let (conv, ssm) = k.state_shapes(c);
                (vec![0f32; size(&conv)], vec![0f32; size(&ssm)])
            })
            .unzip();
        SeqState { conv, ssm }
    }

    /// The inverse of [`SeqState::from_tensors`], on the model's device.
    pub(super) fn to_tensors(seqs: &[SeqState], model: &MambaLM) -> Result<Vec<(Tensor, Tensor)>> {
        let c = model.config();
        let stack = |f: &dyn Fn(&SeqState) -> &Vec<f32>, shape: &[usize]| -> Result<Tensor> {
            let lens: Vec<usize> = seqs.iter().map(|s| f(s).len()).collect();
            if lens.windows(2).any(|w| w[0] != w[1]) {
                candle_core::bail!(
                    "sequences of different lengths in attention layers cannot move to this device's decoder: decode them one at a time"
                )
            }
            let v: Vec<f32> = seqs.iter().flat_map(|s| f(s).iter().copied()).collect();
            // Attention's keys and values: as many rows (the 0 of its shape) as positions.
            let row: usize = shape.iter().filter(|&&n| n > 0).product();
            let per_seq = lens.first().copied().unwrap_or(0);
            let mut dims = vec![seqs.len()];
            dims.extend(shape.iter().map(|&n| match n {
                0 => per_seq / row.max(1),
                n => n,
            }));
            Tensor::from_vec(v, dims, model.device())
        };
        c.layers
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let (conv, ssm) = k.state_shapes(c);
                Ok((stack(&|s| &s.conv[i], &conv)?, stack(&|s| &s.ssm[i], &ssm)?))
            })
            .collect()
    }
}

impl FastStep {
    /// The weights of `model`; with `int8`, the step reads 8-bit copies of its projections.
    pub(super) fn new(model: &MambaLM, int8: bool) -> Result<FastStep> {
        let c = model.config();
        let tied = c.tie_embeddings;
        // The embedding (and an untied head) are 8-bit like the projections; a tied head reads
        // the embedding's copy.
        let mut outer = vec![
            ("embedding", &model.embedding, Init::Embedding),
            ("norm_f", &model.norm_f, Init::Ones),
        ];
        if !tied {
            outer.push(("head", &model.head, Init::Linear));
        }
        let layers = model
            .layers
            .iter()
            .map(|l| {
                Ok(Layer {
                    norm: flat(&l.norm)?,
                    mixer: l.mixer.fast_step(int8)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FastStep {
            outer: Weights::new(outer, int8)?,
            layers,
            cfg: c.clone(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            // Measured (benches/generate.rs, 130m-shaped): the forward's matmuls catch up near
            // 48 tokens in f32, near 128 in bf16 (candle's bf16 matmul is slower).
            short_prompt: match (int8, model.embedding.dtype()) {
                (false, DType::F32) => 48,
                _ => 128,
            },
        })
    }

    /// Feeds `ids[i]` to sequence `i`; returns each sequence's next-token logits over the
    /// padded vocabulary.
    pub(super) fn step(&self, ids: &[u32], seqs: &mut [SeqState]) -> Result<Vec<Vec<f32>>> {
        ids.iter()
            .zip(seqs)
            .map(|(&id, st)| self.run(&[id], st))
            .collect()
    }

    /// Runs each prompt (at least one token each) from an empty state; returns their states
    /// and each one's next-token logits. Equal bit for bit to stepping the prompt token by
    /// token.
    pub(super) fn prefill(&self, prompts: &[&[u32]]) -> Result<(Vec<SeqState>, Vec<Vec<f32>>)> {
        let empty = SeqState::empty(&self.cfg);
        let mut states = vec![empty; prompts.len()];
        let logits = prompts
            .iter()
            .zip(&mut states)
            .map(|(ids, st)| self.run(ids, st))
            .collect::<Result<_>>()?;
        Ok((states, logits))
    }

    /// Feeds the tokens `ids` (at least one) to one sequence; returns the logits after the
    /// last. Per layer: the norm of every token, the kind's mixer, the residual add.
    fn run(&self, ids: &[u32], st: &mut SeqState) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let (d, vocab, eps) = (c.d_model, c.padded_vocab(), c.norm_eps as f32);
        self.outer.with(|w| {
            let emb = w.mat("embedding")?;
            let em = c.embedding_multiplier as f32;
            let mut res: Vec<Vec<f32>> = ids
                .iter()
                .map(|&id| emb.row((id as usize).min(vocab - 1), d))
                .map(|mut row| {
                    row.iter_mut().for_each(|x| *x *= em);
                    row
                })
                .collect();
            let mut out = vec![vec![0f32; d]; ids.len()];
            let mut scratch = Scratch::default();
            for (li, l) in self.layers.iter().enumerate() {
                let h: Vec<Vec<f32>> = res.iter().map(|x| rms_norm(x, &l.norm, eps)).collect();
                let (conv, ssm) = (&mut st.conv[li], &mut st.ssm[li]);
                l.mixer.run(RunArgs {
                    h: &h,
                    conv,
                    ssm,
                    scratch: &mut scratch,
                    out: &mut out,
                    threads: self.threads,
                })?;
                let rm = c.residual_multiplier as f32;
                for (res, out) in res.iter_mut().zip(&out) {
                    res.iter_mut().zip(out).for_each(|(a, b)| *a += rm * b);
                }
            }
            let last = res.last().map_or(&[][..], Vec::as_slice);
            let mut h = rms_norm(last, w.vec("norm_f")?, eps);
            let ls = c.logits_scaling as f32;
            h.iter_mut().for_each(|x| *x /= ls);
            let head = match c.tie_embeddings {
                true => emb,
                false => w.mat("head")?,
            };
            let mut logits = vec![0f32; vocab];
            head.matvec(&h, &mut logits, self.threads);
            Ok(logits)
        })
    }
}
