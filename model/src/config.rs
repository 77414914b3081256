//! Model configuration (serde) and size presets.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The one table of size presets, shared with the trainer (which reads each preset's `train`
/// defaults) and the command line (which lists the names).
const PRESETS_JSON: &str = include_str!("../../configs/models.json");

/// A size preset of `configs/models.json`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Preset {
    #[serde(skip)]
    pub name: String,
    pub d_model: usize,
    pub n_layer: usize,
    /// Training defaults of the preset (e.g. `seq_len`): a layer of the trainer's settings.
    #[serde(default)]
    pub train: Map<String, Value>,
}

/// Every preset, smallest first. Keys starting with `_` are comments.
pub static PRESETS: LazyLock<Vec<Preset>> = LazyLock::new(|| {
    let table: Map<String, Value> = serde_json::from_str(PRESETS_JSON).unwrap_or_default();
    let mut out: Vec<Preset> = table
        .into_iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .filter_map(|(name, v)| {
            let p: Preset = serde_json::from_value(v).ok()?;
            Some(Preset { name, ..p })
        })
        .collect();
    out.sort_by_key(|p| (p.d_model * p.d_model * p.n_layer, p.name.clone()));
    out
});

/// The preset names, smallest first.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name.as_str()).collect()
}

impl Preset {
    /// The preset called `name`; the error lists the valid names.
    pub fn named(name: &str) -> Result<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
            Error::Config(format!(
                "unknown model size `{name}` (valid: {})",
                preset_names().join(", ")
            ))
        })
    }
}

/// The architecture a [`Config`] describes: what the model crate computes and what
/// `config.json`'s `model_type` names. The two differ only in the mixer of a block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Gu & Dao 2023: the selective SSM (transformers `MambaForCausalLM`).
    #[default]
    Mamba1,
    /// Dao & Gu 2024: the state-space dual, SSD (transformers `Mamba2ForCausalLM`).
    Mamba2,
}

impl Arch {
    /// transformers' `model_type` and class of this architecture.
    pub fn transformers_names(self) -> (&'static str, &'static str) {
        match self {
            Arch::Mamba1 => ("mamba", "MambaForCausalLM"),
            Arch::Mamba2 => ("mamba2", "Mamba2ForCausalLM"),
        }
    }

    /// The architecture of a transformers `model_type`, if it is one we compute.
    pub fn from_model_type(model_type: &str) -> Option<Arch> {
        match model_type {
            "mamba" => Some(Arch::Mamba1),
            "mamba2" => Some(Arch::Mamba2),
            _ => None,
        }
    }

    /// Its name in the papers.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mamba1 => "Mamba-1",
            Arch::Mamba2 => "Mamba-2",
        }
    }

    /// Its name on the command line and in `--arch`.
    pub fn key(self) -> &'static str {
        match self {
            Arch::Mamba1 => "mamba1",
            Arch::Mamba2 => "mamba2",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Arch, String> {
        match s {
            "mamba1" => Ok(Arch::Mamba1),
            "mamba2" => Ok(Arch::Mamba2),
            _ => Err(format!(
                "unknown architecture `{s}` (valid: mamba1, mamba2)"
            )),
        }
    }
}

/// Hyper-parameters of a Mamba language model: Mamba-1 (`MambaLMHeadModel` /
/// `MambaForCausalLM`) or Mamba-2 (`Mamba2ForCausalLM`), as `arch` says. The `dt_*`,
/// `initializer_range` and `rescale_prenorm_residual` fields only affect initialisation;
/// `dt_rank` is Mamba-1's, `head_dim`, `n_groups` and `dt_limit` Mamba-2's.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The architecture: which mixer every block has.
    pub arch: Arch,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of Mamba blocks.
    pub n_layer: usize,
    /// Vocabulary size of the tokenizer (unpadded). The embedding has [`Config::padded_vocab`] rows.
    pub vocab_size: usize,
    /// SSM state size N: 4, 8, 16, 32, 64 or 128 (the sizes the scan kernels are compiled for;
    /// Mamba-1 models use 16, Mamba-2 models 128).
    pub d_state: usize,
    /// Width of the causal depthwise convolution.
    pub d_conv: usize,
    /// d_inner = expand * d_model.
    pub expand: usize,
    /// Rank of the dt projection; `None` means `ceil(d_model / 16)`.
    pub dt_rank: Option<usize>,
    /// The embedding / LM head are padded to a multiple of this (mamba_ssm uses 8).
    pub pad_vocab_size_multiple: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// Initialisation: dt drawn log-uniform in [dt_min, dt_max], floored at dt_init_floor.
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// Initialisation: dt_proj weight is uniform in +-dt_scale * dt_rank^-0.5.
    pub dt_scale: f64,
    /// Initialisation: std of the embedding.
    pub initializer_range: f64,
    /// Initialisation: rescale out_proj by 1/sqrt(n_layer).
    pub rescale_prenorm_residual: bool,
    /// The LM head is the embedding (mamba_ssm's models); `false`: its own `lm_head.weight`.
    pub tie_embeddings: bool,
    /// Mamba-2: channels per head P; H = d_inner / P heads.
    pub head_dim: usize,
    /// Mamba-2: groups G of heads sharing B and C.
    pub n_groups: usize,
    /// Mamba-2: dt is clamped to this range after the softplus.
    pub dt_limit: (f64, f64),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            arch: Arch::Mamba1,
            d_model: 768,
            n_layer: 24,
            vocab_size: 50257,
            d_state: 16,
            d_conv: 4,
            expand: 2,
            dt_rank: None,
            pad_vocab_size_multiple: 8,
            norm_eps: 1e-5,
            dt_min: 1e-3,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            dt_scale: 1.0,
            initializer_range: 0.02,
            rescale_prenorm_residual: true,
            tie_embeddings: true,
            head_dim: 64,
            n_groups: 1,
            dt_limit: (0.0, f64::INFINITY),
        }
    }
}

