//! Text generation from a checkpoint: the prompts are prefilled as one batch of recurrent states
//! and every step feeds one token per sequence ([`mamba_model::Decoder`]), O(1) in time and
//! memory whatever the context length. Tokens are chosen by [`sampling`] or by [`beam`] search,
//! and text is released as it becomes final ([`stream`]).

pub mod beam;
pub mod sampling;
pub mod stream;

use std::path::Path;

use candle_core::{DType, Device};
use mamba_model::{Decoder, MambaLM};
use mamba_pipeline::tokenize::Vocab;

use crate::train;
use crate::train::checkpoint::CheckpointError;

use sampling::{Sampler, SamplingConfig, SamplingError};
use stream::TextStream;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("checkpoint {0}: not found")]
    NoCheckpoint(String),
    #[error("checkpoint {0}: no tokenizer.json beside the model")]
    NoTokenizer(String),
    #[error(
        "checkpoint {dir}: the tokenizer has {tokens} tokens but the model's vocabulary is {vocab}"
    )]
    Mismatch {
        dir: String,
        tokens: usize,
        vocab: usize,
    },
    #[error("prompt {0} is empty")]
    EmptyPrompt(usize),
    #[error("--num-beams must be at least 1")]
    Beams,
    #[error("--weights int8 decodes on the CPU only: use f32 or bf16 on this device")]
    Int8,
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Model(#[from] mamba_model::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Tokenizer(#[from] mamba_pipeline::tokenize::TokenizeError),
    #[error("cannot encode prompt {0}: {1}")]
    Encode(usize, String),
    #[error(transparent)]
    State(crate::train::checkpoint::CheckpointError),
}

impl From<CheckpointError> for GenerateError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::NotFound(dir) => GenerateError::NoCheckpoint(dir),
            CheckpointError::Model(e) => GenerateError::Model(e),
            e => GenerateError::State(e),
        }
    }
}

/// How generation holds the model's matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    F32,
    /// Half the bytes per decode step; logits move by well under 1%.
    Bf16,
    /// The decode step reads 8-bit copies (blocks of 32 with a scale, as llama.cpp's q8_0),
    /// the prefill bf16 ones: on the CPU.
    Int8,
}

/// A model and its tokenizer, loaded from a checkpoint or a transformers model directory.
pub struct Checkpoint {
    pub model: MambaLM,
    pub vocab: Vocab,
    /// The decode step reads 8-bit copies of the matrices.
    pub int8: bool,
}

impl Checkpoint {
    /// Opens `dir` ([`train::checkpoint::Checkpoint::open_adapted`]: with `adapter` merged in,
    /// if given), which must hold a
    /// `tokenizer.json` with a model row for every token. `weights` says how the model's
    /// matrices are held (see [`Weights`] and [`MambaLM::into_weight_dtype`]).
    pub fn load(
        dir: &Path,
        adapter: Option<&Path>,
        device: &Device,
        weights: Weights,
    ) -> Result<Checkpoint, GenerateError> {
        let shown = dir.display().to_string();
        let ck = train::checkpoint::Checkpoint::open_adapted(dir, adapter, device)?;
        let Some(tok) = &ck.tokenizer else {
            return Err(GenerateError::NoTokenizer(shown));
        };
        let vocab = Vocab::load(tok, None)?;
        // Plain tensors (generation records no autograd graph); the variables go first, so
        // a bf16 copy replaces each f32 matrix rather than adding to it.
        drop(ck.varmap);
        let dtype = match weights {
            Weights::F32 => DType::F32,
            Weights::Bf16 | Weights::Int8 => DType::BF16,
        };
        let model = ck.model.into_weight_dtype(dtype)?;
        let (tokens, size) = (vocab.vocab_size(), model.config().vocab_size);
        if tokens > size {
            return Err(GenerateError::Mismatch {
                dir: shown,
                tokens,
                vocab: size,
            });
        }
        let int8 = weights == Weights::Int8;
        if int8 && !model.has_fast_step() {
            return Err(GenerateError::Int8);
        }
        Ok(Checkpoint { model, vocab, int8 })
    }

