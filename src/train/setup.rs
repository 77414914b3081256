//! Everything the loop needs, built before it starts: the shard store checked against its
//! manifest, the model (fresh, `--init` or `--resume`), the optimizer, the running loader,
//! the eval set, the metrics file, and the checks that refuse a checkpoint of another tokenizer
//! or setup, or ranks that disagree. [`Run`]'s methods are the loop's access to all of it:
//! where the loader stood, appending a record, saving a checkpoint.

use std::path::{Path, PathBuf};

use candle_core::{Device, Var};
use mamba_model::{AdamW, AdamWConfig, MambaLM};
use mamba_pipeline::shard::manifest::Manifest;
use mamba_pipeline::shard::Split;

use super::adapters;
use super::checkpoint::{self, Checkpoint, TrainerState, OPTIMIZER_FILE, TOKENIZER_FILE};
use super::config::{DeviceSpec, Precision, TrainConfig};
use super::eval::EvalSet;
use super::loader::{open_split, LoadError, Loader, LoaderOptions, LoaderState};
use super::metrics::Metrics;
use super::{RunOptions, TrainError};

/// A run ready to loop.
pub struct Run {
    /// The model trained: with `--lora-rank`, the frozen base with the adapters on.
    pub model: MambaLM,
    /// The adapters of a LoRA run (its only variables).
    pub lora: Option<adapters::LoraRun>,
    /// Trainable parameters, sorted by name.
    pub vars: Vec<Var>,
    pub opt: AdamW,
    pub loader: Loader,
    pub eval: EvalSet,
    /// State at the start (fresh or resumed).
    pub state: TrainerState,
    /// `metrics.jsonl`, which only rank 0 writes (opened by [`Run::start`]).
    metrics: Option<Metrics>,
    pub metrics_path: PathBuf,
    pub checkpoint_dir: PathBuf,
    pub tokenizer: PathBuf,
    /// Tokens in the store's train split.
    pub train_tokens: u64,
    /// Rank 0 of the run's ranks: the one that writes.
    pub root: bool,
    /// `I/N` when the store is one part of a partitioned ingest (not yet merged).
    pub part_of_store: Option<String>,
    accum: u64,
}

/// The device asked for: `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
pub fn device(spec: DeviceSpec) -> Result<Device, TrainError> {
    match spec.ordinal() {
        None => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        Some(ordinal) => {
            let other = spec;
            Device::new_cuda(ordinal).map_err(|e| {
                TrainError::Unsupported(format!(
                    "--device {other}: no usable GPU ({e}); check the driver, or use --device cpu"
                ))
            })
        }
        #[cfg(not(feature = "cuda"))]
        Some(_) => Err(TrainError::Unsupported(super::gpu::no_cuda(spec))),
    }
}

/// `(name, value)` of a setting, named by its field.
macro_rules! named {
    ($c:ident.$name:ident) => {
        (stringify!($name), $c.$name.to_string())
    };
}

/// Settings that decide which batches a run sees; a resumed run must keep them.
fn stream_settings(c: &TrainConfig) -> Vec<(&'static str, String)> {
    vec![
        named!(c.model_size),
        named!(c.seq_len),
        (
            "global batch (batch_size x ranks)",
            c.global_batch().to_string(),
        ),
        named!(c.grad_accum),
        named!(c.seed),
        named!(c.shuffle_buffer),
        named!(c.doc_reset),
    ]
}

fn sorted_vars(vm: &candle_nn::VarMap) -> Vec<Var> {
    let data = vm.data().lock().map(|d| d.clone()).unwrap_or_default();
    let mut named: Vec<(String, Var)> = data.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, v)| v).collect()
}

