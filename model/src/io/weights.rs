//! Saving and loading a checkpoint directory in the layout of transformers'
//! `MambaForCausalLM` (`config.json` + `model.safetensors`, or shards with an index), and
//! loading the layouts people publish besides: f16/bf16 weights, and mamba_ssm's own
//! `config.json` + `pytorch_model.bin`.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::config::{hf_config, load_config, CONFIG_FILE};
use super::safetensors::{read_safetensors, write_safetensors};
use crate::error::{Error, Result};
use crate::model::{MambaLM, LM_HEAD};

/// The weights of a checkpoint directory (f32 safetensors, transformers names).
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Whether two tensors hold the same shape and values.
fn same(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.dims() != b.dims() {
        return Ok(false);
    }
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(diff == 0.0)
}

impl MambaLM {
    /// Saves `dir/model.safetensors` and `dir/config.json` (creating `dir`). A tied LM head is,
    /// as with transformers' `save_pretrained`, not written; an untied one is `lm_head.weight`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&hf_config(&self.cfg))
            .map_err(|e| Error::file(&cfg_path, e))?;
        std::fs::write(&cfg_path, text + "\n").map_err(|e| Error::io(&cfg_path, e))?;
        let mut named = self.named_tensors();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        write_safetensors(&dir.join(WEIGHTS_FILE), &named, &[])
    }

    /// Loads a directory written by [`MambaLM::save`] or transformers' `save_pretrained`.
    /// Accepts `backbone.embedding.weight` for the embedding. The LM head is untied when
    /// config.json says `tie_word_embeddings: false` (then `lm_head.weight` is required) or
    /// when the file's `lm_head.weight` differs from the embedding, whatever config.json says
    /// (transformers keeps such a head too); an `lm_head.weight` equal to the embedding is a
    /// tied head. The parameters are `Var`s in the returned VarMap, ready to train.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<(MambaLM, VarMap)> {
        let dir = dir.as_ref();
        let mut cfg = load_config(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let (mut tensors, _) = read_safetensors(&path, device)?;
        if let Some(t) = tensors.remove("backbone.embedding.weight") {
            tensors
                .entry("backbone.embeddings.weight".into())
                .or_insert(t);
        }
        let head = tensors.remove(LM_HEAD);
        if let (Some(h), Some(e)) = (&head, tensors.get("backbone.embeddings.weight")) {
            cfg.tie_embeddings &= same(h, e)?;
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
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            for (name, shape) in crate::model::MambaLM::shapes(&cfg) {
                let t = tensors
                    .remove(&name)
                    .ok_or_else(|| Error::tensor(&path, &name, "missing"))?;
                if t.dims() != shape.as_slice() {
                    return Err(Error::tensor(
                        &path,
                        &name,
                        format!(
                            "shape {:?}, expected {:?} from config.json",
                            t.dims(),
                            shape
                        ),
                    ));
                }
                let var = Var::from_tensor(&t).map_err(|e| Error::tensor(&path, &name, e))?;
                data.insert(name, var);
            }
        }
        if let Some(name) = tensors.keys().min() {
            return Err(Error::tensor(
                &path,
                name,
                "unexpected tensor for this config",
            ));
        }
        let model = MambaLM::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((model, varmap))
    }
}
