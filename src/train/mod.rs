//! `mamba train`: streams a shard store into the Mamba model.
//!
//! ```text
//! loader (reader threads -> packer -> batcher) ==bounded channel==> the loop in [`train`]
//! ```
//!
//! The loop itself fits on a screen: learning rate, `grad_accum` micro-batches, the ranks'
//! average, clipping, AdamW (or a skipped step), a record and a log line, and on schedule an
//! eval and a checkpoint; its helpers are beside it. Setup (store, model, resume and rank
//! checks) lives in [`setup`], what the run prints in [`console`], the settings in
//! [`settings`].

pub mod adapters;
pub mod checkpoint;
pub mod choices;
pub mod config;
pub mod console;
pub mod eval;
pub mod gpu;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod pack;
pub mod plan;
pub mod ranks;
pub mod scaler;
pub mod schedule;
pub mod settings;
pub mod setup;
pub mod shuffle;
pub mod step;

#[cfg(test)]
mod testutil;

use std::path::PathBuf;
use std::time::Instant;

use mamba_model::clip_grad_norm;

use checkpoint::{TrainerState, FINAL};
use console::Console;
use loader::{LoadError, Loader};
use metrics::{EvalRecord, StepRecord};
use scaler::LossScaler;
use setup::Run;

pub use config::TrainConfig;

/// Consecutive non-finite steps after which the run stops instead of skipping on.
const MAX_BAD_STEPS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Model(#[from] mamba_model::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Manifest(#[from] mamba_pipeline::shard::manifest::ManifestError),
    #[error("{0}")]
    Mismatch(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loss is not finite for {0} steps in a row; stopping (lower --lr?)")]
    Diverged(u64),
    #[error("the training stream ended")]
    StreamEnded,
    #[error("no loader position was recorded for step {0} (a bug: please report it)")]
    NoSnapshot(u64),
}

impl TrainError {
    /// A setting the user can change is at fault (exit status 2), not the run.
    pub fn is_usage(&self) -> bool {
        matches!(self, TrainError::Config(_) | TrainError::Unsupported(_))
    }
}

/// What a run is given besides the [`TrainConfig`].
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub shards: PathBuf,
    pub checkpoint_dir: PathBuf,
    /// `Some(None)`: the latest checkpoint in `checkpoint_dir`.
    pub resume: Option<Option<PathBuf>>,
    pub init: Option<PathBuf>,
    pub progress: bool,
    /// The ranks of a data-parallel run (one by default).
    pub ranks: ranks::Ranks,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub tokens: u64,
    pub last_loss: f64,
    pub last_val_loss: Option<f64>,
    pub final_dir: PathBuf,
}

/// Trains until `max_steps`, checkpointing on the way; returns the summary. With several
/// ranks, every rank calls this; rank 0 alone writes and prints.
pub fn train(cfg: &TrainConfig, opts: &RunOptions) -> Result<Summary, TrainError> {
    let ranks = &opts.ranks;
    let mut run = Run::start(cfg, opts)?;
    let mut st = run.state.clone();
    let console = Console::start(&run, cfg, opts.progress);
    let mut snapshot = Some(st.loader.clone());
    let mut clock = plan::Clock::new(cfg.max_steps);
    let mut guard = Guard::new(cfg, LossScaler::new(st.loss_scale, st.scale_good_steps));
    let (mut last_loss, mut last_val) = (f64::NAN, None);
    while st.step < cfg.max_steps {
        let t0 = Instant::now();
        // Linear warmup, then a cosine down to min_lr.
        st.lr = schedule::lr_at(st.step, cfg.warmup_steps, cfg.max_steps, cfg.lr, cfg.min_lr);
        run.opt.set_lr(st.lr);
        // The gradient of the mean loss over grad_accum micro-batches.
        let (micro, epoch) = micro_batches(&run.loader, &mut snapshot, cfg.grad_accum, ranks)?;
        let o = step_options(cfg, guard.scaler.scale);
        let dev = run.model.device().clone();
        // Memory is reported where the device can say it; a device that cannot still trains.
        let _ = mamba_model::memory::reset_peak(&dev);
        run.dropout(Some(st.step));
        let (loss, mut grads) = step::accumulate(&run.model, &run.vars, &micro, &o)?;
        run.dropout(None);
        // The mean over the ranks is the loss of the global batch; every rank sees the same.
        let loss = ranks.mean(loss);
        let gnorm = match loss.is_finite() {
            true => {
                ranks.average(&mut grads, &run.vars)?;
                clip_grad_norm(&mut grads, &run.vars, cfg.grad_clip)?
            }
            false => f64::NAN,
        };
        // AdamW, unless the step is not finite (skipped; under fp16 the loss scale drops).
        let apply = guard.admit(loss, gnorm, &mut st)?;
        if apply {
            run.opt.step(&grads)?;
        }
        drop(grads);
        let mem_peak_bytes = mamba_model::memory::peak_bytes(&dev).ok().flatten();
        st.step += 1;
        let step_tokens = ranks.size() * micro.iter().map(|b| b.tokens()).sum::<usize>();
        st.tokens += step_tokens as u64;
        last_loss = loss;
        let pace = clock.tick(st.step, st.tokens);
        let rec = StepRecord {
            step: st.step,
            epoch,
            tokens: st.tokens,
            loss: Some(loss),
            lr: Some(st.lr),
            grad_norm: Some(gnorm),
            tokens_per_s: Some(step_tokens as f64 / t0.elapsed().as_secs_f64()),
            loss_scale: Some(st.loss_scale),
            skipped: !apply,
            passes: Some(st.tokens as f64 / run.train_tokens.max(1) as f64),
            eta_s: pace.map(|p| p.left.as_secs_f64()),
            mem_peak_bytes,
        };
        run.write(&rec)?;
        console.step(&rec, cfg, pace.filter(|_| clock.first_report(st.step)));
        // On schedule, and after the last step: an eval, then a checkpoint.
        let last = st.step == cfg.max_steps;
        if !run.eval.is_empty() && (st.step.is_multiple_of(cfg.eval_every) || last) {
            let rec = evaluate(&run, &st, &o, ranks)?;
            run.write(&rec)?;
            console.eval(&rec, &run.eval.covers());
            last_val = rec.val_loss;
        }
        if st.step.is_multiple_of(cfg.save_every) || last {
            st.loader = run.snapshot_for(&snapshot, st.step)?;
            console.saved(&save(&run, &st, cfg, last)?);
        }
    }
    console.finish();
    let final_dir = opts.checkpoint_dir.join(FINAL);
    if run.state.step == cfg.max_steps && !final_dir.exists() {
        // Resumed at max_steps: nothing to train, but final/ must exist.
        run.save(FINAL, &st)?;
    }
    Ok(Summary {
        steps: st.step,
        tokens: st.tokens,
        last_loss,
        last_val_loss: last_val,
        final_dir,
    })
}