impl Run {
    /// The run of this rank, once every rank has the same settings and the same starting
    /// point, with its share of the eval set and (rank 0) its metrics file open.
    pub fn start(cfg: &TrainConfig, opts: &RunOptions) -> Result<Run, TrainError> {
        let ranks = &opts.ranks;
        if let Some(rank) = ranks.first_different(|| Ok::<_, TrainError>(cfg.fingerprint()))? {
            // Different batch sizes or models would pair up the wrong gradients.
            return Err(TrainError::Mismatch(format!(
                "rank {rank} resolved other settings than rank 0 (a different --config, flags, or \
                 --vram auto on another GPU?); give every rank the same settings"
            )));
        }
        let mut run = Run::new(cfg, opts)?;
        if let Some(rank) = ranks.first_different(|| run.fingerprint())? {
            return Err(TrainError::Mismatch(format!(
                "rank {rank} starts from another state than rank 0 (another step, loader position \
                 or weights): every rank must read the same --resume or --init checkpoint; put \
                 --checkpoint-dir on storage all ranks share"
            )));
        }
        run.eval = std::mem::take(&mut run.eval).shared(ranks);
        if run.root {
            let m = Metrics::open(&run.metrics_path).map_err(|source| TrainError::Io {
                path: run.metrics_path.display().to_string(),
                source,
            })?;
            run.metrics = Some(m);
        }
        Ok(run)
    }