impl Config {
    /// A Mamba-1 config with the given width, depth and (unpadded) vocabulary, everything else
    /// default.
    pub fn new(d_model: usize, n_layer: usize, vocab_size: usize) -> Self {
        Config::of(Arch::Mamba1, d_model, n_layer, vocab_size)
    }

    /// A config of `arch` with the given width, depth and (unpadded) vocabulary, everything else
    /// as the released models of that architecture have it (Mamba-2: d_state 128, head_dim 64,
    /// one group, tied head).
    pub fn of(arch: Arch, d_model: usize, n_layer: usize, vocab_size: usize) -> Self {
        let cfg = Config {
            arch,
            d_model,
            n_layer,
            vocab_size,
            ..Default::default()
        };
        match arch {
            Arch::Mamba1 => cfg,
            Arch::Mamba2 => Config {
                d_state: 128,
                ..cfg
            },
        }
    }

    /// The Mamba-1 preset `name` of `configs/models.json` (e.g. `tiny`, d 64, 2 layers, for
    /// tests; `130m`, the shape of state-spaces/mamba-130m) with a vocabulary of `vocab`.
    pub fn preset(name: &str, vocab: usize) -> Result<Config> {
        Config::arch_preset(Arch::Mamba1, name, vocab)
    }

    /// The preset `name` for `arch` (the presets give width and depth; see [`Config::of`]).
    pub fn arch_preset(arch: Arch, name: &str, vocab: usize) -> Result<Config> {
        let p = Preset::named(name)?;
        let cfg = Config::of(arch, p.d_model, p.n_layer, vocab);
        cfg.validate()?;
        Ok(cfg)
    }

    /// d_inner = expand * d_model.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    /// Mamba-2: number of heads H.
    pub fn n_heads(&self) -> usize {
        self.d_inner() / self.head_dim.max(1)
    }

    /// Channels of the causal conv: x (Mamba-1), or x, B and C (Mamba-2).
    pub fn conv_dim(&self) -> usize {
        match self.arch {
            Arch::Mamba1 => self.d_inner(),
            Arch::Mamba2 => self.d_inner() + 2 * self.n_groups * self.d_state,
        }
    }

    /// dt_rank, resolving `auto` to ceil(d_model / 16).
    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.d_model.div_ceil(16))
    }

    /// Number of rows of the embedding / logits: vocab_size rounded up to pad_vocab_size_multiple.
    pub fn padded_vocab(&self) -> usize {
        let m = self.pad_vocab_size_multiple.max(1);
        self.vocab_size.div_ceil(m) * m
    }

    /// Checks that the sizes are usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.d_model == 0 || self.n_layer == 0 || self.vocab_size == 0 || self.expand == 0 {
            return bad(format!(
                "d_model ({}), n_layer ({}), vocab_size ({}) and expand ({}) must be positive",
                self.d_model, self.n_layer, self.vocab_size, self.expand
            ));
        }
        let supported = crate::kernels::scan::SUPPORTED_D_STATE;
        if !supported.contains(&self.d_state) {
            return bad(format!(
                "d_state {} not supported (use one of {supported:?})",
                self.d_state
            ));
        }
        if self.arch == Arch::Mamba2 {
            let (p, g) = (self.head_dim, self.n_groups);
            if p == 0 || !self.d_inner().is_multiple_of(p) {
                return bad(format!(
                    "head_dim {p} must divide d_inner {}",
                    self.d_inner()
                ));
            }
            if g == 0 || !self.n_heads().is_multiple_of(g) {
                return bad(format!(
                    "n_groups {g} must divide the {} heads",
                    self.n_heads()
                ));
            }
        }
        if self.d_conv == 0 {
            return bad("d_conv must be positive".into());
        }
        if self.dt_rank() == 0 {
            return bad("dt_rank must be positive".into());
        }
        if self.vocab_size > u32::MAX as usize {
            return bad(format!(
                "vocab_size {} does not fit token ids in u32",
                self.vocab_size
            ));
        }
        Ok(())
    }

    /// Total number of parameters (the LM head is tied to the embedding and not counted twice).
    pub fn num_params(&self) -> usize {
        crate::model::MambaLM::shapes(self)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_of_the_table_is_read() {
        let names = preset_names();
        assert_eq!(
            names,
            ["tiny", "small", "medium", "130m", "large", "370m", "780m"]
        );
        let p = Preset::named("130m").unwrap();
        assert_eq!((p.d_model, p.n_layer), (768, 24));
        assert_eq!(p.train["seq_len"], 2048);
        for n in names {
            Config::preset(n, 100).unwrap();
            Config::arch_preset(Arch::Mamba2, n, 100).unwrap();
        }
    }
}
