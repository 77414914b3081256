//! Checkpoints (DESIGN.md contract): `step-000500/` and `final/`, each a transformers model
//! directory (`model.safetensors`, `config.json`) plus `tokenizer.json`,
//! `optimizer.safetensors` and `trainer_state.json` (a LoRA run's holds PEFT's adapter files
//! instead of the model, and its state names the base). A checkpoint is written into a hidden
//! temporary directory and renamed into place, so a crash leaves the last good one intact.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;
use mamba_model::io::peft;
use mamba_model::io::safetensors::Load;
use mamba_model::lora::Adapters;
use mamba_model::{AdamW, MambaLM};
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::loader::LoaderState;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const FINAL: &str = "final";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Model(#[from] mamba_model::Error),
    #[error("no checkpoint in {0} (looked for step-NNNNNN/ and final/ with {STATE_FILE})")]
    None(String),
    #[error("checkpoint {0}: not found")]
    NotFound(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Everything besides the weights and moments needed to continue a run exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    pub tokens: u64,
    pub lr: f64,
    pub loss_scale: f64,
    /// Good fp16 steps since the loss scale last changed.
    #[serde(default)]
    pub scale_good_steps: u64,
    pub skipped_steps: u64,
    pub loader: LoaderState,
    pub tokenizer_sha256: String,
    pub vocab_size: usize,
    pub eos_id: u32,
    pub config: TrainConfig,
    /// The base model of a LoRA run (its `--init`): the checkpoint holds only the adapters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_base: Option<PathBuf>,
}

/// What a checkpoint holds as its weights: the whole model, or LoRA adapters in PEFT's
/// format over the base its state names.
pub enum Trained<'a> {
    Model(&'a MambaLM),
    Adapters(&'a Adapters),
}

/// A model directory opened: a checkpoint of `mamba train` or a transformers model directory.
/// Generate, eval and train's `--init` / `--resume` all open one this way and add their own
/// checks.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub model: MambaLM,
    /// The model's parameters, to train on.
    pub varmap: VarMap,
    /// `tokenizer.json` beside the model, if there is one.
    pub tokenizer: Option<PathBuf>,
    /// `trainer_state.json` of a `mamba train` checkpoint; `None` where there is none.
    pub state: Option<TrainerState>,
}

impl Checkpoint {
    /// Loads `dir`'s model onto `device`, and its trainer state when `dir` has one (a state
    /// file that does not parse is an error naming it, never ignored).
    pub fn open(dir: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
        Self::open_with(dir, device, Load::Read)
    }

    /// [`Checkpoint::open`] for a run that reads the weights (generate, eval): they may stay
    /// in a map of the file ([`MambaLM::load_mapped`]).
    pub fn open_mapped(dir: &Path, device: &Device) -> Result<Checkpoint, CheckpointError> {
        Self::open_with(dir, device, Load::Map)
    }

    /// [`Checkpoint::open_mapped`], then `adapter` (a LoRA adapter in PEFT's format), if
    /// given, merged in (see [`Checkpoint::with_adapter`]): what generate and eval read.
    pub fn open_adapted(
        dir: &Path,
        adapter: Option<&Path>,
        device: &Device,
    ) -> Result<Checkpoint, CheckpointError> {
        let ck = Self::open_mapped(dir, device)?;
        match adapter {
            Some(a) => ck.with_adapter(a, device),
            None => Ok(ck),
        }
    }

    fn open_with(dir: &Path, device: &Device, load: Load) -> Result<Checkpoint, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::NotFound(dir.display().to_string()));
        }
        let state = match dir.join(STATE_FILE).exists() {
            true => Some(load_state(dir)?),
            false => None,
        };
        let tokenizer = Some(dir.join(TOKENIZER_FILE)).filter(|p| p.is_file());
        // A LoRA run's checkpoint: its base with the adapters merged in.
        if let Some(base) = state.as_ref().and_then(|s| s.lora_base.clone()) {
            let ck = Self::open_with(&base, device, load)?.with_adapter(dir, device)?;
            return Ok(Checkpoint {
                dir: dir.to_path_buf(),
                tokenizer: tokenizer.or(ck.tokenizer),
                state,
                ..ck
            });
        }
        let (model, varmap) = MambaLM::load_with(dir, device, load)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            model,
            varmap,
            tokenizer,
            state,
        })
    }
}

impl Checkpoint {
    /// The model with the LoRA adapter in `adapter` (PEFT's format) merged into its weights;
    /// the result has no variables (for generate and eval).
    pub fn with_adapter(
        self,
        adapter: &Path,
        device: &Device,
    ) -> Result<Checkpoint, CheckpointError> {
        let adapters = peft::load(adapter, self.model.config(), device)?;
        Ok(Checkpoint {
            model: self
                .model
                .merge_adapters(&adapters)
                .map_err(mamba_model::Error::from)?,
            varmap: VarMap::new(),
            ..self
        })
    }
}

/// `step-000500`.
pub fn step_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Writes checkpoint `name` under `root` atomically; returns its path.
pub fn save(
    root: &Path,
    name: &str,
    weights: Trained,
    opt: &AdamW,
    tokenizer: &Path,
    state: &TrainerState,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    match weights {
        Trained::Model(model) => model.save(&tmp)?,
        Trained::Adapters(adapters) => {
            let base = state.lora_base.as_deref().unwrap_or(Path::new(""));
            peft::save(&tmp, adapters, &base.display().to_string())?
        }
    }
    let tok = tmp.join(TOKENIZER_FILE);
    std::fs::copy(tokenizer, &tok).map_err(io(tokenizer))?;
    opt.save(tmp.join(OPTIMIZER_FILE))?;
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_string_pretty(state).map_err(|source| CheckpointError::Json {
        path: state_path.display().to_string(),
        source,
    })?;
    std::fs::write(&state_path, json + "\n").map_err(io(&state_path))?;
    let dest = root.join(name);
    // Replacing a checkpoint (final/ of a resumed run): move the old one aside first, so one
    // of the two is complete at every moment.
    let old = root.join(format!(".{name}.old"));
    if dest.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(&dest, &old).map_err(io(&dest))?;
    }
    std::fs::rename(&tmp, &dest).map_err(io(&tmp))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(dest)
}

