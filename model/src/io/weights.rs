//! Saving and loading in the layout of transformers' `MambaForCausalLM`: a directory with
//! `model.safetensors` (transformers tensor names, f32) and a `config.json` that
//! `transformers.MambaConfig` accepts.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{MambaLM, LM_HEAD};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// The `config.json` contents for transformers' `MambaConfig`. `vocab_size` is the padded
/// vocabulary (the embedding's rows), as in the converted state-spaces checkpoints; the unpadded
/// size is kept in `unpadded_vocab_size` (an extra key transformers keeps but ignores).
pub fn hf_config(cfg: &Config) -> Value {
    json!({
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "vocab_size": cfg.padded_vocab(),
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_inner(),
        "state_size": cfg.d_state,
        "num_hidden_layers": cfg.n_layer,
        "layer_norm_epsilon": cfg.norm_eps,
        "expand": cfg.expand,
        "conv_kernel": cfg.d_conv,
        "time_step_rank": cfg.dt_rank(),
        "use_bias": false,
        "use_conv_bias": true,
        "hidden_act": "silu",
        "residual_in_fp32": true,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": cfg.initializer_range,
        "time_step_scale": cfg.dt_scale,
        "time_step_min": cfg.dt_min,
        "time_step_max": cfg.dt_max,
        "time_step_floor": cfg.dt_init_floor,
        "time_step_init_scheme": "random",
        // Only affects initialisation; `true` makes transformers rescale out_proj of *loaded*
        // weights in from_pretrained, so it is written as false.
        "rescale_prenorm_residual": false,
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "use_cache": true,
        "use_mambapy": false,
        "torch_dtype": "float32",
        "pad_vocab_size_multiple": cfg.pad_vocab_size_multiple,
        "unpadded_vocab_size": cfg.vocab_size,
    })
}

/// Parses a transformers `MambaConfig` JSON (ours or one written by `save_pretrained`).
pub fn config_from_hf(v: &Value, path: &Path) -> Result<Config> {
    let bad = |m: String| Error::file(path, m);
    let get_usize = |k: &str| -> Result<Option<usize>> {
        match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| bad(format!("`{k}` must be a non-negative integer, got {x}"))),
        }
    };
    let req =
        |k: &str| -> Result<usize> { get_usize(k)?.ok_or_else(|| bad(format!("missing `{k}`"))) };
    let get_f64 = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    let get_bool = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
    if let Some(mt) = v.get("model_type").and_then(|x| x.as_str()) {
        if mt != "mamba" {
            return Err(bad(format!("model_type is `{mt}`, expected `mamba`")));
        }
    }
    if get_bool("use_bias", false) {
        return Err(bad("use_bias = true is not supported".into()));
    }
    if !get_bool("use_conv_bias", true) {
        return Err(bad("use_conv_bias = false is not supported".into()));
    }
    if let Some(act) = v.get("hidden_act").and_then(|x| x.as_str()) {
        if act != "silu" {
            return Err(bad(format!(
                "hidden_act `{act}` is not supported (only silu)"
            )));
        }
    }
    let d_model = req("hidden_size")?;
    let hf_vocab = req("vocab_size")?;
    let expand = get_usize("expand")?.unwrap_or(2);
    let dt_rank = match v.get("time_step_rank") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(x) => Some(
            x.as_u64()
                .ok_or_else(|| bad(format!("bad `time_step_rank` {x}")))? as usize,
        ),
    };
    // An explicit rank equal to the automatic one is stored as `auto`.
    let dt_rank = dt_rank.filter(|&r| r != d_model.div_ceil(16));
    let (vocab_size, pad) = match get_usize("unpadded_vocab_size")? {
        Some(u) => (u, get_usize("pad_vocab_size_multiple")?.unwrap_or(8)),
        None => (hf_vocab, 1),
    };
    let cfg = Config {
        d_model,
        n_layer: req("num_hidden_layers")?,
        vocab_size,
        d_state: get_usize("state_size")?.unwrap_or(16),
        d_conv: get_usize("conv_kernel")?.unwrap_or(4),
        expand,
        dt_rank,
        pad_vocab_size_multiple: pad,
        norm_eps: get_f64("layer_norm_epsilon", 1e-5),
        dt_min: get_f64("time_step_min", 1e-3),
        dt_max: get_f64("time_step_max", 0.1),
        dt_init_floor: get_f64("time_step_floor", 1e-4),
        dt_scale: get_f64("time_step_scale", 1.0),
        // transformers' initializer_range means something else (its own init); ours is only
        // read back from files we wrote.
        initializer_range: if v.get("unpadded_vocab_size").is_some() {
            get_f64("initializer_range", 0.02)
        } else {
            Config::default().initializer_range
        },
        rescale_prenorm_residual: true,
        tie_embeddings: get_bool("tie_word_embeddings", true),
    };
    if cfg.padded_vocab() != hf_vocab {
        return Err(bad(format!(
            "vocab_size {hf_vocab} disagrees with unpadded_vocab_size {} padded to a multiple of {}",
            cfg.vocab_size, cfg.pad_vocab_size_multiple
        )));
    }
    if let Some(di) = get_usize("intermediate_size")? {
        if di != cfg.d_inner() {
            return Err(bad(format!(
                "intermediate_size {di} != expand {} * hidden_size {d_model}",
                cfg.expand
            )));
        }
    }
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Reads `dir/config.json`.
pub fn load_config(dir: &Path) -> Result<Config> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
    config_from_hf(&v, &path)
}

/// Whether two tensors hold the same shape and values.
fn same(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.dims() != b.dims() {
        return Ok(false);
    }
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(diff == 0.0)
}

/// Writes named f32 tensors to a safetensors file with `{"format": "pt"}` metadata (what
/// transformers expects). The bytes depend only on the names and values.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    extra_metadata: &[(String, String)],
) -> Result<()> {
    let mut bufs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_device(&Device::Cpu)?;
        let v = t.to_vec1::<f32>()?;
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        bufs.push((name.clone(), tensors_shape(tensors, name), bytes));
    }
    let views = bufs
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::tensor(path, n, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), "pt".into());
    for (k, v) in extra_metadata {
        meta.insert(k.clone(), v.clone());
    }
    let bytes =
        safetensors::tensor::serialize(views, Some(meta)).map_err(|e| Error::file(path, e))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn tensors_shape(tensors: &[(String, Tensor)], name: &str) -> Vec<usize> {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.dims().to_vec())
        .unwrap_or_default()
}

/// Reads every tensor of a safetensors file as f32 on `device` (f16/bf16/f64 are converted).
pub fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::file(path, e))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::file(path, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!("unsupported dtype {other:?}"),
                ))
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_device(device))
            .map_err(|e| Error::tensor(path, &name, e))?;
        out.insert(name, t);
    }
    Ok((out, meta))
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
