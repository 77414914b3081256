//! The shape of a Mamba-2 model, read from and written to transformers' `Mamba2Config` JSON.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::Error;
use crate::io::config::{required, uint};

/// The shape of a Mamba-2 language model (transformers' `Mamba2Config`).
#[derive(Clone, Debug, PartialEq)]
pub struct Mamba2Config {
    pub d_model: usize,
    pub n_layer: usize,
    /// Rows of the embedding.
    pub vocab_size: usize,
    /// N, the state size per head channel.
    pub d_state: usize,
    pub d_conv: usize,
    pub expand: usize,
    /// P, channels per head; H = expand * d_model / P heads.
    pub head_dim: usize,
    /// G, groups sharing B and C.
    pub n_groups: usize,
    pub norm_eps: f64,
    /// dt is clamped to this range after the softplus.
    pub dt_limit: (f64, f64),
    pub tie_embeddings: bool,
}

impl Mamba2Config {
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    pub fn n_heads(&self) -> usize {
        self.d_inner() / self.head_dim
    }

    /// Channels of the causal conv: x, B and C.
    pub fn conv_dim(&self) -> usize {
        self.d_inner() + 2 * self.n_groups * self.d_state
    }

    /// Parses transformers' `Mamba2Config` JSON; errors name the file and the key.
    pub fn from_hf(v: &Value, path: &Path) -> crate::Result<Self> {
        let bad = |m: String| Error::file(path, m);
        let uint = |k: &str, default: usize| -> crate::Result<usize> {
            Ok(uint(v, k, path)?.unwrap_or(default))
        };
        let req = |k: &str| required(v, k, path);
        let flag = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
        if v.get("model_type").and_then(|x| x.as_str()) != Some("mamba2") {
            return Err(bad("model_type is not `mamba2`".into()));
        }
        if flag("use_bias", false) || !flag("use_conv_bias", true) {
            return Err(bad(
                "use_bias = true or use_conv_bias = false is not supported".into(),
            ));
        }
        let limit = |x: &Value| -> Option<f64> {
            x.as_f64()
                .or_else(|| match x.get("__float__").and_then(|f| f.as_str()) {
                    Some("Infinity") => Some(f64::INFINITY),
                    _ => None,
                })
        };
        let dt_limit = match v.get("time_step_limit").and_then(|x| x.as_array()) {
            Some(a) if a.len() == 2 => match (limit(&a[0]), limit(&a[1])) {
                (Some(lo), Some(hi)) => (lo, hi),
                _ => return Err(bad("bad `time_step_limit`".into())),
            },
            _ => (0.0, f64::INFINITY),
        };
        let cfg = Mamba2Config {
            d_model: req("hidden_size")?,
            n_layer: req("num_hidden_layers")?,
            vocab_size: req("vocab_size")?,
            d_state: uint("state_size", 128)?,
            d_conv: uint("conv_kernel", 4)?,
            expand: uint("expand", 2)?,
            head_dim: uint("head_dim", 64)?,
            n_groups: uint("n_groups", 1)?,
            norm_eps: v
                .get("layer_norm_epsilon")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-5),
            dt_limit,
            tie_embeddings: flag("tie_word_embeddings", false),
        };
        let heads = uint("num_heads", cfg.n_heads())?;
        if cfg.head_dim == 0
            || !cfg.d_inner().is_multiple_of(cfg.head_dim)
            || heads != cfg.n_heads()
        {
            return Err(bad(format!(
                "num_heads {heads} x head_dim {} must be expand x hidden_size = {}",
                cfg.head_dim,
                cfg.d_inner()
            )));
        }
        if cfg.n_groups == 0 || !heads.is_multiple_of(cfg.n_groups) {
            return Err(bad(format!(
                "n_groups {} must divide num_heads {heads}",
                cfg.n_groups
            )));
        }
        Ok(cfg)
    }
}

impl Mamba2Config {
    /// transformers' `Mamba2Config` JSON of this shape (what `Mamba2ForCausalLM` loads).
    pub fn to_hf(&self) -> Value {
        let limit = |x: f64| match x.is_finite() {
            true => json!(x),
            false => json!({"__float__": "Infinity"}),
        };
        json!({
            "architectures": ["Mamba2ForCausalLM"],
            "model_type": "mamba2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layer,
            "state_size": self.d_state,
            "conv_kernel": self.d_conv,
            "expand": self.expand,
            "head_dim": self.head_dim,
            "num_heads": self.n_heads(),
            "n_groups": self.n_groups,
            "layer_norm_epsilon": self.norm_eps,
            "time_step_limit": [limit(self.dt_limit.0), limit(self.dt_limit.1)],
            "use_bias": false,
            "use_conv_bias": true,
            "hidden_act": "silu",
            "residual_in_fp32": true,
            "rescale_prenorm_residual": false,
            "tie_word_embeddings": self.tie_embeddings,
            "chunk_size": 256,
            "pad_token_id": 0,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "torch_dtype": "float32",
        })
    }
}
