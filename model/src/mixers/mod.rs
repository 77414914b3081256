//! The layer kinds, a module each: [`mamba1`] (the selective SSM, Gu & Dao 2023),
//! [`mamba2`] (the SSD, Dao & Gu 2024), and the hybrids' [`attention`] and [`mlp`]. Each owns its parameters by name (one table), its
//! recurrent state's shapes, what backward keeps per token, its transformers config fields,
//! its forward, its recurrent step and its CPU fast step. This file lists them: [`Mixer`] is
//! one enum over the kinds with one `match` per method, and [`LayerKind`]'s methods here say
//! what each kind says of itself. A new kind is one more module and one more arm in each.

pub mod attention;
pub mod mamba1;
pub mod mamba2;
pub mod mamba3;
pub mod mlp;
pub mod state;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::config::{Config, LayerKind};
use crate::kernels::rows::FastMixer;
use crate::layers::params::{Init, Param};
use crate::lora::Lora;
pub use attention::Attention;
pub use mamba1::Mamba1;
pub use mamba2::Mamba2;
pub use mamba3::Mamba3;
pub use mlp::Mlp;
pub use state::MixerState;

/// The mixer of one layer, of its kind.
#[derive(Clone, Debug)]
pub enum Mixer {
    Mamba1(Mamba1),
    Mamba2(Mamba2),
    Mamba3(Mamba3),
    Attention(Attention),
    Mlp(Mlp),
}

/// Calls the same method on whichever mixer it is.
macro_rules! each {
    ($m:expr, $x:ident => $e:expr) => {
        match $m {
            Mixer::Mamba1($x) => $e,
            Mixer::Mamba2($x) => $e,
            Mixer::Mamba3($x) => $e,
            Mixer::Attention($x) => $e,
            Mixer::Mlp($x) => $e,
        }
    };
}

impl Mixer {
    /// Reads a mixer of `kind` from `vb` (below `...mixer.`).
    pub fn new(kind: LayerKind, cfg: &Config, vb: &VarBuilder) -> Result<Mixer> {
        Ok(match kind {
            LayerKind::Mamba1 => Mixer::Mamba1(Mamba1::new(cfg, vb)?),
            LayerKind::Mamba2 => Mixer::Mamba2(Mamba2::new(cfg, vb)?),
            LayerKind::Mamba3 => Mixer::Mamba3(Mamba3::new(cfg, vb)?),
            LayerKind::Attention => Mixer::Attention(Attention::new(cfg, vb)?),
            LayerKind::Mlp => Mixer::Mlp(Mlp::new(cfg, vb)?),
        })
    }

