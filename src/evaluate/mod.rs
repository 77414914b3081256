//! `mamba eval`: next-token loss and perplexity of a checkpoint over the val (or train) split
//! of a shard store, or over any text file or folder tokenized on the fly with the
//! checkpoint's tokenizer.
//!
//! The split is read by the trainer's own loader (shard order, row groups in order, no
//! shuffle, documents packed with EOS and state resets) and each batch is scored by the
//! trainer's own `eval_loss`, so the tokens a periodic eval covered (its line and
//! `metrics.jsonl`'s `val_tokens`: the first `eval_batches x batch_size x seq_len`), given as
//! `--max-tokens`, give exactly the number that eval printed during training. The result is
//! the mean over every scored token, and says whether those were all of the source or its first.

pub mod source;

use std::path::{Path, PathBuf};

use candle_core::Device;
use mamba_model::MambaLM;
use serde::Serialize;

use crate::train::checkpoint::{Checkpoint, CheckpointError};
use crate::train::config::Precision;
use crate::train::pack::Batch;
use crate::train::step::{eval_loss, StepOptions};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("checkpoint {0}: not found")]
    NoCheckpoint(String),
    #[error("{0}")]
    Mismatch(String),
    #[error("{what}: nothing to evaluate: {why}")]
    Empty { what: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file that was read but could not be used (not found, not encodable).
    #[error("{path}: {reason}")]
    Unusable { path: String, reason: String },
    #[error(transparent)]
    Model(#[from] mamba_model::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Load(#[from] crate::train::loader::LoadError),
    #[error(transparent)]
    Manifest(#[from] mamba_pipeline::shard::manifest::ManifestError),
    #[error(transparent)]
    Tokenizer(#[from] mamba_pipeline::tokenize::TokenizeError),
    #[error(transparent)]
    State(CheckpointError),
}

impl From<CheckpointError> for EvalError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::NotFound(dir) => EvalError::NoCheckpoint(dir),
            CheckpointError::Model(e) => EvalError::Model(e),
            e => EvalError::State(e),
        }
    }
}

/// The settings of the training run a checkpoint came from that shape its eval.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub seq_len: usize,
    pub batch_size: usize,
    pub doc_reset: bool,
    pub precision: Precision,
}

/// Used for a model directory without `trainer_state.json` (e.g. from transformers).
pub const DEFAULT_SEQ_LEN: usize = 1024;

/// A loaded checkpoint and the shape its training run used.
pub struct Loaded {
    pub dir: PathBuf,
    pub model: MambaLM,
    pub shape: Shape,
}

/// Opens `dir` (with `adapter` merged in, if given) and takes the run settings from its
/// `trainer_state.json` when it has one.
pub fn load(dir: &Path, adapter: Option<&Path>, device: &Device) -> Result<Loaded, EvalError> {
    let ck = Checkpoint::open_adapted(dir, adapter, device)?;
    let shape = match ck.state.map(|s| s.config) {
        Some(c) => Shape {
            seq_len: c.seq_len,
            batch_size: c.batch_size,
            doc_reset: c.doc_reset,
            precision: c.precision,
        },
        None => Shape {
            seq_len: DEFAULT_SEQ_LEN,
            batch_size: 1,
            doc_reset: true,
            precision: Precision::Fp32,
        },
    };
    Ok(Loaded {
        dir: ck.dir,
        model: ck.model.detach(),
        shape,
    })
}

/// The result of an eval.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Evaluation {
    /// What was evaluated (`val split of shards/`, a path).
    pub source: String,
    pub loss: f64,
    pub perplexity: f64,
    /// Target tokens scored.
    pub tokens: u64,
    /// Sequences (windows) scored.
    pub windows: u64,
    pub seq_len: usize,
    pub checkpoint: String,
    /// Every full batch of the source was scored, not only its first `tokens` (`--max-tokens`).
    pub whole: bool,
}

/// What [`score`] scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Mean loss per target token.
    pub loss: f64,
    pub tokens: u64,
    pub windows: u64,
    /// The batches ran out before `max_tokens` did.
    pub whole: bool,
}

/// Scores `batches` until `max_tokens` target tokens (if given) have been scored;
/// `progress(tokens)` is called after each batch.
pub fn score(
    model: &MambaLM,
    batches: impl Iterator<Item = Result<Batch, EvalError>>,
    shape: &Shape,
    max_tokens: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<Scored, EvalError> {
    let o = StepOptions {
        doc_reset: shape.doc_reset,
        dtype: shape.precision.dtype(),
        ..Default::default()
    };
    let (mut sum, mut tokens, mut windows) = (0.0, 0u64, 0u64);
    let mut whole = true;
    for batch in batches {
        let mut batch = batch?;
        if let Some(max) = max_tokens {
            // Whole windows only, as many as reach the budget.
            let left = max.saturating_sub(tokens) as usize;
            let rows = left.div_ceil(batch.seq_len).min(batch.batch_size);
            if rows == 0 {
                // A batch is left over: the budget, not the source, ended the eval.
                whole = false;
                break;
            }
            if rows < batch.batch_size {
                let n = rows * batch.seq_len;
                whole = false;
                batch = Batch {
                    batch_size: rows,
                    seq_len: batch.seq_len,
                    inputs: batch.inputs[..n].to_vec(),
                    targets: batch.targets[..n].to_vec(),
                    resets: batch.resets[..n].to_vec(),
                };
            }
        }
        let n = (batch.batch_size * batch.seq_len) as u64;
        // The trainer's eval of a single batch is that batch's mean token loss.
        sum += eval_loss(model, std::slice::from_ref(&batch), &o)? * n as f64;
        tokens += n;
        windows += batch.batch_size as u64;
        progress(tokens);
    }
    if tokens == 0 {
        return Err(EvalError::Empty {
            what: "input".into(),
            why: format!("fewer than {} tokens", shape.seq_len + 1),
        });
    }
    Ok(Scored {
        loss: sum / tokens as f64,
        tokens,
        windows,
        whole,
    })
}

impl Evaluation {
    /// `val split of shards/: all 12288 tokens, in 96 windows of 128 | loss 6.9594 | ppl
    /// 1052.98`, or `...: the first 768 tokens, in ...` when `--max-tokens` cut it short: a
    /// number over part of a split is not to be read as the whole split's.
    pub fn line(&self) -> String {
        let which = if self.whole { "all" } else { "the first" };
        format!(
            "{}: {which} {} tokens, in {} windows of {} | loss {:.4} | ppl {:.2}",
            self.source, self.tokens, self.windows, self.seq_len, self.loss, self.perplexity
        )
    }
}
