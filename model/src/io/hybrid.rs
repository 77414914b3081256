//! Checkpoints of the hybrid families in transformers' layouts: IBM/Princeton Bamba
//! (`BambaForCausalLM`), IBM Granite 4.0-H dense (`GraniteMoeHybridForCausalLM`) and NVIDIA
//! Nemotron-H (`NemotronHForCausalLM`). Their config.json is read into a [`Config`] of layer
//! kinds (a Bamba or Granite decoder layer is two layers here: its mixer, then its MLP) and
//! kept to be written back as it was; their tensor names map one to one onto the names of
//! [`MambaLM::params`](crate::model::MambaLM::params).

use std::path::Path;

use serde_json::{json, Value};

use super::config::{required, time_step_limit, uint};
use crate::config::{AttnConfig, Config, Family, LayerKind};
use crate::error::{Error, Result};

/// transformers' `model_type`, class and the family, of each family read here.
pub const FAMILIES: [(&str, &str, Family); 3] = [
    ("bamba", "BambaForCausalLM", Family::Bamba),
    (
        "granitemoehybrid",
        "GraniteMoeHybridForCausalLM",
        Family::GraniteHybrid,
    ),
    ("nemotron_h", "NemotronHForCausalLM", Family::NemotronH),
];

/// Hybrid families not computed here, by `model_type`, with what they have that is not.
const REFUSED: [(&str, &str); 4] = [
    (
        "falcon_h1",
        "Falcon-H1 runs attention and Mamba side by side in each layer with muP multipliers",
    ),
    ("zamba2", "Zamba2 shares one attention block across layers"),
    ("zamba", "Zamba shares one attention block across layers"),
    ("jamba", "Jamba has mixture-of-experts layers"),
];

/// The family whose config `v` is, if a hybrid one.
pub fn family_of(v: &Value) -> Option<Family> {
    let mt = v.get("model_type")?.as_str()?;
    FAMILIES.iter().find(|f| f.0 == mt).map(|f| f.2)
}

/// Why a hybrid of `model_type` is refused, if it is one of those.
pub fn refused(model_type: &str) -> Option<String> {
    REFUSED.iter().find(|r| r.0 == model_type).map(|r| {
        format!(
            "model_type `{model_type}` is not supported: {}; Bamba, Granite 4.0-H (dense) and Nemotron-H load",
            r.1
        )
    })
}

/// A layer's kind from its name in `layer_types` / `layers_block_type` (the names of
/// transformers 5 and the ones before).
fn kind_named(name: &str) -> std::result::Result<LayerKind, String> {
    match name {
        "linear_attention" | "mamba" | "mamba2" => Ok(LayerKind::Mamba2),
        "full_attention" | "attention" => Ok(LayerKind::Attention),
        "mlp" => Ok(LayerKind::Mlp),
        "moe" => Err("mixture-of-experts (moe) layers are not supported".into()),
        other => Err(format!("layer type `{other}` is not supported")),
    }
}