    /// The parameters with their names (below `...mixer.`), in the order of the kind's table.
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        match self {
            Mixer::Mamba1(m) => m.p.named(),
            Mixer::Mamba2(m) => m.p.named(),
            Mixer::Mamba3(m) => m.named(),
            Mixer::Attention(m) => m.p.named(),
            Mixer::Mlp(m) => m.named(),
        }
    }

    /// The same parameters with adapters on its projections (see [`crate::lora`]).
    pub fn with_lora(&self, lora: Lora) -> Mixer {
        let mut m = self.clone();
        each!(&mut m, m => m.lora = lora);
        m
    }

    /// The same mixer with every parameter through `f`, which is told how the parameter is
    /// initialised (and so whether it is a matrix).
    pub fn map(&self, f: impl FnMut(&Tensor, Init) -> Result<Tensor>) -> Result<Mixer> {
        Ok(match self {
            Mixer::Mamba1(m) => Mixer::Mamba1(m.map(f)?),
            Mixer::Mamba2(m) => Mixer::Mamba2(m.map(f)?),
            Mixer::Mamba3(m) => Mixer::Mamba3(m.map(f)?),
            Mixer::Attention(m) => Mixer::Attention(m.map(f)?),
            Mixer::Mlp(m) => Mixer::Mlp(m.map(f)?),
        })
    }

    /// The same parameters (no copy) as plain tensors, outside any autograd graph.
    pub fn detach(&self) -> Mixer {
        self.map(|t, _| Ok(t.detach()))
            .expect("detaching a tensor cannot fail")
    }

    /// The mixer with its projections held in `dtype` (see
    /// [`MambaLM::into_weight_dtype`](crate::model::MambaLM::into_weight_dtype)), the rest detached.
    /// Consumes the mixer: this layer's f32 projections live until the end of the call, one
    /// layer's worth, not the model's.
    pub fn into_weight_dtype(self, dtype: DType) -> Result<Mixer> {
        self.map(|t, init| match init.is_matrix() {
            true => Ok(t.detach().to_dtype(dtype)?.detach()),
            false => Ok(t.detach()),
        })
    }

    /// h: (b, l, d_model) normalised input -> (b, l, d_model); `resets` (b, l) u8, nonzero at
    /// document starts; the projections run in `dt`.
    pub fn forward(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        match self {
            Mixer::Mlp(m) => m.forward(h, dt),
            Mixer::Mamba1(m) => m.forward(h, resets, dt),
            Mixer::Mamba2(m) => m.forward(h, resets, dt),
            Mixer::Mamba3(m) => m.forward(h, resets, dt),
            Mixer::Attention(m) => m.forward(h, resets, dt),
        }
    }

    /// The f32 forward of a prompt without resets and the state after its last position.
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        match self {
            Mixer::Mlp(m) => {
                let none = Tensor::zeros((h.dim(0)?, 0), DType::F32, h.device())?;
                let state = MixerState {
                    conv: none.clone(),
                    ssm: none,
                };
                Ok((m.forward(h, DType::F32)?, state))
            }
            Mixer::Mamba1(m) => m.prefill(h),
            Mixer::Mamba2(m) => m.prefill(h),
            Mixer::Mamba3(m) => m.prefill(h),
            Mixer::Attention(m) => m.prefill(h),
        }
    }

    /// One position in recurrent form: h (b, d_model) -> (b, d_model); `st` advances.
    pub fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        match self {
            Mixer::Mlp(m) => m.forward(h, DType::F32),
            Mixer::Mamba1(m) => m.step(h, st),
            Mixer::Mamba2(m) => m.step(h, st),
            Mixer::Mamba3(m) => m.step(h, st),
            Mixer::Attention(m) => m.step(h, st),
        }
    }

    /// The parameters under llama.cpp's names (below `blk.N.`) and in its shapes.
    pub fn gguf_tensors(&self) -> Result<Vec<(&'static str, Tensor)>> {
        match self {
            Mixer::Mamba1(m) => m.gguf_tensors(),
            Mixer::Mamba2(m) => m.gguf_tensors(),
            _ => {
                candle_core::bail!("llama.cpp export of attention and MLP layers is not supported")
            }
        }
    }

    /// The kind's CPU fast step over this mixer's weights (8-bit copies of its projections
    /// with `int8`).
    pub(crate) fn fast_step(&self, int8: bool) -> Result<Box<dyn FastMixer>> {
        Ok(match self {
            Mixer::Mamba1(m) => Box::new(mamba1::step::Step::new(m, int8)?),
            Mixer::Mamba2(m) => Box::new(mamba2::step::Step::new(m, int8)?),
            Mixer::Attention(m) => Box::new(attention::step::Step::new(m, int8)?),
            Mixer::Mlp(m) => Box::new(mlp::step::Step::new(m, int8)?),
            Mixer::Mamba3(m) => Box::new(mamba3::step::Step::new(m, int8)?),
        })
    }
}

impl LayerKind {
    /// The parameters of a mixer of this kind: names (below `...mixer.`), shapes, inits.
    pub fn table(self, cfg: &Config) -> Vec<Param> {
        match self {
            LayerKind::Mamba1 => mamba1::Params::table(cfg),
            LayerKind::Mamba2 => mamba2::Params::table(cfg),
            LayerKind::Mamba3 => mamba3::table(cfg),
            LayerKind::Attention => attention::Params::table(cfg),
            LayerKind::Mlp => mlp::table(cfg),
        }
    }

    /// One sequence's recurrent state: the conv window's and the SSM state's shapes.
    pub fn state_shapes(self, cfg: &Config) -> (Vec<usize>, Vec<usize>) {
        match self {
            LayerKind::Mamba1 => mamba1::state_shapes(cfg),
            LayerKind::Mamba2 => mamba2::state_shapes(cfg),
            LayerKind::Mamba3 => mamba3::state_shapes(cfg),
            LayerKind::Attention => attention::state_shapes(cfg),
            LayerKind::Mlp => (vec![0], vec![0]),
        }
    }

