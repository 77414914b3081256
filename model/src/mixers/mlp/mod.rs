//! The feed-forward layer of the hybrid families, as each writes it ([`MlpKind`]):
//!
//! ```text
//! SwiGLU (Bamba)              down(silu(gate(h)) * up(h))
//! fused SwiGLU (Granite 4.0-H) gate, up = input_linear(h) (gate first); output_linear(...)
//! squared ReLU (Nemotron-H)   down(relu(up(h))^2)
//! ```
//!
//! Stateless: a position needs nothing of the ones before it.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::{Config, MlpKind};
use crate::error::Error;
use crate::layers::params::{Init, Param, Params};
use crate::lora::Lora;

pub(crate) mod step;

/// One MLP layer: its matrices in the order of [`table`], by name.
#[derive(Clone, Debug)]
pub struct Mlp {
    pub(crate) kind: MlpKind,
    pub(crate) hidden: usize,
    pub(crate) w: Params,
    /// Adapters on its projections (none unless training with LoRA).
    pub(crate) lora: Lora,
}

/// The projections LoRA adapts by default: none (the hybrids' adapters go on the mixers).
pub const LORA_TARGETS: &[&str] = &[];

/// The parameters of an MLP of `c`'s family: names (below the layer's prefix), shapes, inits.
pub fn table(c: &Config) -> Vec<Param> {
    let (d, f) = (c.d_model, c.mlp_hidden);
    let p = |name, shape: [usize; 2], init| Param {
        name,
        shape: shape.to_vec(),
        init,
    };
    match c.family.mlp() {
        MlpKind::SwiGlu => vec![
            p("gate_proj.weight", [f, d], Init::Linear),
            p("up_proj.weight", [f, d], Init::Linear),
            p("down_proj.weight", [d, f], Init::OutProj),
        ],
        MlpKind::SwiGluFused => vec![
            p("input_linear.weight", [2 * f, d], Init::Linear),
            p("output_linear.weight", [d, f], Init::OutProj),
        ],
        MlpKind::Relu2 => vec![
            p("up_proj.weight", [f, d], Init::Linear),
            p("down_proj.weight", [d, f], Init::OutProj),
        ],
    }
}

/// Values backward keeps per token: the residual, the norm output, the hidden
/// pre-activations and the activation.
pub fn activations_per_token(c: &Config) -> u64 {
    let f = c.mlp_hidden as u64;
    let pre = match c.family.mlp() {
        MlpKind::Relu2 => f,
        _ => 2 * f,
    };
    2 * c.d_model as u64 + 2 * pre + f
}

/// Its own sizes, for `model-info`.
pub fn describe(c: &Config) -> String {
    let act = match c.family.mlp() {
        MlpKind::Relu2 => "squared ReLU",
        _ => "SwiGLU",
    };
    format!("hidden {}  {act}", c.mlp_hidden)
}

/// An MLP needs a hidden width.
pub fn check(c: &Config) -> crate::error::Result<()> {
    match c.mlp_hidden {
        0 => Err(Error::Config("an MLP layer needs a hidden width".into())),
        _ => Ok(()),
    }
}

impl Mlp {
    /// Reads the parameters of [`table`] from `vb` (below the layer's prefix).
    pub fn new(cfg: &Config, vb: &VarBuilder) -> Result<Self> {
        Ok(Mlp {
            kind: cfg.family.mlp(),
            hidden: cfg.mlp_hidden,
            w: Params::read(table(cfg), vb)?,
            lora: Lora::default(),
        })
    }

    /// The parameters with their names, in the order of [`table`].
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        self.w.named()
    }

    /// The same layer with every parameter through `f`.
    pub fn map(&self, f: impl FnMut(&Tensor, Init) -> Result<Tensor>) -> Result<Mlp> {
        Ok(Mlp {
            w: self.w.map(f)?,
            ..self.clone()
        })
    }

    /// h: (.., d_model) normalised input -> (.., d_model), the projections in `dt`.
    pub fn forward(&self, h: &Tensor, dt: DType) -> Result<Tensor> {
        let proj = |i: usize, x: &Tensor| {
            let (name, w, _) = &self.w.0[i];
            self.lora.linear(crate::lora::module_of(name), x, w, dt)
        };
        let hidden = match self.kind {
            MlpKind::SwiGlu => (proj(0, h)?.silu()? * proj(1, h)?)?,
            MlpKind::SwiGluFused => {
                let both = proj(0, h)?;
                let gate = both.narrow(D::Minus1, 0, self.hidden)?;
                (gate.silu()? * both.narrow(D::Minus1, self.hidden, self.hidden)?)?
            }
            MlpKind::Relu2 => proj(0, h)?.relu()?.sqr()?,
        };
        proj(self.w.0.len() - 1, &hidden)
    }
}
