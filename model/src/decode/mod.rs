//! Generation: a prompt runs through the full-sequence forward once (the prefill, whose fused
//! scan also returns the state after the prompt), then every step feeds one token per sequence
//! through the recurrent form, O(1) in time and memory whatever the context length.
//!
//! A [`Decoder`] steps a batch of sequences. On the CPU it uses a fast path on plain `f32`
//! rows ([`layer`], each layer through its kind's fast step), which also runs short prompts
//! (their tokens through each matrix together) where the forward's matmuls cost more;
//! elsewhere, and as its tested slow twin, the candle step of each layer's mixer
//! ([`Mixer::step`](crate::mixers::Mixer::step)). Both take and give a [`State`].

mod layer;

use candle_core::{Result, Tensor};

use crate::layers::norm::rms_norm;
use crate::layers::ops::linear;
use crate::mixers::MixerState;
use crate::model::MambaLM;

/// The recurrent state of a batch of sequences (each after its own prompt).
#[derive(Clone, Debug)]
pub struct State {
    seqs: Seqs,
}

#[derive(Clone, Debug)]
enum Seqs {
    /// Per layer, conv window and SSM state (see [`MixerState`]), batch first.
    Tensors(Vec<(Tensor, Tensor)>),
    /// Per sequence, the same as plain vectors for the CPU fast path.
    Rows(Vec<layer::SeqState>),
}

impl State {
    /// Number of sequences.
    pub fn batch(&self) -> usize {
        match &self.seqs {
            Seqs::Tensors(l) => l.first().map_or(0, |(c, _)| c.dims()[0]),
            Seqs::Rows(s) => s.len(),
        }
    }

    /// The sequences `rows` of this state, in that order (repeats allowed): beam search keeps
    /// the states of the beams it continues.
    pub fn select(&self, rows: &[usize]) -> Result<State> {
        let seqs = match &self.seqs {
            Seqs::Rows(s) => Seqs::Rows(rows.iter().map(|&r| s[r].clone()).collect()),
            Seqs::Tensors(layers) => {
                let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
                let Some((c0, _)) = layers.first() else {
                    return Ok(self.clone());
                };
                let idx = Tensor::from_vec(idx, rows.len(), c0.device())?;
                let pick = |(c, s): &(Tensor, Tensor)| -> Result<(Tensor, Tensor)> {
                    Ok((c.index_select(&idx, 0)?, s.index_select(&idx, 0)?))
                };
                Seqs::Tensors(layers.iter().map(pick).collect::<Result<_>>()?)
            }
        };
        Ok(State { seqs })
    }
}

/// Steps a batch of sequences through a model. The fast CPU path reads the model's own
/// weights in place (no copy), with A = -exp(A_log) computed when the decoder is made: make a
/// new decoder after training changes the weights.
pub struct Decoder<'m> {
    model: &'m MambaLM,
    fast: Option<layer::FastStep>,
}

impl MambaLM {
    /// Whether decoding takes the CPU fast path (and 8-bit weights can be had): on the CPU,
    /// either architecture.
    pub fn has_fast_step(&self) -> bool {
        self.device().is_cpu()
    }

    /// A decoder with the fastest step for the model's device.
    pub fn decoder(&self) -> Result<Decoder<'_>> {
        let fast = match self.has_fast_step() {
            true => Some(layer::FastStep::new(self, false)?),
            false => None,
        };
        Ok(Decoder { model: self, fast })
    }

    /// A decoder whose step reads 8-bit copies of the matrices (blocks of 32 values with one
    /// scale each, as llama.cpp's q8_0): about half of bf16's bytes per token. A short prompt
    /// runs on the 8-bit copies too, a longer one through the forward on the model's own
    /// weights. Only where [`MambaLM::has_fast_step`].
    pub fn decoder_int8(&self) -> Result<Decoder<'_>> {
        if !self.has_fast_step() {
            candle_core::bail!("8-bit weights decode on the CPU only")
        }
        Ok(Decoder {
            model: self,
            fast: Some(layer::FastStep::new(self, true)?),
        })
    }

    /// A decoder that always takes the candle step (the slow twin of the CPU fast path).
    pub fn candle_decoder(&self) -> Decoder<'_> {
        Decoder {
            model: self,
            fast: None,
        }
    }
}