    /// Values backward keeps per token in one layer of this kind at context `seq_len`;
    /// `chunked`: the GPU's form of the SSM where it differs.
    pub fn activations_per_token(self, cfg: &Config, chunked: bool, seq_len: usize) -> u64 {
        match self {
            LayerKind::Mamba1 => mamba1::activations_per_token(cfg),
            LayerKind::Mamba2 => mamba2::activations_per_token(cfg, chunked),
            LayerKind::Mamba3 => mamba3::activations_per_token(cfg),
            LayerKind::Attention => attention::activations_per_token(cfg, seq_len),
            LayerKind::Mlp => mlp::activations_per_token(cfg),
        }
    }

    /// Bytes per token one layer of this kind keeps until the end of backward on the path a
    /// GPU computes (see [`crate::layers::recompute`]), beyond what every block keeps
    /// ([`crate::model::block_kept_per_token`]); `e`: bytes of a compute-dtype element.
    /// Kinds without a recomputed part keep their [`LayerKind::activations_per_token`].
    pub fn gpu_kept_per_token(self, cfg: &Config, e: u64, seq_len: usize) -> u64 {
        match self {
            LayerKind::Mamba1 => mamba1::gpu_kept_per_token(cfg, e),
            LayerKind::Mamba2 => mamba2::gpu_kept_per_token(cfg, e),
            _ => e * self.activations_per_token(cfg, true, seq_len),
        }
    }

    /// Bytes per token that this kind's recomputed part holds while its backward runs (its
    /// separate ops' outputs and their gradients; measured by the memory tests), 0 for kinds
    /// without one.
    pub fn gpu_part_per_token(self, cfg: &Config) -> u64 {
        match self {
            LayerKind::Mamba1 => mamba1::gpu_part_per_token(cfg),
            LayerKind::Mamba2 => mamba2::gpu_part_per_token(cfg),
            _ => 0,
        }
    }

    /// transformers' `model_type` and class of a model whose layers are all of this kind.
    pub fn transformers_names(self) -> (&'static str, &'static str) {
        match self {
            LayerKind::Mamba1 => mamba1::TRANSFORMERS,
            LayerKind::Mamba2 => mamba2::TRANSFORMERS,
            LayerKind::Mamba3 => mamba3::TRANSFORMERS,
            LayerKind::Attention | LayerKind::Mlp => crate::io::config::MIXED,
        }
    }