    fn new(cfg: &TrainConfig, opts: &RunOptions) -> Result<Run, TrainError> {
        let dev = device(cfg.device)?;
        let manifest = Manifest::load(&opts.shards)?;
        let tok = &manifest.tokenizer;
        let tokenizer = opts.shards.join(&tok.file);
        let train_tokens: u64 = manifest.shards(Split::Train).map(|s| s.tokens).sum();
        let need = (cfg.global_batch() * (cfg.seq_len + 1)) as u64;
        if train_tokens < need {
            return Err(LoadError::TooSmall {
                split: "train",
                tokens: train_tokens,
                need,
            }
            .into());
        }
        let train_shards = open_split(&opts.shards, &manifest, Split::Train, true)?;
        let val_shards = open_split(&opts.shards, &manifest, Split::Val, true)?;

        let resume_dir = match &opts.resume {
            Some(Some(d)) => Some(d.clone()),
            Some(None) => Some(checkpoint::latest(&opts.checkpoint_dir)?),
            None => None,
        };
        let adamw = AdamWConfig {
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: 1e-8,
            weight_decay: cfg.weight_decay,
        };
        let loader_opts = LoaderOptions {
            seq_len: cfg.seq_len,
            // Every rank reads the whole stream and keeps its share of each batch.
            batch_size: cfg.global_batch(),
            eos: tok.eos_id,
            seed: cfg.seed,
            shuffle_buffer: cfg.shuffle_buffer,
            shuffle: true,
            prefetch: cfg.prefetch,
            threads: cfg.reader_threads,
            epochs: None,
            // Every save point and the last step fall on a multiple of gcd(save_every, max_steps).
            snapshot_every: gcd(cfg.save_every, cfg.max_steps) * cfg.grad_accum as u64,
        };
        let mut lora = None;
        let (model, vm, state) = match &resume_dir {
            Some(dir) => {
                let st = match (dir.is_dir(), dir.join(checkpoint::STATE_FILE).is_file()) {
                    (true, true) => checkpoint::load_state(dir)?,
                    (true, false) => return Err(no_state(dir)),
                    (false, _) => {
                        let shown = dir.display().to_string();
                        return Err(checkpoint::CheckpointError::NotFound(shown).into());
                    }
                };
                let (model, vm) = match &st.lora_base {
                    Some(base) => {
                        let (model, vm, run) = adapters::resume(cfg, dir, base, &dev)?;
                        lora = Some(run);
                        (model, vm)
                    }
                    None => {
                        let ck = Checkpoint::open(dir, &dev)?;
                        (ck.model, ck.varmap)
                    }
                };
                check_same(dir, "tokenizer sha256", &st.tokenizer_sha256, &tok.sha256)?;
                check_same(dir, "vocab size", &st.vocab_size, &tok.vocab_size)?;
                for ((name, a), (_, b)) in
                    stream_settings(&st.config).iter().zip(stream_settings(cfg))
                {
                    check_same(dir, name, a, &b)?;
                }
                (model, vm, st)
            }
            None => {
                let (model, vm) = match (&opts.init, cfg.lora_rank) {
                    (Some(dir), 0) => init_from(dir, &opts.shards, &manifest, &dev, false)?,
                    (Some(dir), _) => {
                        // Mapped: the frozen base is cast from the file's pages, never held
                        // whole in f32 on the heap.
                        let (base, _) = init_from(dir, &opts.shards, &manifest, &dev, true)?;
                        let (model, vm, run) = adapters::start(cfg, base, dir, &dev)?;
                        lora = Some(run);
                        (model, vm)
                    }
                    (None, 0) => {
                        let model = cfg.new_model(tok.vocab_size);
                        MambaLM::init(&model, cfg.seed, &dev)?
                    }
                    (None, _) => {
                        return Err(TrainError::Unsupported(
                            "--lora-rank trains adapters on a pretrained model: give it with --init DIR"
                                .into(),
                        ))
                    }
                };
                let st = TrainerState {
                    step: 0,
                    tokens: 0,
                    lr: 0.0,
                    loss_scale: match cfg.precision {
                        Precision::Fp16 => super::scaler::INITIAL_SCALE,
                        _ => 1.0,
                    },
                    scale_good_steps: 0,
                    skipped_steps: 0,
                    loader: LoaderState::start(&loader_opts),
                    tokenizer_sha256: tok.sha256.clone(),
                    vocab_size: tok.vocab_size,
                    eos_id: tok.eos_id,
                    config: cfg.clone(),
                    lora_base: lora.as_ref().map(|l| l.base.clone()),
                };
                (model, vm, st)
            }
        };
        let mut opt = AdamW::from_varmap(&vm, adamw)?;
        if let Some(dir) = &resume_dir {
            opt.load(dir.join(OPTIMIZER_FILE))?;
        }
        let mut state = state;
        state.config = cfg.clone();
        // A model from --init or a checkpoint keeps its architecture, whatever --arch says.
        // (A model of several kinds records its first layer's.)
        state.config.arch = model.config().layers[0];
        state.config.mimo_rank = model.config().mimo_rank;
        // A resumed LoRA run keeps its adapters' settings, whatever the flags say.
        if let Some(l) = &lora {
            let c = &l.adapters.cfg;
            state.config.lora_rank = c.rank;
            state.config.lora_alpha = Some(c.alpha);
            state.config.lora_dropout = c.dropout;
            state.config.lora_targets = Some(c.targets.join(","));
        }
        let eval = EvalSet::load(&val_shards, &loader_opts, cfg.eval_batches)?;
        let loader = Loader::spawn(train_shards, loader_opts, state.loader.clone());
        std::fs::create_dir_all(&opts.checkpoint_dir).map_err(|source| TrainError::Io {
            path: opts.checkpoint_dir.display().to_string(),
            source,
        })?;
        Ok(Run {
            lora,
            vars: sorted_vars(&vm),
            model,
            opt,
            loader,
            eval,
            state,
            metrics: None,
            metrics_path: opts.checkpoint_dir.join("metrics.jsonl"),
            checkpoint_dir: opts.checkpoint_dir.clone(),
            tokenizer,
            train_tokens: manifest.totals.train.tokens,
            root: opts.ranks.is_root(),
            part_of_store: manifest.settings[mamba_pipeline::ingest::PART_SETTING]
                .as_str()
                .map(str::to_string),
            accum: cfg.grad_accum as u64,
        })
    }

    /// The loader state right after the last batch of optimizer step `step`.
    pub fn snapshot_for(
        &self,
        snapshot: &Option<LoaderState>,
        step: u64,
    ) -> Result<LoaderState, TrainError> {
        match snapshot {
            Some(s) if s.batches == step * self.accum => Ok(s.clone()),
            _ => Err(TrainError::NoSnapshot(step)),
        }
    }

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

