//! Saving and loading a checkpoint directory in the layout of transformers'
//! `MambaForCausalLM` / `Mamba2ForCausalLM` (`config.json` + `model.safetensors`, or shards
//! with an index), and
//! loading the layouts people publish besides: f16/bf16 weights, and mamba_ssm's own
//! `config.json` + `pytorch_model.bin`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};

use super::config::{hf_config, load_config, CONFIG_FILE};
use super::hybrid::file_name;
use super::safetensors::{
    read_f32, read_sharded, write_checkpoint_weights, HostTensor, Load, INDEX_FILE,
};
use crate::error::{Error, Result};
use crate::model::{MambaLM, LM_HEAD};

/// The weights of a checkpoint directory (f32 safetensors, transformers names).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// mamba_ssm's weights file (a PyTorch zip of the state dict).
pub const PYTORCH_FILE: &str = "pytorch_model.bin";
/// Saves past this many bytes of weights are sharded (the Hub's usual 5 GB).
pub const MAX_SHARD_BYTES: usize = 5_000_000_000;

/// Every tensor of a checkpoint directory as f32 values, from the first of `model.safetensors`,
/// a sharded `model.safetensors.index.json`, or `pytorch_model.bin` (read by a reader that
/// accepts tensor data only and executes nothing), with the file read for errors.
pub(crate) fn read_weights(
    dir: &Path,
    load: Load,
) -> Result<(HashMap<String, HostTensor>, std::path::PathBuf)> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok((read_f32(&single, load)?.0.into_iter().collect(), single));
    }
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        return Ok((read_sharded(&index, load)?, index));
    }
    let bin = dir.join(PYTORCH_FILE);
    if bin.is_file() {
        let mut out = HashMap::new();
        let all = candle_core::pickle::read_all(&bin).map_err(|e| Error::file(&bin, e))?;
        for (name, t) in all {
            let shape = t.dims().to_vec();
            let data = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
                .map_err(|e| Error::tensor(&bin, &name, e))?;
            out.insert(name, HostTensor { data, shape });
        }
        return Ok((out, bin));
    }
    Err(Error::file(
        dir,
        format!("no weights: expected {WEIGHTS_FILE}, {INDEX_FILE} or {PYTORCH_FILE}"),
    ))
}

/// The tensors named in `shapes` as variables on `device` (made from the values read, without
/// another copy). Errors name `path` and the tensor: one missing, of another shape, or in
/// `tensors` but not in `shapes`.
pub(crate) fn variables(
    mut tensors: HashMap<String, HostTensor>,
    shapes: Vec<(String, Vec<usize>)>,
    path: &Path,
    device: &Device,
) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, shape) in shapes {
            let t = tensors
                .remove(&name)
                .ok_or_else(|| Error::tensor(path, &name, "missing"))?;
            if t.shape != shape {
                let msg = format!("shape {:?}, expected {shape:?} from config.json", t.shape);
                return Err(Error::tensor(path, &name, msg));
            }
            let var = Var::from_vec(t.data, t.shape, device)
                .map_err(|e| Error::tensor(path, &name, e))?;
            data.insert(name, var);
        }
    }
    match tensors.keys().min() {
        Some(name) => Err(Error::tensor(
            path,
            name,
            "unexpected tensor for this config",
        )),
        None => Ok(varmap),
    }
}

/// Whether two tensors hold the same shape and values.
fn same(a: &HostTensor, b: &HostTensor) -> bool {
    a.shape == b.shape && a.data == b.data
}