    /// The model's decoder, with 8-bit matrices when loaded so.
    pub fn decoder(&self) -> Result<Decoder<'_>, GenerateError> {
        Ok(match self.int8 {
            true => self.model.decoder_int8()?,
            false => self.model.decoder()?,
        })
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    pub seed: u64,
    /// Generation of a sequence ends where one of these appears (it is not part of the text).
    pub stop: Vec<String>,
    /// 1: sampling; more: beam search.
    pub num_beams: usize,
    /// Stop at the tokenizer's end-of-text token.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 100,
            sampling: SamplingConfig::default(),
            seed: 0,
            stop: Vec::new(),
            num_beams: 1,
            stop_at_eos: true,
        }
    }
}

/// One prompt's continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    /// Ended at EOS or a stop string (otherwise at --max-new-tokens).
    pub stopped: bool,
}

/// Continues every prompt. `on_text(i, piece)` receives the text of prompt `i` as it becomes
/// final, in order.
pub fn generate(
    ck: &Checkpoint,
    prompts: &[String],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>, GenerateError> {
    opts.sampling.validate()?;
    if opts.num_beams == 0 {
        return Err(GenerateError::Beams);
    }
    let mut ids = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let enc = ck
            .vocab
            .encode(p)
            .map_err(|e| GenerateError::Encode(i + 1, e))?;
        if p.trim().is_empty() || enc.is_empty() {
            return Err(GenerateError::EmptyPrompt(i + 1));
        }
        ids.push(enc);
    }
    let eos = opts.stop_at_eos.then_some(ck.vocab.eos_id);
    if opts.num_beams > 1 {
        let (decoder, vocab) = (ck.decoder()?, ck.model.config().vocab_size);
        return ids
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let best = beam::beam_search(
                    &decoder,
                    vocab,
                    p,
                    opts.num_beams,
                    opts.max_new_tokens,
                    eos,
                )?;
                let tokens = best.first().map(|b| b.tokens.clone()).unwrap_or_default();
                let mut s = TextStream::new(&ck.vocab, &opts.stop);
                let mut stopped = best.first().is_some_and(|b| b.done);
                for &t in tokens.iter().filter(|&&t| Some(t) != eos) {
                    on_text(i, &s.push(t));
                    if s.stopped {
                        break;
                    }
                }
                on_text(i, &s.finish());
                stopped |= s.stopped;
                Ok(Generation {
                    text: s.text(),
                    tokens: s.tokens,
                    stopped,
                })
            })
            .collect();
    }
    sample_batch(ck, &ids, opts, eos, on_text)
}

/// Sampling (or greedy) decoding of all prompts as one batch.
fn sample_batch(
    ck: &Checkpoint,
    ids: &[Vec<u32>],
    opts: &GenerateOptions,
    eos: Option<u32>,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>, GenerateError> {
    let model = &ck.model;
    let vocab = model.config().vocab_size;
    let n = ids.len();
    let decoder = ck.decoder()?;
    let prompts: Vec<&[u32]> = ids.iter().map(|p| p.as_slice()).collect();
    let (mut state, mut logits) = decoder.prefill(&prompts)?;
    // One generator per prompt, so a prompt's text does not depend on its neighbours.
    let mut samplers = (0..n)
        .map(|i| Sampler::new(opts.sampling.clone(), opts.seed.wrapping_add(i as u64)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut streams: Vec<TextStream> = (0..n)
        .map(|_| TextStream::new(&ck.vocab, &opts.stop))
        .collect();
    let mut history: Vec<Vec<u32>> = ids.to_vec();
    let mut done = vec![false; n];
    let mut stopped = vec![false; n];
    for step in 0..opts.max_new_tokens {
        let mut feed = Vec::with_capacity(n);
        for i in 0..n {
            if done[i] {
                // Finished rows ride along (the batch keeps its shape) and are ignored.
                feed.push(eos.unwrap_or(0));
                continue;
            }
            let t = samplers[i].sample(&logits[i][..vocab], &history[i]);
            history[i].push(t);
            feed.push(t);
            if Some(t) == eos {
                (done[i], stopped[i]) = (true, true);
                continue;
            }
            on_text(i, &streams[i].push(t));
            if streams[i].stopped {
                (done[i], stopped[i]) = (true, true);
            }
        }
        if done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
            break;
        }
        logits = decoder.step(&feed, &mut state)?;
    }
    Ok(streams
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            on_text(i, &s.finish());
            Generation {
                text: s.text(),
                tokens: s.tokens,
                stopped: stopped[i],
            }
        })
        .collect())
}

#[cfg(test)]
mod tests;