    /// The kind whose models transformers calls `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<LayerKind> {
        LayerKind::ALL
            .into_iter()
            .find(|k| k.transformers_names().0 == model_type)
    }

    /// What transformers' config class of this kind assumes when a field is absent:
    /// (tie_word_embeddings, n_groups).
    pub fn hf_defaults(self) -> (bool, usize) {
        match self {
            LayerKind::Mamba1 => mamba1::HF_DEFAULTS,
            LayerKind::Mamba2 | LayerKind::Attention | LayerKind::Mlp => mamba2::HF_DEFAULTS,
            LayerKind::Mamba3 => mamba3::HF_DEFAULTS,
        }
    }

    /// Checks the fields of a transformers config `v` that only this kind reads against the
    /// config made of it.
    pub fn check_hf(self, v: &Value, cfg: &Config) -> std::result::Result<(), String> {
        match self {
            LayerKind::Mamba2 => mamba2::check_hf(v, cfg),
            _ => Ok(()),
        }
    }

    /// mamba_ssm's `ssm_cfg` of a layer of this kind, if mamba_ssm has the kind.
    pub fn ssm_cfg(self, cfg: &Config) -> Option<Value> {
        match self {
            LayerKind::Mamba1 => Some(mamba1::ssm_cfg(cfg)),
            LayerKind::Mamba2 => Some(mamba2::ssm_cfg(cfg)),
            LayerKind::Mamba3 => Some(mamba3::ssm_cfg(cfg)),
            LayerKind::Attention | LayerKind::Mlp => None,
        }
    }

    /// Reads the fields of a config `v` that only this kind has into `cfg` (`mamba_ssm`: `v`
    /// is mamba_ssm's `ssm_cfg`, else a transformers-style config.json).
    pub fn read_own_fields(
        self,
        v: &Value,
        cfg: &mut Config,
        mamba_ssm: bool,
    ) -> std::result::Result<(), String> {
        match self {
            LayerKind::Mamba3 => mamba3::read_fields(v, cfg, mamba_ssm),
            _ => Ok(()),
        }
    }

    /// Whether a layer of this kind has the causal conv (and so `d_conv` means something).
    pub fn has_conv(self) -> bool {
        matches!(self, LayerKind::Mamba1 | LayerKind::Mamba2)
    }

    /// The fields of transformers' config that only this kind has.
    pub fn hf_fields(self, cfg: &Config) -> Value {
        match self {
            LayerKind::Mamba1 => mamba1::hf_fields(cfg),
            LayerKind::Mamba2 => mamba2::hf_fields(cfg),
            LayerKind::Mamba3 => mamba3::hf_fields(cfg),
            LayerKind::Attention | LayerKind::Mlp => Value::Object(Default::default()),
        }
    }

    /// The projections LoRA adapts by default: those PEFT and transformers apply as this tool
    /// does (PEFT refuses out_proj of Mamba models; transformers' Mamba-1 multiplies by
    /// dt_proj's weight itself, bypassing an adapter there).
    pub fn lora_targets(self) -> &'static [&'static str] {
        match self {
            LayerKind::Mamba1 => mamba1::LORA_TARGETS,
            LayerKind::Mamba2 => mamba2::LORA_TARGETS,
            LayerKind::Mamba3 => mamba3::LORA_TARGETS,
            LayerKind::Attention => attention::LORA_TARGETS,
            LayerKind::Mlp => mlp::LORA_TARGETS,
        }
    }

    /// Its own sizes, for `model-info`.
    pub fn describe(self, cfg: &Config) -> String {
        match self {
            LayerKind::Mamba1 => mamba1::describe(cfg),
            LayerKind::Mamba2 => mamba2::describe(cfg),
            LayerKind::Mamba3 => mamba3::describe(cfg),
            LayerKind::Attention => attention::describe(cfg),
            LayerKind::Mlp => mlp::describe(cfg),
        }
    }

    /// llama.cpp's architecture of a model whose layers are all of this kind.
    pub fn gguf_arch(self) -> &'static str {
        match self {
            LayerKind::Mamba1 => mamba1::GGUF_ARCH,
            LayerKind::Mamba2 | LayerKind::Mamba3 | LayerKind::Attention | LayerKind::Mlp => {
                mamba2::GGUF_ARCH
            }
        }
    }

    /// What llama.cpp cannot compute as this model does, if anything.
    pub fn gguf_limits(self, cfg: &Config) -> std::result::Result<(), String> {
        match self {
            LayerKind::Mamba1 => mamba1::gguf_limits(cfg),
            LayerKind::Mamba2 => mamba2::gguf_limits(cfg),
            LayerKind::Attention | LayerKind::Mlp => {
                Err("llama.cpp export of hybrid models is not supported yet".into())
            }
            LayerKind::Mamba3 => Err("llama.cpp has no Mamba-3 architecture yet".into()),
        }
    }

    /// The sizes llama.cpp reads as `{arch}.ssm.*`.
    pub fn gguf_sizes(self, cfg: &Config) -> Vec<(&'static str, usize)> {
        match self {
            LayerKind::Mamba1 => mamba1::gguf_sizes(cfg),
            LayerKind::Mamba2 => mamba2::gguf_sizes(cfg),
            LayerKind::Mamba3 | LayerKind::Attention | LayerKind::Mlp => vec![],
        }
    }

    /// Checks the sizes only this kind has.
    pub fn check(self, cfg: &Config) -> crate::error::Result<()> {
        match self {
            LayerKind::Mamba1 => Ok(()),
            LayerKind::Mamba2 => mamba2::check(cfg),
            LayerKind::Mamba3 => mamba3::check(cfg),
            LayerKind::Attention => attention::check(cfg),
            LayerKind::Mlp => mlp::check(cfg),
        }
    }
}

/// Checks a whole config: its shared sizes and each kind's own.
pub fn check(cfg: &Config) -> crate::error::Result<()> {
    cfg.validate()?;
    cfg.layers.iter().try_for_each(|k| k.check(cfg))
}
