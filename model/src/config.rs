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

/// The kind of one layer: which mixer it has. Defined here with the facts that name it; what
/// each kind computes and says of itself is its module's, listed in [`crate::mixers`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Gu & Dao 2023: the selective SSM (transformers `MambaForCausalLM`).
    #[default]
    Mamba1,
    /// Dao & Gu 2024: the state-space dual, SSD (transformers `Mamba2ForCausalLM`).
    Mamba2,
    /// Lahoti, Gu, Dao et al. 2026: the trapezoidal, rotary, optionally MIMO SSM (mamba_ssm
    /// `Mamba3`, flash-linear-attention `Mamba3ForCausalLM`).
    Mamba3,
    /// Causal self-attention with grouped key/value heads, RoPE or none (the hybrids').
    Attention,
    /// The feed-forward layer of a hybrid family (see [`Family::mlp`]).
    Mlp,
}

impl LayerKind {
    /// Every Mamba kind, in the order `--arch` lists them (a whole model of one kind).
    pub const ALL: [LayerKind; 3] = [LayerKind::Mamba1, LayerKind::Mamba2, LayerKind::Mamba3];

    /// Its name in the papers.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Mamba1 => "Mamba-1",
            LayerKind::Mamba2 => "Mamba-2",
            LayerKind::Mamba3 => "Mamba-3",
            LayerKind::Attention => "attention",
            LayerKind::Mlp => "MLP",
        }
    }

    /// Its name on the command line (`--arch`), in configs and in mamba_ssm's `ssm_cfg.layer`
    /// (capitalised there).
    pub fn key(self) -> &'static str {
        match self {
            LayerKind::Mamba1 => "mamba1",
            LayerKind::Mamba2 => "mamba2",
            LayerKind::Mamba3 => "mamba3",
            LayerKind::Attention => "attention",
            LayerKind::Mlp => "mlp",
        }
    }

    /// d_state of the released models of this kind (Mamba-1 16, Mamba-2 128).
    pub fn released_d_state(self) -> usize {
        match self {
            LayerKind::Mamba1 => 16,
            _ => 128,
        }
    }

    /// A layer with a recurrent SSM state (not attention, not an MLP).
    pub fn is_mamba(self) -> bool {
        matches!(
            self,
            LayerKind::Mamba1 | LayerKind::Mamba2 | LayerKind::Mamba3
        )
    }
}

impl std::str::FromStr for LayerKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<LayerKind, String> {
        let keys: Vec<&str> = LayerKind::ALL.iter().map(|k| k.key()).collect();
        LayerKind::ALL
            .into_iter()
            .find(|k| k.key() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown architecture `{s}` (valid: {})", keys.join(", ")))
    }
}

/// Hyper-parameters of a Mamba language model: a stack of layers, each of its kind (Mamba-1,
/// `MambaLMHeadModel` / `MambaForCausalLM`; Mamba-2, `Mamba2ForCausalLM`; or a mix). The `dt_*`,
/// `initializer_range` and `rescale_prenorm_residual` fields only affect initialisation;
/// `dt_rank` is Mamba-1's, `head_dim`, `n_groups` and `dt_limit` Mamba-2's.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The kind of each layer, first to last: one residual block each.
    pub layers: Vec<LayerKind>,
    /// Width of the residual stream.
    pub d_model: usize,
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
    /// Mamba-3: MIMO's rank R (0: SISO), the fraction of the state rotated (0.5 or 1), the
    /// per-head norm before the gate, the floor of -A, and A's activation (see
    /// [`crate::mixers::mamba3`]).
    pub mimo_rank: usize,
    pub rope_fraction: f64,
    pub outproj_norm: bool,
    pub a_floor: f64,
    pub heavy_tail: bool,
    /// d_inner when it is not expand * d_model (Nemotron-H: Mamba heads x head_dim).
    pub inner: Option<usize>,
    /// Whose checkpoint layout and residual arithmetic the model follows.
    pub family: Family,
    /// A hybrid family's own config.json as read, written back as it was (the fields this
    /// tool does not compute with, e.g. token ids, stay the checkpoint's).
    pub family_json: Option<serde_json::Value>,
    /// Attention layers' sizes and position encoding.
    pub attn: AttnConfig,
    /// MLP layers: the hidden width (the activation is the family's, [`Family::mlp`]).
    pub mlp_hidden: usize,
    /// Granite: the embedding is multiplied by `embedding_multiplier`, every layer's output by
    /// `residual_multiplier` before the residual add, and the logits divided by
    /// `logits_scaling`; 1 in the other families.
    pub embedding_multiplier: f64,
    pub residual_multiplier: f64,
    pub logits_scaling: f64,
}

/// The checkpoint family a model is read from and written as: its names, its config.json and
/// the arithmetic around the layers. A hybrid family's decoder layer is here one layer of its
/// mixer (Mamba-2 or attention) and, where the family has one, one MLP layer after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Family {
    /// transformers `MambaForCausalLM` / `Mamba2ForCausalLM`, mamba_ssm `MambaLMHeadModel`.
    #[default]
    Mamba,
    /// IBM/Princeton Bamba (transformers `BambaForCausalLM`).
    Bamba,
    /// IBM Granite 4.0-H, dense (transformers `GraniteMoeHybridForCausalLM`).
    GraniteHybrid,
    /// NVIDIA Nemotron-H (transformers `NemotronHForCausalLM`): one mixer per layer.
    NemotronH,
}