/// The layer kinds of a config of `family`, a hybrid decoder layer as its mixer and its MLP.
fn layer_kinds(v: &Value, family: Family, path: &Path) -> Result<Vec<LayerKind>> {
    let bad = |m: String| Error::file(path, m);
    let names = |k: &str| -> Option<Vec<String>> {
        let list = v.get(k)?.as_array()?;
        Some(
            list.iter()
                .map(|x| x.as_str().unwrap_or("?").to_string())
                .collect(),
        )
    };
    let mixers: Vec<String> = match family {
        Family::Bamba => {
            let n = required(v, "num_hidden_layers", path)?;
            let attn: Vec<u64> = v
                .get("attn_layer_indices")
                .and_then(|a| a.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default();
            (0..n as u64)
                .map(|i| match attn.contains(&i) {
                    true => "attention".into(),
                    false => "mamba".into(),
                })
                .collect()
        }
        Family::GraniteHybrid => {
            names("layer_types").ok_or_else(|| bad("missing `layer_types`".into()))?
        }
        _ => match names("layers_block_type").or_else(|| names("layer_types")) {
            Some(n) => n,
            None => {
                let pattern = v.get("hybrid_override_pattern").and_then(|p| p.as_str());
                let pattern = pattern.ok_or_else(|| {
                    bad("missing `layers_block_type` or `hybrid_override_pattern`".into())
                })?;
                pattern
                    .chars()
                    .map(|c| match c {
                        'M' => "mamba".to_string(),
                        '*' => "attention".into(),
                        '-' => "mlp".into(),
                        'E' => "moe".into(),
                        other => other.to_string(),
                    })
                    .collect()
            }
        },
    };
    let mut kinds = Vec::new();
    for (i, name) in mixers.iter().enumerate() {
        let kind = kind_named(name).map_err(|e| bad(format!("layer {i}: {e}")))?;
        kinds.push(kind);
        if family != Family::NemotronH {
            kinds.push(LayerKind::Mlp);
        }
    }
    Ok(kinds)
}

/// Reads a config.json of a hybrid `family` (as `save_pretrained` writes it, or as the
/// released checkpoints have it).
pub fn config_from_family(v: &Value, family: Family, path: &Path) -> Result<Config> {
    let bad = |m: String| Error::file(path, m);
    let num = |k: &str| uint(v, k, path);
    let req = |k: &str| required(v, k, path);
    let f64_or = |k: &str, d: f64| v.get(k).and_then(|x| x.as_f64()).unwrap_or(d);
    let flag = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
    let text = |k: &str| v.get(k).and_then(|x| x.as_str());
    if num("num_local_experts")?.unwrap_or(0) > 0 {
        return Err(bad(
            "mixture-of-experts layers (num_local_experts > 0, as in granite-4.0-h-tiny and -small) are not supported; the dense -h-micro, -h-1b and -h-350m load".into(),
        ));
    }
    for k in ["attention_bias", "mlp_bias", "mamba_proj_bias", "use_bias"] {
        if flag(k, false) {
            return Err(bad(format!("`{k}` = true is not supported")));
        }
    }
    if !flag("mamba_conv_bias", true) || !flag("use_conv_bias", true) {
        return Err(bad("a Mamba conv without bias is not supported".into()));
    }
    let nemotron = family == Family::NemotronH;
    let (act_key, act) = match nemotron {
        true => ("mlp_hidden_act", "relu2"),
        false => ("hidden_act", "silu"),
    };
    if let Some(a) = text(act_key).filter(|a| *a != act) {
        return Err(bad(format!(
            "`{act_key}` `{a}` is not supported (only {act})"
        )));
    }
    let d_model = req("hidden_size")?;
    let vocab = req("vocab_size")?;
    let layers = layer_kinds(v, family, path)?;
    let heads = req("num_attention_heads")?;
    let head_dim = num("head_dim")?.unwrap_or(d_model / heads.max(1));
    let rope = rope(v, family, head_dim, path)?;
    let mamba = |new: &str, old: &str| -> Result<Option<usize>> { Ok(num(new)?.or(num(old)?)) };
    let expand = mamba("mamba_expand", "expand")?.unwrap_or(2);
    let (m_heads, m_head_dim) = match nemotron {
        true => (num("mamba_num_heads")?, num("mamba_head_dim")?),
        false => (num("mamba_n_heads")?, num("mamba_d_head")?),
    };
    let m_heads = m_heads.ok_or_else(|| bad("missing the number of Mamba heads".into()))?;
    // Bamba and Granite say "auto" for expand x hidden_size / heads.
    let m_head_dim = m_head_dim.unwrap_or(expand * d_model / m_heads.max(1));
    let inner = m_heads * m_head_dim;
    let cfg = Config {
        layers,
        d_model,
        vocab_size: vocab,
        pad_vocab_size_multiple: 1,
        d_state: mamba("mamba_d_state", "ssm_state_size")?.unwrap_or(128),
        d_conv: mamba("mamba_d_conv", "conv_kernel")?.unwrap_or(4),
        expand,
        inner: (inner != expand * d_model).then_some(inner),
        head_dim: m_head_dim,
        n_groups: mamba("mamba_n_groups", "n_groups")?.unwrap_or(1),
        dt_limit: time_step_limit(v.get("time_step_limit"), path)?,
        norm_eps: match nemotron {
            true => f64_or("layer_norm_epsilon", 1e-5),
            false => f64_or("rms_norm_eps", 1e-5),
        },
        tie_embeddings: flag("tie_word_embeddings", false),
        rescale_prenorm_residual: false,
        family,
        family_json: Some(v.clone()),
        attn: AttnConfig {
            heads,
            kv_heads: num("num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            rope_theta: rope.map(|r| r.0),
            rotary_dim: rope.map_or(0, |r| r.1),
            scale: match family {
                Family::GraniteHybrid => Some(f64_or("attention_multiplier", 1.0)),
                _ => None,
            },
        },
        mlp_hidden: match family {
            Family::GraniteHybrid => req("shared_intermediate_size")?,
            _ => req("intermediate_size")?,
        },
        embedding_multiplier: f64_or("embedding_multiplier", 1.0),
        residual_multiplier: f64_or("residual_multiplier", 1.0),
        logits_scaling: f64_or("logits_scaling", 1.0),
        ..Config::default()
    };
    crate::mixers::check(&cfg).map_err(|e| bad(e.to_string()))?;
    Ok(cfg)
}

/// RoPE's (theta, rotary channels) of a family's attention, or none: Bamba rotates half of
/// each head (transformers fixes its partial_rotary_factor at 0.5), Granite 4.0-H only with
/// `position_embedding_type: rope`, Nemotron-H never.
fn rope(v: &Value, family: Family, head_dim: usize, path: &Path) -> Result<Option<(f64, usize)>> {
    let params = v.get("rope_parameters").or(v.get("rope_scaling"));
    let get = |k: &str| {
        params
            .and_then(|p| p.get(k))
            .or(v.get(k))
            .and_then(|x| x.as_f64())
    };
    let factor = match family {
        Family::Bamba => 0.5,
        Family::GraniteHybrid
            if v.get("position_embedding_type").and_then(|p| p.as_str()) == Some("rope") =>
        {
            get("partial_rotary_factor").unwrap_or(1.0)
        }
        _ => return Ok(None),
    };
    let kind = params
        .and_then(|p| p.get("rope_type"))
        .and_then(|t| t.as_str());
    if let Some(t) = kind.filter(|t| *t != "default") {
        return Err(Error::file(
            path,
            format!("rope_type `{t}` is not supported (only default)"),
        ));
    }
    let dim = (head_dim as f64 * factor) as usize;
    Ok(Some((get("rope_theta").unwrap_or(10000.0), dim)))
}

/// The config.json of a hybrid model: the one it was read from, its dtype now float32 (how
/// this tool saves).
pub fn family_config(cfg: &Config) -> Value {
    let mut v = cfg.family_json.clone().unwrap_or_else(|| json!({}));
    if let Some(o) = v.as_object_mut() {
        o.remove("torch_dtype");
        o.insert("dtype".into(), json!("float32"));
        o.insert("tie_word_embeddings".into(), json!(cfg.tie_embeddings));
    }
    v
}

/// The family's name of the parameter this tool calls `name` (see
/// [`MambaLM::params`](crate::model::MambaLM::params)).
pub fn file_name(cfg: &Config, name: &str) -> String {
    let (model, final_norm, ff_norm, ff) = match cfg.family {
        Family::Mamba | Family::NemotronH => return name.to_string(),
        Family::Bamba => (
            "model",
            "final_layernorm",
            "pre_ff_layernorm",
            "feed_forward",
        ),
        Family::GraniteHybrid => ("model", "norm", "post_attention_layernorm", "shared_mlp"),
    };
    match name {
        "backbone.embeddings.weight" => return format!("{model}.embed_tokens.weight"),
        "backbone.norm_f.weight" => return format!("{model}.{final_norm}.weight"),
        _ => {}
    }
    let Some(rest) = name.strip_prefix("backbone.layers.") else {
        return name.to_string();
    };
    let Some((j, rest)) = rest.split_once('.') else {
        return name.to_string();
    };
    let Ok(j) = j.parse::<usize>() else {
        return name.to_string();
    };
    let i = j / 2;
    let part = match (j % 2, rest.strip_prefix("mixer.")) {
        (0, None) => format!("input_layernorm.{}", rest.trim_start_matches("norm.")),
        (_, None) => format!("{ff_norm}.{}", rest.trim_start_matches("norm.")),
        (0, Some(p)) => match cfg.layers.get(j) {
            Some(LayerKind::Attention) => format!("self_attn.{p}"),
            _ => format!("mamba.{p}"),
        },
        (_, Some(p)) => format!("{ff}.{p}"),
    };
    format!("{model}.layers.{i}.{part}")
}