impl Decoder<'_> {
    /// Runs each prompt (at least one token each) through the full forward and returns their
    /// states stacked as one batch, with each prompt's next-token logits over the padded
    /// vocabulary.
    pub fn prefill(&self, prompts: &[&[u32]]) -> Result<(State, Vec<Vec<f32>>)> {
        let m = self.model;
        if prompts.iter().any(|p| p.is_empty()) {
            candle_core::bail!("prefill: empty prompt")
        }
        self.check_ids(prompts.iter().flat_map(|p| p.iter()), "prefill")?;
        if let Some(w) = self.fast.as_ref() {
            if prompts.iter().all(|p| p.len() <= w.short_prompt) {
                let (seqs, logits) = w.prefill(prompts)?;
                return Ok((
                    State {
                        seqs: Seqs::Rows(seqs),
                    },
                    logits,
                ));
            }
        }
        let (eps, d) = (m.cfg.norm_eps, m.cfg.d_model);
        let mut layers: Vec<(Vec<Tensor>, Vec<Tensor>)> = vec![Default::default(); m.layers.len()];
        let mut logits = Vec::with_capacity(prompts.len());
        for ids in prompts {
            let l = ids.len();
            let ids = Tensor::from_slice(ids, (1, l), m.device())?;
            let mut h = m.embed(&ids)?;
            for (layer, st) in m.layers.iter().zip(layers.iter_mut()) {
                let x = rms_norm(&h, &layer.norm, eps)?;
                let (out, s) = layer.mixer.prefill(&x)?;
                st.0.push(s.conv);
                st.1.push(s.ssm);
                h = m.residual(&h, &out)?;
            }
            let last = h.narrow(1, l - 1, 1)?.reshape((1, d))?;
            let x = m.final_norm(&last)?;
            logits.push(linear(&x, &m.head)?.squeeze(0)?.to_vec1::<f32>()?);
        }
        let seqs = match &self.fast {
            // Prompt by prompt: attention's keys are as many as each prompt's tokens.
            Some(_) => Seqs::Rows(
                (0..prompts.len())
                    .map(|p| {
                        let one: Vec<_> = layers
                            .iter()
                            .map(|(c, s)| (c[p].clone(), s[p].clone()))
                            .collect();
                        layer::SeqState::from_tensors(&one)
                    })
                    .collect::<Result<Vec<_>>>()?
                    .concat(),
            ),
            None => {
                let uneven = prompts.iter().any(|p| p.len() != prompts[0].len());
                if uneven && m.cfg.layers.iter().any(|k| !k.is_mamba()) {
                    candle_core::bail!(
                        "prompts of different lengths through attention layers decode one at a time on this device"
                    )
                }
                let layers = layers
                    .iter()
                    .map(|(c, s)| Ok((Tensor::cat(c, 0)?, Tensor::cat(s, 0)?)))
                    .collect::<Result<Vec<_>>>()?;
                Seqs::Tensors(layers)
            }
        };
        Ok((State { seqs }, logits))
    }

    /// Feeds `ids[i]` to sequence `i` of `st` and returns each sequence's next-token logits
    /// over the padded vocabulary; equal to the last position of [`MambaLM::forward`] over the
    /// whole prefix.
    pub fn step(&self, ids: &[u32], st: &mut State) -> Result<Vec<Vec<f32>>> {
        if ids.len() != st.batch() {
            candle_core::bail!("step: {} ids for a state of {}", ids.len(), st.batch())
        }
        self.check_ids(ids.iter(), "step")?;
        // A state made by the other kind of decoder changes representation once.
        match (&self.fast, &st.seqs) {
            (Some(_), Seqs::Tensors(layers)) => {
                st.seqs = Seqs::Rows(layer::SeqState::from_tensors(layers)?)
            }
            (None, Seqs::Rows(seqs)) => {
                st.seqs = Seqs::Tensors(layer::SeqState::to_tensors(seqs, self.model)?)
            }
            _ => {}
        }
        let logits = match (&self.fast, &mut st.seqs) {
            (Some(w), Seqs::Rows(seqs)) => w.step(ids, seqs)?,
            (_, Seqs::Tensors(layers)) => self.candle_step(ids, layers)?,
            (None, Seqs::Rows(_)) => unreachable!("converted above"),
        };
        Ok(logits)
    }

    /// Refuses a token id past the padded vocabulary (`what` names the caller).
    fn check_ids<'a>(&self, mut ids: impl Iterator<Item = &'a u32>, what: &str) -> Result<()> {
        let vocab = self.model.cfg.padded_vocab();
        match ids.find(|&&t| t as usize >= vocab) {
            Some(bad) => candle_core::bail!("{what}: token {bad} is past the vocabulary ({vocab})"),
            None => Ok(()),
        }
    }

    /// The step from candle ops, on any device.
    fn candle_step(&self, ids: &[u32], layers: &mut [(Tensor, Tensor)]) -> Result<Vec<Vec<f32>>> {
        let m = self.model;
        let ids = Tensor::from_slice(ids, ids.len(), m.device())?;
        let mut h = m.embed_flat(&ids)?; // (b, d)
        for (layer, (conv, ssm)) in m.layers.iter().zip(layers.iter_mut()) {
            let x = rms_norm(&h, &layer.norm, m.cfg.norm_eps)?;
            let mut s = MixerState {
                conv: conv.clone(),
                ssm: ssm.clone(),
            };
            h = m.residual(&h, &layer.mixer.step(&x, &mut s)?)?;
            (*conv, *ssm) = (s.conv, s.ssm);
        }
        let x = m.final_norm(&h)?;
        linear(&x, &m.head)?.to_vec2::<f32>()
    }
}

#[cfg(test)]
mod tests;
