//! `config.json` of a checkpoint: transformers' `MambaConfig` and `Mamba2Config` (written and
//! read) and mamba_ssm's own `MambaConfig` dataclass (read).

use std::path::Path;

use serde_json::{json, Value};

use crate::config::{Arch, Config};
use crate::error::{Error, Result};

/// The configuration file of a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";

/// `o[k]` as a count: absent or null is `None`, anything but a non-negative integer an error.
pub(crate) fn uint(o: &Value, k: &str, path: &Path) -> Result<Option<usize>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
            Error::file(
                path,
                format!("`{k}` must be a non-negative integer, got {x}"),
            )
        }),
    }
}

/// `o[k]` as a dt rank: absent, null or `"auto"` is `None` (ceil(d_model / 16)).
fn rank(o: &Value, k: &str, path: &Path) -> Result<Option<usize>> {
    match o.get(k) {
        Some(Value::String(s)) if s == "auto" => Ok(None),
        _ => uint(o, k, path),
    }
}

/// `o[k]` as a count that must be there.
pub(crate) fn required(o: &Value, k: &str, path: &Path) -> Result<usize> {
    uint(o, k, path)?.ok_or_else(|| Error::file(path, format!("missing `{k}`")))
}

/// The `config.json` contents for transformers' `MambaConfig` or `Mamba2Config`, as `cfg.arch`
/// says. `vocab_size` is the padded vocabulary (the embedding's rows), as in the converted
/// state-spaces checkpoints; the unpadded size is kept in `unpadded_vocab_size` (an extra key
/// transformers keeps but ignores).
pub fn hf_config(cfg: &Config) -> Value {
    let (model_type, class) = cfg.arch.transformers_names();
    let mut v = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": cfg.padded_vocab(),
        "hidden_size": cfg.d_model,
        "state_size": cfg.d_state,
        "num_hidden_layers": cfg.n_layer,
        "layer_norm_epsilon": cfg.norm_eps,
        "expand": cfg.expand,
        "conv_kernel": cfg.d_conv,
        "use_bias": false,
        "use_conv_bias": true,
        "hidden_act": "silu",
        "residual_in_fp32": true,
        "tie_word_embeddings": cfg.tie_embeddings,
        // Only affects initialisation; `true` makes transformers rescale out_proj of *loaded*
        // weights in from_pretrained, so it is written as false.
        "rescale_prenorm_residual": false,
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float32",
        "pad_vocab_size_multiple": cfg.pad_vocab_size_multiple,
        "unpadded_vocab_size": cfg.vocab_size,
    });
    let limit = |x: f64| match x.is_finite() {
        true => json!(x),
        false => json!({"__float__": "Infinity"}),
    };
    let own = match cfg.arch {
        Arch::Mamba1 => json!({
            "intermediate_size": cfg.d_inner(),
            "time_step_rank": cfg.dt_rank(),
            "initializer_range": cfg.initializer_range,
            "time_step_scale": cfg.dt_scale,
            "time_step_min": cfg.dt_min,
            "time_step_max": cfg.dt_max,
            "time_step_floor": cfg.dt_init_floor,
            "time_step_init_scheme": "random",
            "use_cache": true,
            "use_mambapy": false,
        }),
        Arch::Mamba2 => json!({
            "head_dim": cfg.head_dim,
            "num_heads": cfg.n_heads(),
            "n_groups": cfg.n_groups,
            "time_step_min": cfg.dt_min,
            "time_step_max": cfg.dt_max,
            "time_step_floor": cfg.dt_init_floor,
            "initializer_range": cfg.initializer_range,
            "chunk_size": 256,
        }),
    };
    if let (Some(all), Value::Object(own)) = (v.as_object_mut(), own) {
        all.extend(own);
        // (0, inf) is every version's default: left out, since transformers 4.x reads back
        // neither infinity's JSON spelling of version 5 nor plain JSON's lack of one.
        if cfg.arch == Arch::Mamba2 && cfg.dt_limit != (0.0, f64::INFINITY) {
            let (lo, hi) = cfg.dt_limit;
            all.insert("time_step_limit".into(), json!([limit(lo), limit(hi)]));
        }
    }
    v
}