pub fn load_state(dir: &Path) -> Result<TrainerState, CheckpointError> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|source| CheckpointError::Json {
        path: path.display().to_string(),
        source,
    })
}

/// Periodic checkpoints under `root`, oldest first (complete ones only: renamed into place).
pub fn periodic(root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The checkpoint with the most steps under `root` (`final/` included).
pub fn latest(root: &Path) -> Result<PathBuf, CheckpointError> {
    let mut all = periodic(root);
    let fin = root.join(FINAL);
    if let Ok(s) = load_state(&fin) {
        all.push((s.step, fin));
    }
    all.into_iter()
        .filter(|(_, p)| p.join(STATE_FILE).exists())
        .max_by_key(|(s, _)| *s)
        .map(|(_, p)| p)
        .ok_or_else(|| CheckpointError::None(root.display().to_string()))
}

/// Removes all but the `keep` newest periodic checkpoints (0 keeps all).
pub fn prune(root: &Path, keep: usize) -> Result<(), CheckpointError> {
    let all = periodic(root);
    if keep == 0 || all.len() <= keep {
        return Ok(());
    }
    for (_, p) in &all[..all.len() - keep] {
        std::fs::remove_dir_all(p).map_err(io(p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::loader::LoaderOptions;
    use candle_core::Device;
    use mamba_model::{AdamWConfig, Config};

    fn state(step: u64) -> TrainerState {
        let o = LoaderOptions {
            seq_len: 4,
            batch_size: 1,
            eos: 0,
            seed: 0,
            shuffle_buffer: 2,
            shuffle: true,
            prefetch: 1,
            threads: 1,
            epochs: None,
            snapshot_every: 0,
        };
        TrainerState {
            step,
            tokens: step * 4,
            lr: 1e-3,
            loss_scale: 1.0,
            scale_good_steps: 0,
            skipped_steps: 0,
            loader: LoaderState::start(&o),
            tokenizer_sha256: "abc".into(),
            vocab_size: 32,
            eos_id: 0,
            lora_base: None,
            config: TrainConfig::default(),
        }
    }

    #[test]
    fn checkpoints_are_complete_atomic_and_pruned() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let tok = r.join("tok.json");
        std::fs::write(&tok, "{}").unwrap();
        let cfg = Config::preset("tiny", 32).unwrap();
        let (model, vm) = MambaLM::init(&cfg, 0, &Device::Cpu).unwrap();
        let opt = AdamW::from_varmap(&vm, AdamWConfig::default()).unwrap();
        for step in [2, 4, 6] {
            save(
                r,
                &step_name(step),
                Trained::Model(&model),
                &opt,
                &tok,
                &state(step),
            )
            .unwrap();
        }
        let dir = r.join("step-000004");
        for f in [
            "model.safetensors",
            "config.json",
            TOKENIZER_FILE,
            OPTIMIZER_FILE,
            STATE_FILE,
        ] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        assert_eq!(load_state(&dir).unwrap().step, 4);
        MambaLM::load(&dir, &Device::Cpu).unwrap();
        // A crash while writing step 8 leaves only a hidden temporary directory behind.
        std::fs::create_dir_all(r.join(".step-000008.tmp")).unwrap();
        std::fs::write(r.join(".step-000008.tmp/model.safetensors"), "half").unwrap();
        assert_eq!(latest(r).unwrap(), r.join("step-000006"));
        // final/ counts by its recorded step, and is replaced whole.
        save(r, FINAL, Trained::Model(&model), &opt, &tok, &state(7)).unwrap();
        save(r, FINAL, Trained::Model(&model), &opt, &tok, &state(9)).unwrap();
        assert_eq!(latest(r).unwrap(), r.join(FINAL));
        assert_eq!(load_state(&r.join(FINAL)).unwrap().step, 9);
        prune(r, 2).unwrap();
        let left: Vec<u64> = periodic(r).into_iter().map(|(s, _)| s).collect();
        assert_eq!(left, vec![4, 6]);
        assert!(!r.join(".final.old").exists() && !r.join(".final.tmp").exists());
    }

    #[test]
    fn open_reads_the_state_and_names_a_malformed_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("m");
        let (model, _) =
            MambaLM::init(&Config::preset("tiny", 32).unwrap(), 0, &Device::Cpu).unwrap();
        model.save(&dir).unwrap();
        let ck = Checkpoint::open(&dir, &Device::Cpu).unwrap();
        assert!(ck.state.is_none() && ck.tokenizer.is_none());
        std::fs::write(dir.join(STATE_FILE), "{\"step\": ").unwrap();
        let e = Checkpoint::open(&dir, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(STATE_FILE), "{e}");
        let e = Checkpoint::open(&root.path().join("none"), &Device::Cpu)
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "checkpoint {}: not found",
                root.path().join("none").display()
            )
        );
    }

    #[test]
    fn an_empty_directory_has_no_checkpoint() {
        let root = tempfile::tempdir().unwrap();
        let e = latest(root.path()).unwrap_err().to_string();
        assert!(e.contains("no checkpoint"), "{e}");
    }
}