/// The activation of a family's MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// down(silu(gate(x)) * up(x)), gate and up apart (Bamba).
    SwiGlu,
    /// The same with gate and up one matrix, gate first (Granite's `shared_mlp.input_linear`).
    SwiGluFused,
    /// down(relu(up(x))^2) (Nemotron-H).
    Relu2,
}

impl Family {
    /// Its name as its makers write it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Mamba => "Mamba",
            Family::Bamba => "Bamba",
            Family::GraniteHybrid => "Granite 4.0-H",
            Family::NemotronH => "Nemotron-H",
        }
    }

    /// Its MLP's activation and layout.
    pub fn mlp(self) -> MlpKind {
        match self {
            Family::GraniteHybrid => MlpKind::SwiGluFused,
            Family::NemotronH => MlpKind::Relu2,
            Family::Mamba | Family::Bamba => MlpKind::SwiGlu,
        }
    }
}

/// Attention layers: `heads` query heads and `kv_heads` key/value heads of `head_dim`
/// channels; RoPE of base `rope_theta` on the first `rotary_dim` channels of each head (none
/// when `rope_theta` is `None`); scores scaled by `scale` (1/sqrt(head_dim) when `None`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttnConfig {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: Option<f64>,
    pub rotary_dim: usize,
    pub scale: Option<f64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            layers: vec![LayerKind::Mamba1; 24],
            d_model: 768,
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
            mimo_rank: 0,
            rope_fraction: 0.5,
            outproj_norm: false,
            a_floor: 1e-4,
            heavy_tail: false,
            inner: None,
            family: Family::Mamba,
            family_json: None,
            attn: AttnConfig::default(),
            mlp_hidden: 0,
            embedding_multiplier: 1.0,
            residual_multiplier: 1.0,
            logits_scaling: 1.0,
        }
    }
}

impl Config {
    /// A Mamba-1 config with the given width, depth and (unpadded) vocabulary, everything else
    /// default.
    pub fn new(d_model: usize, n_layer: usize, vocab_size: usize) -> Self {
        Config::of(LayerKind::Mamba1, d_model, n_layer, vocab_size)
    }

    /// A config of `n_layer` layers of `kind` with the given width and (unpadded) vocabulary,
    /// everything else as the released models of that kind have it (Mamba-2: d_state 128,
    /// head_dim 64, one group, tied head).
    pub fn of(kind: LayerKind, d_model: usize, n_layer: usize, vocab_size: usize) -> Self {
        Config {
            layers: vec![kind; n_layer],
            d_model,
            vocab_size,
            d_state: kind.released_d_state(),
            ..Default::default()
        }
    }

    /// The Mamba-1 preset `name` of `configs/models.json` (e.g. `tiny`, d 64, 2 layers, for
    /// tests; `130m`, the shape of state-spaces/mamba-130m) with a vocabulary of `vocab`.
    pub fn preset(name: &str, vocab: usize) -> Result<Config> {
        Config::arch_preset(LayerKind::Mamba1, name, vocab)
    }

    /// The preset `name` with layers of `kind` (the presets give width and depth; see
    /// [`Config::of`]).
    pub fn arch_preset(kind: LayerKind, name: &str, vocab: usize) -> Result<Config> {
        let p = Preset::named(name)?;
        let cfg = Config::of(kind, p.d_model, p.n_layer, vocab);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Number of layers (residual blocks).
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// The kind of every layer, if they are all of one kind (every released checkpoint).
    pub fn kind(&self) -> Option<LayerKind> {
        let first = *self.layers.first()?;
        self.layers.iter().all(|&k| k == first).then_some(first)
    }

    /// The architecture in words: `Mamba-2`, `Mamba-1 + Mamba-2` for a model of both, a
    /// hybrid's family with its kinds (`Bamba (Mamba-2 + MLP + attention)`).
    pub fn arch_name(&self) -> String {
        let mut names: Vec<&str> = vec![];
        for k in &self.layers {
            if !names.contains(&k.name()) {
                names.push(k.name());
            }
        }
        match self.family {
            Family::Mamba => names.join(" + "),
            f => format!("{} ({})", f.name(), names.join(" + ")),
        }
    }

    /// d_inner = expand * d_model.
    pub fn d_inner(&self) -> usize {
        self.inner.unwrap_or(self.expand * self.d_model)
    }

    /// Mamba-2: number of heads H.
    pub fn n_heads(&self) -> usize {
        self.d_inner() / self.head_dim.max(1)
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

    /// Checks that the sizes every kind shares are usable (each kind's own:
    /// [`crate::mixers::check`]).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let n_layer = self.n_layer();
        if self.d_model == 0 || n_layer == 0 || self.vocab_size == 0 || self.expand == 0 {
            return bad(format!(
                "d_model ({}), n_layer ({n_layer}), vocab_size ({}) and expand ({}) must be positive",
                self.d_model, self.vocab_size, self.expand
            ));
        }
        let supported = crate::kernels::scan::SUPPORTED_D_STATE;
        if !supported.contains(&self.d_state) {
            return bad(format!(
                "d_state {} not supported (use one of {supported:?})",
                self.d_state
            ));
        }
        if self.d_conv == 0 {
            return bad("d_conv must be positive".into());
        }
        if self.mimo_rank > 0 && !self.layers.contains(&LayerKind::Mamba3) {
            return bad(format!(
                "MIMO rank {} is Mamba-3's: this model has no Mamba-3 layers (--arch mamba3)",
                self.mimo_rank
            ));
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
            Config::arch_preset(LayerKind::Mamba2, n, 100).unwrap();
        }
    }
}