/// The `grad_accum` micro-batches of a step: this rank's share of the next global batches (the
/// loader state they carry kept in `snapshot`), and the epoch of the last.
fn micro_batches(
    loader: &Loader,
    snapshot: &mut Option<loader::LoaderState>,
    grad_accum: usize,
    ranks: &ranks::Ranks,
) -> Result<(Vec<pack::Batch>, u64), TrainError> {
    let mut micro = Vec::with_capacity(grad_accum);
    let mut epoch = 0;
    for _ in 0..grad_accum {
        let mut item = loader.recv().ok_or(TrainError::StreamEnded)??;
        if let Some(s) = item.state.take() {
            *snapshot = Some(s);
        }
        epoch = item.epoch;
        micro.push(ranks.share(item.batch));
    }
    Ok((micro, epoch))
}

/// How this step computes: the run's precision, checkpointing and document resets, at the
/// loss scale of now.
fn step_options(cfg: &TrainConfig, loss_scale: f64) -> step::StepOptions {
    step::StepOptions {
        doc_reset: cfg.doc_reset,
        dtype: cfg.precision.dtype(),
        checkpointing: cfg.grad_checkpointing,
        loss_scale,
    }
}

/// Decides whether a step's update is applied. A non-finite loss or gradient is never trained
/// on: the step is skipped (and logged), and `MAX_BAD_STEPS` of them in a row stop the run.
/// Under fp16, overflowed gradients with a finite loss only mean the loss scale is too high:
/// the scaler lowers it and the skip does not count as bad.
struct Guard {
    fp16: bool,
    scaler: LossScaler,
    /// Non-finite steps in a row.
    bad: u64,
}

impl Guard {
    fn new(cfg: &TrainConfig, scaler: LossScaler) -> Guard {
        Guard {
            fp16: cfg.precision == config::Precision::Fp16,
            scaler,
            bad: 0,
        }
    }

    /// Whether to apply the update of a step of this loss and gradient norm; a skip and the
    /// loss scale are recorded in `st`, which checkpoints carry.
    fn admit(&mut self, loss: f64, gnorm: f64, st: &mut TrainerState) -> Result<bool, TrainError> {
        let overflow = self.fp16 && loss.is_finite();
        let apply = match overflow {
            true => self.scaler.update(gnorm.is_finite()),
            false => gnorm.is_finite(),
        };
        (st.loss_scale, st.scale_good_steps) = (self.scaler.scale, self.scaler.good_steps);
        match (apply, overflow) {
            (true, _) => self.bad = 0,
            (false, false) => self.bad += 1,
            (false, true) => {}
        }
        st.skipped_steps += u64::from(!apply);
        if self.bad >= MAX_BAD_STEPS {
            return Err(TrainError::Diverged(self.bad));
        }
        Ok(apply)
    }
}

/// The val loss of the model now, over the eval set: each rank scores its share of every
/// batch, and the mean over the ranks is the loss of the whole batches.
fn evaluate(
    run: &Run,
    st: &TrainerState,
    o: &step::StepOptions,
    ranks: &ranks::Ranks,
) -> Result<EvalRecord, TrainError> {
    let val_loss = ranks.mean(step::eval_loss(&run.model, &run.eval.batches, o)?);
    Ok(EvalRecord {
        step: st.step,
        tokens: st.tokens,
        val_loss: Some(val_loss),
        val_ppl: Some(val_loss.exp()),
        val_tokens: Some(run.eval.tokens),
    })
}

/// Saves the checkpoint of step `st.step` (`final/` at the last step, else `step-N`, the
/// periodic ones pruned to `keep_last`); returns its directory.
fn save(
    run: &Run,
    st: &TrainerState,
    cfg: &TrainConfig,
    last: bool,
) -> Result<PathBuf, TrainError> {
    let name = match last {
        true => FINAL.to_string(),
        false => checkpoint::step_name(st.step),
    };
    let dir = run.save(&name, st)?;
    if !last && run.root {
        checkpoint::prune(&run.checkpoint_dir, cfg.keep_last)?;
    }
    Ok(dir)
}