    /// LoRA dropout for optimizer step `step` (`None`: off, as in eval); nothing without
    /// adapters.
    pub fn dropout(&self, step: Option<u64>) {
        if let Some(l) = &self.lora {
            l.set_step(self.state.config.seed, step);
        }
    }

    /// Appends a record to the metrics (which only rank 0 holds).
    pub fn write(&mut self, rec: &impl serde::Serialize) -> Result<(), TrainError> {
        let Some(m) = &mut self.metrics else {
            return Ok(());
        };
        m.write(rec).map_err(|source| TrainError::Io {
            path: self.metrics_path.display().to_string(),
            source,
        })
    }

    /// Saves checkpoint `name` (on rank 0; the other ranks hold the same state).
    pub fn save(&self, name: &str, st: &TrainerState) -> Result<PathBuf, TrainError> {
        if !self.root {
            return Ok(self.checkpoint_dir.join(name));
        }
        let weights = match &self.lora {
            Some(l) => checkpoint::Trained::Adapters(&l.adapters),
            None => checkpoint::Trained::Model(&self.model),
        };
        Ok(checkpoint::save(
            &self.checkpoint_dir,
            name,
            weights,
            &self.opt,
            &self.tokenizer,
            st,
        )?)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// A directory to resume from without `trainer_state.json`: a model, not a training run.
fn no_state(dir: &Path) -> TrainError {
    TrainError::Mismatch(format!(
        "{}: no {} to resume from (a model directory starts a run with --init)",
        dir.display(),
        checkpoint::STATE_FILE
    ))
}

fn check_same<T: PartialEq + std::fmt::Display>(
    dir: &Path,
    what: &str,
    checkpoint: &T,
    now: &T,
) -> Result<(), TrainError> {
    if checkpoint == now {
        return Ok(());
    }
    Err(TrainError::Mismatch(format!(
        "{}: {what} is {checkpoint} in the checkpoint but {now} for this run; refusing to resume",
        dir.display()
    )))
}

/// A transformers-format model directory as the starting point: it must have an embedding
/// row for every id of the shard store's tokenizer (more rows are normal: conversions pad the
/// vocabulary to a multiple of 8), and its tokenizer, when it has one, must tokenize as the
/// store's does.
fn init_from(
    dir: &Path,
    shards: &Path,
    manifest: &Manifest,
    dev: &Device,
    mapped: bool,
) -> Result<(MambaLM, candle_nn::VarMap), TrainError> {
    let ck = match mapped {
        true => Checkpoint::open_mapped(dir, dev)?,
        false => Checkpoint::open(dir, dev)?,
    };
    let (model, vm) = (ck.model, ck.varmap);
    let tok = &manifest.tokenizer;
    if model.config().vocab_size < tok.vocab_size {
        return Err(TrainError::Mismatch(format!(
            "--init {}: the model has {} embedding rows but the shard store's tokenizer has {} tokens; ingest with this model's tokenizer (--tokenizer {})",
            dir.display(),
            model.config().vocab_size,
            tok.vocab_size,
            dir.join(TOKENIZER_FILE).display()
        )));
    }
    if let Some(theirs) = &ck.tokenizer {
        let store = shards.join(&tok.file);
        let differ = mamba_pipeline::tokenize::differences(theirs, &store)
            .map_err(|e| TrainError::Mismatch(e.to_string()))?;
        if !differ.is_empty() {
            return Err(TrainError::Mismatch(format!(
                "--init {}: its tokenizer ({}) and the shard store's ({}) tokenize differently: they differ in {}; ingest with --tokenizer {}",
                dir.display(),
                theirs.display(),
                store.display(),
                differ.join(", "),
                theirs.display()
            )));
        }
    }
    Ok((model, vm))
}
