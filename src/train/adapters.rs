//! Training with LoRA adapters (`--lora-rank R`): the `--init` model frozen (held in
//! `--lora-base-dtype`), adapters on its projections the only variables, saved in PEFT's
//! format with the base named, and resumed from there.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mamba_model::io::peft;
use mamba_model::io::safetensors::Load;
use mamba_model::lora::{default_targets, Adapters, LoraConfig};
use mamba_model::{Config, MambaLM};

use super::{TrainConfig, TrainError};

/// The adapters a run trains and the base model they sit on.
pub struct LoraRun {
    pub adapters: Adapters,
    /// The base model's directory, as given to `--init`.
    pub base: PathBuf,
}

/// The run's LoRA settings for `model`, defaults filled in.
pub fn config(cfg: &TrainConfig, model: &Config) -> Result<LoraConfig, TrainError> {
    let targets = match &cfg.lora_targets {
        Some(list) => list
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        None => default_targets(model),
    };
    let lcfg = LoraConfig {
        rank: cfg.lora_rank,
        alpha: cfg.lora_alpha.unwrap_or(cfg.lora_rank as f64),
        dropout: cfg.lora_dropout,
        targets,
        rslora: false,
    };
    lcfg.check(model).map_err(TrainError::Unsupported)?;
    Ok(lcfg)
}

fn base_dtype(cfg: &TrainConfig) -> DType {
    match cfg.lora_base_dtype.as_str() {
        "f32" => DType::F32,
        _ => DType::BF16,
    }
}

/// Fresh adapters over `base` (just read from `--init`): the model the run trains, the
/// adapters' variables, and the run's adapters.
pub fn start(
    cfg: &TrainConfig,
    base: MambaLM,
    base_dir: &Path,
    dev: &Device,
) -> Result<(MambaLM, VarMap, LoraRun), TrainError> {
    let lcfg = config(cfg, base.config())?;
    let (adapters, vm) = Adapters::init(base.config(), &lcfg, cfg.seed, dev)?;
    // Absolute: the checkpoints name it, and are read from anywhere.
    let base_dir = std::fs::canonicalize(base_dir).map_err(|source| TrainError::Io {
        path: base_dir.display().to_string(),
        source,
    })?;
    finish(cfg, base, &base_dir, adapters, vm)
}

/// The adapters of checkpoint `dir` over their base, as variables, to go on training.
pub fn resume(
    cfg: &TrainConfig,
    dir: &Path,
    base_dir: &Path,
    dev: &Device,
) -> Result<(MambaLM, VarMap, LoraRun), TrainError> {
    let (base, _) = MambaLM::load_with(base_dir, dev, Load::Map)?;
    let (adapters, vm) = peft::load(dir, base.config(), dev)?.into_vars()?;
    finish(cfg, base, base_dir, adapters, vm)
}

fn finish(
    cfg: &TrainConfig,
    base: MambaLM,
    base_dir: &Path,
    adapters: Adapters,
    vm: VarMap,
) -> Result<(MambaLM, VarMap, LoraRun), TrainError> {
    // The base's variables go with it: nothing computes their gradients or moments.
    let base = base.into_weight_dtype(base_dtype(cfg))?;
    let model = base.with_adapters(&adapters);
    let run = LoraRun {
        adapters,
        base: base_dir.to_path_buf(),
    };
    Ok((model, vm, run))
}

impl LoraRun {
    /// Dropout masks for optimizer step `step` of a run seeded `seed`; `None`: no dropout
    /// (eval).
    pub fn set_step(&self, seed: u64, step: Option<u64>) {
        let s = step.map(|s| mamba_model::rng::SplitMix64::derive(seed, &[s]).next_u64());
        self.adapters.set_dropout_seed(s);
    }

    /// The line `mamba train` prints: what is adapted and how much is trained.
    pub fn describe(&self, model: &Config) -> String {
        let c = &self.adapters.cfg;
        let total = MambaLM::num_params(model);
        let trained = self.adapters.num_params();
        format!(
            "LoRA rank {} alpha {} dropout {} on {} of {}: {} trainable parameters ({:.2}% of {})",
            c.rank,
            c.alpha,
            c.dropout,
            c.targets.join(","),
            self.base.display(),
            trained,
            100.0 * trained as f64 / total.max(1) as f64,
            total
        )
    }

    /// A note when targets beyond the defaults are adapted: PEFT and transformers do not apply
    /// those as this tool does (see [`mamba_model::LayerKind::lora_targets`]).
    pub fn caveat(&self, model: &Config) -> Option<String> {
        let defaults = default_targets(model);
        let beyond: Vec<&str> = (self.adapters.cfg.targets.iter())
            .filter(|t| !defaults.contains(t))
            .map(String::as_str)
            .collect();
        (!beyond.is_empty()).then(|| {
            format!(
                "note: PEFT refuses or skips adapters on {} of Mamba models; to hand this run \
                 to transformers, `mamba merge` the base and a checkpoint",
                beyond.join(", ")
            )
        })
    }
}