/// Parses a transformers `MambaConfig` or `Mamba2Config` JSON (ours or one written by
/// `save_pretrained`).
pub fn config_from_hf(v: &Value, path: &Path) -> Result<Config> {
    let bad = |m: String| Error::file(path, m);
    let get_usize = |k: &str| uint(v, k, path);
    let req = |k: &str| required(v, k, path);
    let get_f64 = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    let get_bool = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
    let arch = match v.get("model_type").and_then(|x| x.as_str()) {
        None => Arch::Mamba1,
        Some(mt) => Arch::from_model_type(mt).ok_or_else(|| {
            bad(format!(
                "model_type is `{mt}`, expected `mamba` or `mamba2`"
            ))
        })?,
    };
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
    let dt_rank = rank(v, "time_step_rank", path)?;
    // An explicit rank equal to the automatic one is stored as `auto`.
    let dt_rank = dt_rank.filter(|&r| r != d_model.div_ceil(16));
    let (vocab_size, pad) = match get_usize("unpadded_vocab_size")? {
        Some(u) => (u, get_usize("pad_vocab_size_multiple")?.unwrap_or(8)),
        None => (hf_vocab, 1),
    };
    let n_layer = req("num_hidden_layers")?;
    let base = Config::of(arch, d_model, n_layer, vocab_size);
    let cfg = Config {
        d_state: get_usize("state_size")?.unwrap_or(base.d_state),
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
        // transformers' MambaConfig ties by default, its Mamba2Config does not.
        tie_embeddings: get_bool("tie_word_embeddings", arch == Arch::Mamba1),
        head_dim: get_usize("head_dim")?.unwrap_or(base.head_dim),
        // transformers' Mamba2Config defaults to 8 groups (mamba_ssm's models have 1).
        n_groups: get_usize("n_groups")?.unwrap_or(match arch {
            Arch::Mamba1 => base.n_groups,
            Arch::Mamba2 => 8,
        }),
        dt_limit: time_step_limit(v.get("time_step_limit"), path)?,
        ..base
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
    if arch == Arch::Mamba2 {
        let heads = get_usize("num_heads")?.unwrap_or(cfg.n_heads());
        if cfg.head_dim == 0 || heads * cfg.head_dim != cfg.d_inner() {
            return Err(bad(format!(
                "num_heads {heads} x head_dim {} must be expand x hidden_size = {}",
                cfg.head_dim,
                cfg.d_inner()
            )));
        }
    }
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Mamba-2's time-step limit (lo, hi) from transformers' `time_step_limit` or mamba_ssm's
/// `dt_limit`: numbers, or `{"__float__": "Infinity"}` as transformers 5 writes infinity (4.x's
/// bare `Infinity` is made that by [`parse_json`]); absent is (0, inf).
fn time_step_limit(limits: Option<&Value>, path: &Path) -> Result<(f64, f64)> {
    let limit = |x: &Value| -> Option<f64> {
        x.as_f64()
            .or_else(|| match x.get("__float__").and_then(|f| f.as_str()) {
                Some("Infinity") => Some(f64::INFINITY),
                Some("-Infinity") => Some(f64::NEG_INFINITY),
                _ => None,
            })
    };
    match limits {
        None | Some(Value::Null) => Ok((0.0, f64::INFINITY)),
        Some(Value::Array(a)) if a.len() == 2 => match (limit(&a[0]), limit(&a[1])) {
            (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
            _ => Err(Error::file(path, "bad `time_step_limit`")),
        },
        Some(x) => Err(Error::file(
            path,
            format!("`time_step_limit` must be [low, high], got {x}"),
        )),
    }
}

/// Parses JSON as Python's `json` module writes it: the bare `Infinity`, `-Infinity` and `NaN`
/// it allows outside strings (transformers 4.x writes Mamba-2's `time_step_limit` so) become
/// `{"__float__": "Infinity"}` etc., the form transformers 5 writes.
fn parse_json(text: &str) -> serde_json::Result<Value> {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if c == '"' {
            in_string = true;
        } else if let Some(word) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| rest.starts_with(w))
        {
            out.push_str(&format!("{{\"__float__\": \"{word}\"}}"));
            rest = &rest[word.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out)
}

/// Reads `dir/config.json` in transformers' layout, or in mamba_ssm's (told apart by its
/// `d_model` key).
pub fn load_config(dir: &Path) -> Result<Config> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v = parse_json(&text).map_err(|e| Error::file(&path, e))?;
    if v.get("d_model").is_some() && v.get("hidden_size").is_none() {
        return config_from_mamba_ssm(&v, &path);
    }
    config_from_hf(&v, &path)
}

/// Parses mamba_ssm's `MambaConfig` (`d_model`, `n_layer`, `vocab_size` before padding,
/// `ssm_cfg`, `pad_vocab_size_multiple`, `tie_embeddings`, ...), as `MambaLMHeadModel` saves
/// it, with Mamba-1 or Mamba-2 layers (`ssm_cfg.layer`). Refuses what is not a language model
/// of the shape computed here: other layers, attention or MLP layers, LayerNorm, a Mamba-2
/// norm after the gate or an SSM narrower than the block.
pub fn config_from_mamba_ssm(v: &Value, path: &Path) -> Result<Config> {
    let bad = |m: String| Error::file(path, m);
    let num = |o: &Value, k: &str| uint(o, k, path);
    let req = |k: &str| required(v, k, path);
    let ssm = v.get("ssm_cfg").cloned().unwrap_or(json!({}));
    let layer = ssm
        .get("layer")
        .and_then(|x| x.as_str())
        .unwrap_or("Mamba1");
    let arch = match layer {
        "Mamba1" => Arch::Mamba1,
        "Mamba2" => Arch::Mamba2,
        _ => {
            return Err(bad(format!(
                "ssm_cfg.layer `{layer}` is not supported (only Mamba1 and Mamba2)"
            )))
        }
    };
    if num(v, "d_intermediate")?.unwrap_or(0) != 0 {
        return Err(bad(
            "d_intermediate > 0 (MLP layers) is not supported".into()
        ));
    }
    if v.get("attn_layer_idx")
        .and_then(|x| x.as_array())
        .is_some_and(|a| !a.is_empty())
    {
        return Err(bad(
            "attention layers (attn_layer_idx) are not supported".into()
        ));
    }
    let flag = |o: &Value, k: &str, d: bool| o.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
    if !flag(v, "rms_norm", true) {
        return Err(bad("rms_norm = false (LayerNorm) is not supported".into()));
    }
    if flag(&ssm, "bias", false) || !flag(&ssm, "conv_bias", true) {
        return Err(bad(
            "ssm_cfg bias = true or conv_bias = false is not supported".into(),
        ));
    }
    if !flag(&ssm, "rmsnorm", true)
        || flag(&ssm, "norm_before_gate", false)
        || flag(&ssm, "D_has_hdim", false)
    {
        return Err(bad(
            "ssm_cfg rmsnorm = false, norm_before_gate = true or D_has_hdim = true is not supported"
                .into(),
        ));
    }
    let f = |k: &str, d: f64| ssm.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    let d_model = req("d_model")?;
    let dt_rank = rank(&ssm, "dt_rank", path)?;
    let base = Config::of(arch, d_model, req("n_layer")?, req("vocab_size")?);
    let cfg = Config {
        d_state: num(&ssm, "d_state")?.unwrap_or(base.d_state),
        d_conv: num(&ssm, "d_conv")?.unwrap_or(4),
        expand: num(&ssm, "expand")?.unwrap_or(2),
        dt_rank: dt_rank.filter(|&r| r != d_model.div_ceil(16)),
        pad_vocab_size_multiple: num(v, "pad_vocab_size_multiple")?.unwrap_or(8),
        norm_eps: v
            .get("norm_epsilon")
            .and_then(|x| x.as_f64())
            .unwrap_or(1e-5),
        dt_min: f("dt_min", 1e-3),
        dt_max: f("dt_max", 0.1),
        dt_init_floor: f("dt_init_floor", 1e-4),
        dt_scale: f("dt_scale", 1.0),
        tie_embeddings: flag(v, "tie_embeddings", true),
        head_dim: num(&ssm, "headdim")?.unwrap_or(base.head_dim),
        n_groups: num(&ssm, "ngroups")?.unwrap_or(base.n_groups),
        dt_limit: time_step_limit(ssm.get("dt_limit"), path)?,
        ..base
    };
    if let Some(d_ssm) = num(&ssm, "d_ssm")? {
        if d_ssm != cfg.d_inner() {
            return Err(bad(format!(
                "ssm_cfg.d_ssm {d_ssm} (an SSM on part of the channels) is not supported; it must be d_inner {}",
                cfg.d_inner()
            )));
        }
    }
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}
