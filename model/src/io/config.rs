//! `config.json` of a checkpoint: transformers' `MambaConfig` and `Mamba2Config` (written and
//! read) and mamba_ssm's own `MambaConfig` dataclass (read).

use std::path::Path;

use serde_json::{json, Value};

use crate::config::{Config, LayerKind};
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

/// The `config.json` contents for transformers' `MambaConfig` or `Mamba2Config`, as the
/// layers' kind says. `vocab_size` is the padded vocabulary (the embedding's rows), as in the
/// converted state-spaces checkpoints; the unpadded size is kept in `unpadded_vocab_size` (an
/// extra key transformers keeps but ignores). A model of several kinds, which no transformers
/// class computes, is written as `model_type` [`MIXED`] with the kind of each layer in
/// `layer_types` and every kind's fields: it loads here, and transformers refuses it by name.
pub fn hf_config(cfg: &Config) -> Value {
    if cfg.family != crate::config::Family::Mamba {
        return super::hybrid::family_config(cfg);
    }
    let (model_type, class) = match cfg.kind() {
        Some(kind) => kind.transformers_names(),
        None => MIXED,
    };
    let mut v = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": cfg.padded_vocab(),
        "hidden_size": cfg.d_model,
        "state_size": cfg.d_state,
        "num_hidden_layers": cfg.n_layer(),
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
    let Some(all) = v.as_object_mut() else {
        return v;
    };
    for kind in LayerKind::ALL
        .into_iter()
        .filter(|k| cfg.layers.contains(k))
    {
        if let Value::Object(own) = kind.hf_fields(cfg) {
            all.extend(own);
        }
    }
    if cfg.kind().is_none() {
        let kinds: Vec<&str> = cfg.layers.iter().map(|k| k.key()).collect();
        all.insert("layer_types".into(), json!(kinds));
    }
    v
}

/// mamba_ssm's `config.json` (its `MambaConfig`) of a model whose layers are all of one kind
/// mamba_ssm has.
pub fn mamba_ssm_config(cfg: &Config) -> Result<Value> {
    let ssm = cfg
        .kind()
        .filter(|_| cfg.family == crate::config::Family::Mamba)
        .and_then(|k| k.ssm_cfg(cfg))
        .ok_or_else(|| {
            Error::Config(format!(
                "mamba_ssm's layout holds models of Mamba-1, Mamba-2 or Mamba-3 layers, not {}",
                cfg.arch_name()
            ))
        })?;
    // MambaConfig has no field for it: its blocks use 1e-5.
    if cfg.norm_eps != 1e-5 {
        return Err(Error::Config(format!(
            "mamba_ssm's layout has no RMSNorm epsilon (its models use 1e-5); this model's is {}",
            cfg.norm_eps
        )));
    }
    Ok(json!({
        "d_model": cfg.d_model,
        "d_intermediate": 0,
        "n_layer": cfg.n_layer(),
        "vocab_size": cfg.vocab_size,
        "ssm_cfg": ssm,
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": true,
        "residual_in_fp32": true,
        "fused_add_norm": true,
        "pad_vocab_size_multiple": cfg.pad_vocab_size_multiple,
        "tie_embeddings": cfg.tie_embeddings,
    }))
}

/// `model_type` and class of a model whose layers are of several kinds.
pub const MIXED: (&str, &str) = ("mamba_mixed", "MambaMixedForCausalLM");

/// The layers' kinds of a transformers config: `layer_types` (a model of several kinds), else
/// every layer of the kind its `model_type` names.
fn layer_kinds(v: &Value, n_layer: usize, path: &Path) -> Result<Vec<LayerKind>> {
    let bad = |m: String| Error::file(path, m);
    if let Some(types) = v.get("layer_types").and_then(|t| t.as_array()) {
        let kinds = types
            .iter()
            .map(|t| t.as_str().unwrap_or("").parse::<LayerKind>())
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| bad(format!("layer_types: {e}")))?;
        if kinds.len() != n_layer {
            return Err(bad(format!(
                "layer_types lists {} layers, num_hidden_layers is {n_layer}",
                kinds.len()
            )));
        }
        return Ok(kinds);
    }
    let kind = match v.get("model_type").and_then(|x| x.as_str()) {
        None => LayerKind::Mamba1,
        Some(mt) => LayerKind::from_model_type(mt).ok_or_else(|| {
            if let Some(why) = super::hybrid::refused(mt) {
                return bad(why);
            }
            let known: Vec<&str> = LayerKind::ALL
                .iter()
                .map(|k| k.transformers_names().0)
                .chain(super::hybrid::FAMILIES.iter().map(|f| f.0))
                .collect();
            bad(format!(
                "model_type is `{mt}`, expected one of {}",
                known.join(", ")
            ))
        })?,
    };
    Ok(vec![kind; n_layer])
}

/// Parses a transformers `MambaConfig` or `Mamba2Config` JSON (ours or one written by
/// `save_pretrained`).
pub fn config_from_hf(v: &Value, path: &Path) -> Result<Config> {
    let bad = |m: String| Error::file(path, m);
    let get_usize = |k: &str| uint(v, k, path);
    let req = |k: &str| required(v, k, path);
    let get_f64 = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    let get_bool = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
    let layers = layer_kinds(v, req("num_hidden_layers")?, path)?;
    // The defaults of transformers' config class: the first layer's kind's (an empty model is
    // refused by the checks below).
    let first = layers.first().copied().unwrap_or_default();
    let (ties, groups) = first.hf_defaults();
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
    let base = Config {
        layers,
        ..Config::of(first, d_model, 0, vocab_size)
    };
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
        tie_embeddings: get_bool("tie_word_embeddings", ties),
        head_dim: get_usize("head_dim")?.unwrap_or(base.head_dim),
        n_groups: get_usize("n_groups")?.unwrap_or(groups),
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
    for kind in &cfg.layers {
        kind.check_hf(v, &cfg).map_err(bad)?;
    }
    let mut cfg = cfg;
    let kinds: Vec<LayerKind> = LayerKind::ALL
        .into_iter()
        .filter(|k| cfg.layers.contains(k))
        .collect();
    for kind in kinds {
        kind.read_own_fields(v, &mut cfg, false).map_err(bad)?;
    }
    crate::mixers::check(&cfg).map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// Mamba-2's time-step limit (lo, hi) from transformers' `time_step_limit` or mamba_ssm's
/// `dt_limit`: numbers, or `{"__float__": "Infinity"}` as transformers 5 writes infinity (4.x's
/// bare `Infinity` is made that by [`parse_json`]); absent is (0, inf).
pub(crate) fn time_step_limit(limits: Option<&Value>, path: &Path) -> Result<(f64, f64)> {
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
    if let Some(family) = super::hybrid::family_of(&v) {
        return super::hybrid::config_from_family(&v, family, &path);
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
    let kind: LayerKind = layer.parse().map_err(|_| {
        bad(format!(
            "ssm_cfg.layer `{layer}` is not supported (only Mamba1, Mamba2 and Mamba3)"
        ))
    })?;
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
    let base = Config::of(kind, d_model, req("n_layer")?, req("vocab_size")?);
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
    let mut cfg = cfg;
    kind.read_own_fields(&ssm, &mut cfg, true).map_err(bad)?;
    if let Some(d_ssm) = num(&ssm, "d_ssm")? {
        if d_ssm != cfg.d_inner() {
            return Err(bad(format!(
                "ssm_cfg.d_ssm {d_ssm} (an SSM on part of the channels) is not supported; it must be d_inner {}",
                cfg.d_inner()
            )));
        }
    }
    crate::mixers::check(&cfg).map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}