impl MambaLM {
    /// Saves `dir/config.json` and `dir/model.safetensors` (creating `dir`), sharded past
    /// [`MAX_SHARD_BYTES`]. A tied LM head is, as with transformers' `save_pretrained`, not
    /// written; an untied one is `lm_head.weight`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_sharded(dir, MAX_SHARD_BYTES)
    }

    /// [`MambaLM::save`] with shards of at most `max_shard_bytes` of weights each.
    pub fn save_sharded(&self, dir: impl AsRef<Path>, max_shard_bytes: usize) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&hf_config(&self.cfg))
            .map_err(|e| Error::file(&cfg_path, e))?;
        std::fs::write(&cfg_path, text + "\n").map_err(|e| Error::io(&cfg_path, e))?;
        let mut named: Vec<(String, _)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (file_name(&self.cfg, &n), t))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        write_checkpoint_weights(dir, &named, max_shard_bytes)
    }

    /// Saves `dir/config.json` and `dir/pytorch_model.bin` in mamba_ssm's own layout (what its
    /// `MambaLMHeadModel.save_pretrained` writes and `from_pretrained` reads): its config keys,
    /// `backbone.embedding.weight`, and `lm_head.weight` always (the embedding when tied).
    pub fn save_mamba_ssm(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let cfg = super::config::mamba_ssm_config(&self.cfg)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::file(&cfg_path, e))?;
        let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
        std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let mut named: Vec<(String, candle_core::Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, t)| match n.as_str() {
                "backbone.embeddings.weight" => ("backbone.embedding.weight".to_string(), t),
                _ => (n, t),
            })
            .collect();
        if self.cfg.tie_embeddings {
            named.push((LM_HEAD.to_string(), self.head.clone()));
        }
        super::torch_save::save(&dir.join(PYTORCH_FILE), &named)
    }

    /// Loads a directory written by [`MambaLM::save`], transformers' `save_pretrained` (single
    /// or sharded, f32/f16/bf16) or mamba_ssm's `save_pretrained` (its config.json and
    /// pytorch_model.bin). Accepts `backbone.embedding.weight` for the embedding. The LM head is untied when
    /// config.json says `tie_word_embeddings: false` (then `lm_head.weight` is required) or
    /// when the file's `lm_head.weight` differs from the embedding, whatever config.json says
    /// (transformers keeps such a head too); an `lm_head.weight` equal to the embedding is a
    /// tied head. The parameters are `Var`s in the returned VarMap, ready to train.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<(MambaLM, VarMap)> {
        Self::load_with(dir.as_ref(), device, Load::Read)
    }

    /// [`MambaLM::load`] for runs that read the weights (generate, eval): f32 safetensors
    /// weights stay in a copy-on-write map of their file where [`super::mapped`] can, which
    /// loads them without a copy. Trainable all the same (a written page is copied then).
    pub fn load_mapped(dir: impl AsRef<Path>, device: &Device) -> Result<(MambaLM, VarMap)> {
        Self::load_with(dir.as_ref(), device, Load::Map)
    }

    /// [`MambaLM::load`] or [`MambaLM::load_mapped`], as `load` says.
    pub fn load_with(dir: &Path, device: &Device, load: Load) -> Result<(MambaLM, VarMap)> {
        let mut cfg = load_config(dir)?;
        let (mut tensors, path) = read_weights(dir, load)?;
        if cfg.family != crate::config::Family::Mamba {
            // A hybrid family's names become this tool's (one to one).
            for (name, _) in MambaLM::shapes(&cfg) {
                if let Some(t) = tensors.remove(&file_name(&cfg, &name)) {
                    tensors.insert(name, t);
                }
            }
        }
        if let Some(t) = tensors.remove("backbone.embedding.weight") {
            tensors
                .entry("backbone.embeddings.weight".into())
                .or_insert(t);
        }
        let head = tensors.remove(LM_HEAD);
        if let (Some(h), Some(e)) = (&head, tensors.get("backbone.embeddings.weight")) {
            cfg.tie_embeddings &= same(h, e);
        }
        if !cfg.tie_embeddings {
            let h = head.ok_or_else(|| {
                Error::tensor(
                    &path,
                    LM_HEAD,
                    "missing (config.json says tie_word_embeddings: false)",
                )
            })?;
            tensors.insert(LM_HEAD.into(), h);
        }
        let varmap = variables(tensors, MambaLM::shapes(&cfg), &path, device)?;
        let model = MambaLM::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((model, varmap))
    }
}
