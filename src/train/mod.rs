//! `mamba train`: streams a shard store into the Mamba model.
//!
//! ```text
//! loader (reader threads -> packer -> batcher) ==bounded channel==> the loop in [`train`]
//! ```
//!
//! The loop itself fits on a screen: learning rate, `grad_accum` micro-batches, clipping,
//! AdamW, a log line, and on schedule an eval and a checkpoint. Setup (store, model, resume
//! checks) lives in [`setup`].

pub mod checkpoint;
pub mod choices;
pub mod config;
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
use loader::{Item, LoadError, Loader};
use metrics::{EvalRecord, Metrics, StepRecord};

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

/// The next global batch (keeping the loader state it carries); the caller takes its share.
fn next(loader: &Loader, snapshot: &mut Option<loader::LoaderState>) -> Result<Item, TrainError> {
    let mut item = loader.recv().ok_or(TrainError::StreamEnded)??;
    if let Some(s) = item.state.take() {
        *snapshot = Some(s);
    }
    Ok(item)
}

/// Trains until `max_steps`, checkpointing on the way; returns the summary. With several
/// ranks, every rank calls this; rank 0 alone writes.
pub fn train(cfg: &TrainConfig, opts: &RunOptions) -> Result<Summary, TrainError> {
    let ranks = &opts.ranks;
    if let Some(rank) = ranks.first_different(|| Ok::<_, TrainError>(cfg.fingerprint()))? {
        // Different batch sizes or models would pair up the wrong gradients.
        return Err(TrainError::Mismatch(format!(
            "rank {rank} resolved other settings than rank 0 (a different --config, flags, or \
             --vram auto on another GPU?); give every rank the same settings"
        )));
    }
    let mut run = setup::Run::new(cfg, opts)?;
    if let Some(rank) = ranks.first_different(|| run.fingerprint())? {
        return Err(TrainError::Mismatch(format!(
            "rank {rank} starts from another state than rank 0 (another step, loader position \
             or weights): every rank must read the same --resume or --init checkpoint; put \
             --checkpoint-dir on storage all ranks share"
        )));
    }
    // Each rank evaluates its share of every eval batch (all of it when a batch is too small
    // to split); the mean over the ranks is the loss of the whole batches.
    run.eval_batches = std::mem::take(&mut run.eval_batches)
        .into_iter()
        .map(|b| ranks.share_whole(b))
        .collect();
    let (model, vars) = (&run.model, &run.vars);
    let mut st = run.state.clone();
    let mut snapshot = Some(st.loader.clone());
    let mut metrics = match ranks.is_root() {
        true => Some(
            Metrics::open(&run.metrics_path).map_err(|source| TrainError::Io {
                path: run.metrics_path.display().to_string(),
                source,
            })?,
        ),
        false => None,
    };
    let bar = setup::progress_bar(opts.progress && ranks.is_root(), st.step, cfg.max_steps);
    let say = |line: &str| {
        if ranks.is_root() {
            setup::say(&bar, line)
        }
    };
    if run.eval_batches.is_empty() {
        say(
            "note: the val split is empty or shorter than one window; no evaluation (ingest with a larger --val-fraction)",
        );
    }
    if let Some(part) = &run.part_of_store {
        say(&format!(
            "note: this store is part {part} of a partitioned ingest; `mamba ingest --merge` \
             its parts to train on all of them"
        ));
    }
    let plan = plan::Plan::new(cfg, st.step, run.train_tokens);
    for line in std::iter::once(plan.line(cfg)).chain(plan.warnings(cfg)) {
        say(&line);
    }
    let mut clock = plan::Clock::new(cfg.max_steps);
    let (mut last_loss, mut last_val, mut bad) = (f64::NAN, None, 0u64);
    let fp16 = cfg.precision == config::Precision::Fp16;
    let mut scaler = scaler::LossScaler::new(st.loss_scale, st.scale_good_steps);
    while st.step < cfg.max_steps {
        let t0 = Instant::now();
        st.lr = schedule::lr_at(st.step, cfg.warmup_steps, cfg.max_steps, cfg.lr, cfg.min_lr);
        run.opt.set_lr(st.lr);
        let mut epoch = 0;
        let micro = (0..cfg.grad_accum)
            .map(|_| {
                next(&run.loader, &mut snapshot).map(|i| (epoch = i.epoch, ranks.share(i.batch)).1)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let o = step::StepOptions {
            doc_reset: cfg.doc_reset,
            dtype: cfg.precision.dtype(),
            checkpointing: cfg.grad_checkpointing,
            loss_scale: scaler.scale,
        };
        let (loss, mut grads) = step::accumulate(model, vars, &micro, &o)?;
        // The mean over the ranks is the loss of the global batch; every rank sees the same.
        let loss = ranks.mean(loss);
        let gnorm = match loss.is_finite() {
            true => {
                ranks.average(&mut grads, vars)?;
                clip_grad_norm(&mut grads, vars, cfg.grad_clip)?
            }
            false => f64::NAN,
        };
        // A non-finite loss or gradient is never trained on: the step is skipped and logged.
        // Under fp16 overflowed gradients with a finite loss only mean the scale is too high.
        let overflow = fp16 && loss.is_finite();
        let apply = if overflow {
            scaler.update(gnorm.is_finite())
        } else {
            gnorm.is_finite()
        };
        let skipped = !apply;
        if apply {
            run.opt.step(&grads)?;
            bad = 0;
        } else {
            st.skipped_steps += 1;
            bad += u64::from(!overflow);
            if bad >= MAX_BAD_STEPS {
                return Err(TrainError::Diverged(bad));
            }
        }
        (st.loss_scale, st.scale_good_steps) = (scaler.scale, scaler.good_steps);
        drop(grads);
        st.step += 1;
        let step_tokens = ranks.size() * micro.iter().map(|b| b.tokens()).sum::<usize>();
        st.tokens += step_tokens as u64;
        last_loss = loss;
        let pace = clock.tick(st.step, st.tokens);
        let tokens_per_s = step_tokens as f64 / t0.elapsed().as_secs_f64();
        let rec = StepRecord {
            step: st.step,
            epoch,
            tokens: st.tokens,
            loss: Some(loss),
            lr: Some(st.lr),
            grad_norm: Some(gnorm),
            tokens_per_s: Some(tokens_per_s),
            loss_scale: Some(st.loss_scale),
            skipped,
            passes: Some(st.tokens as f64 / run.train_tokens.max(1) as f64),
            eta_s: pace.map(|p| p.left.as_secs_f64()),
        };
        run.write(&mut metrics, &rec)?;
        if st.step.is_multiple_of(cfg.log_every) || skipped {
            say(&rec.line(cfg.max_steps));
        }
        if let Some(pace) = pace.filter(|_| clock.first_report(st.step)) {
            say(&pace.line(cfg.max_steps - st.step));
        }
        bar.set_position(st.step);
        bar.set_message(format!(
            "loss {loss:.4} lr {:.1e} {:.0} tok/s",
            st.lr, tokens_per_s
        ));
        let last = st.step == cfg.max_steps;
        if !run.eval_batches.is_empty() && (st.step.is_multiple_of(cfg.eval_every) || last) {
            let val_loss = ranks.mean(step::eval_loss(model, &run.eval_batches, &o)?);
            let rec = EvalRecord {
                step: st.step,
                tokens: st.tokens,
                val_loss: Some(val_loss),
                val_ppl: Some(val_loss.exp()),
            };
            run.write(&mut metrics, &rec)?;
            say(&rec.line());
            last_val = Some(val_loss);
        }
        if st.step.is_multiple_of(cfg.save_every) || last {
            st.loader = run.snapshot_for(&mut snapshot, st.step)?;
            let name = if last {
                FINAL.to_string()
            } else {
                checkpoint::step_name(st.step)
            };
            let dir = run.save(&name, &st)?;
            if !last && ranks.is_root() {
                checkpoint::prune(&opts.checkpoint_dir, cfg.keep_last)?;
            }
            say(&format!("saved {}", dir.display()));
        }
    }
    bar.finish_and_clear();
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

impl setup::Run {
    /// A hash of where this run starts (step, tokens, loader position and the weights'
    /// sums), to check that data-parallel ranks start together.
    fn fingerprint(&self) -> Result<u64, TrainError> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.state.step, self.state.tokens).hash(&mut h);
        serde_json::to_string(&self.state.loader)
            .unwrap_or_default()
            .hash(&mut h);
        for v in &self.vars {
            let sum = v.as_tensor().sum_all()?.to_dtype(candle_core::DType::F64)?;
            sum.to_scalar::<f64>()?.to_bits().hash(&mut h);
        }
        Ok(h.finish())
    }

    /// Appends a record to the metrics (which only rank 0 holds).
    fn write(
        &self,
        m: &mut Option<Metrics>,
        rec: &impl serde::Serialize,
    ) -> Result<(), TrainError> {
        let Some(m) = m else { return Ok(()) };
        m.write(rec).map_err(|source| TrainError::Io {
            path: self.metrics_path.display().to_string(),
            source,
        })
    }

    /// Saves checkpoint `name` (on rank 0; the other ranks hold the same state).
    fn save(&self, name: &str, st: &TrainerState) -> Result<PathBuf, TrainError> {
        if !self.root {
            return Ok(self.checkpoint_dir.join(name));
        }
        Ok(checkpoint::save(
            &self.checkpoint_dir,
            name,
            &self.model,
            &self.opt,
            &self.tokenizer,
            st,
        )?)
    }
}
