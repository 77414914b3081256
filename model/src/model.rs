//! The language model: embedding -> n_layer x (RMSNorm -> mixer -> residual add) -> RMSNorm ->
//! LM head tied to the embedding (transformers `MambaForCausalLM`, mamba_ssm `MambaLMHeadModel`).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::config::Config;
use crate::conv::ConvMask;
use crate::mixer::Mixer;
use crate::norm::rms_norm;
use crate::ops::linear;

/// One residual block.
#[derive(Clone, Debug)]
pub struct Block {
    pub norm: Tensor,
    pub mixer: Mixer,
}

/// A Mamba-1 language model with f32 parameters.
#[derive(Clone, Debug)]
pub struct MambaLM {
    pub(crate) cfg: Config,
    /// (padded_vocab, d_model); also the LM head.
    pub embedding: Tensor,
    pub layers: Vec<Block>,
    pub norm_f: Tensor,
}

impl MambaLM {
    /// Builds the model from a VarBuilder using transformers' tensor names
    /// (`backbone.embeddings.weight`, `backbone.layers.N.mixer.in_proj.weight`, ...).
    /// With a VarMap-backed builder, use [`MambaLM::init`] to get mamba_ssm's initialisation.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let bb = vb.pp("backbone");
        let embedding = bb.get((cfg.padded_vocab(), cfg.d_model), "embeddings.weight")?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let lv = bb.pp(format!("layers.{i}"));
            layers.push(Block {
                norm: lv.get(cfg.d_model, "norm.weight")?,
                mixer: Mixer::new(cfg, lv.pp("mixer"))?,
            });
        }
        let norm_f = bb.get(cfg.d_model, "norm_f.weight")?;
        Ok(MambaLM {
            cfg: cfg.clone(),
            embedding,
            layers,
            norm_f,
        })
    }

    /// A freshly initialised, trainable model (mamba_ssm's initialisation, see [`crate::init`]),
    /// deterministic for a given `seed`. The returned VarMap holds every parameter as a `Var`
    /// under its transformers name.
    pub fn init(cfg: &Config, seed: u64, device: &Device) -> Result<(Self, VarMap)> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            for (name, shape) in crate::info::param_shapes(cfg) {
                let v = crate::init::init_values(cfg, &name, &shape, seed);
                let t = Tensor::from_vec(v, shape, device)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let model = MambaLM::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((model, varmap))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embedding.device()
    }

    /// Every parameter with its transformers name, in a fixed order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![(
            "backbone.embeddings.weight".to_string(),
            self.embedding.clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("backbone.layers.{i}");
            let m = &l.mixer;
            v.push((format!("{p}.norm.weight"), l.norm.clone()));
            v.push((format!("{p}.mixer.in_proj.weight"), m.in_proj.clone()));
            v.push((format!("{p}.mixer.conv1d.weight"), m.conv_w.clone()));
            v.push((format!("{p}.mixer.conv1d.bias"), m.conv_b.clone()));
            v.push((format!("{p}.mixer.x_proj.weight"), m.x_proj.clone()));
            v.push((format!("{p}.mixer.dt_proj.weight"), m.dt_proj_w.clone()));
            v.push((format!("{p}.mixer.dt_proj.bias"), m.dt_proj_b.clone()));
            v.push((format!("{p}.mixer.A_log"), m.a_log.clone()));
            v.push((format!("{p}.mixer.D"), m.d.clone()));
            v.push((format!("{p}.mixer.out_proj.weight"), m.out_proj.clone()));
        }
        v.push(("backbone.norm_f.weight".to_string(), self.norm_f.clone()));
        v
    }

    /// Final hidden states (after norm_f), (b, l, d_model).
    pub fn forward_hidden(&self, input_ids: &Tensor, resets: Option<&Tensor>) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        let d = self.cfg.d_model;
        let ids = input_ids.flatten_all()?;
        let mut residual = self.embedding.index_select(&ids, 0)?.reshape((b, l, d))?;
        let resets = match resets {
            Some(r) => {
                if r.dims() != [b, l] {
                    candle_core::bail!(
                        "resets has shape {:?}, expected {:?} like input_ids",
                        r.dims(),
                        [b, l]
                    )
                }
                Some(r.ne(0f64)?.to_dtype(DType::U8)?)
            }
            None => None,
        };
        // The shifted-slice conv (non-CPU devices) needs per-shift masks; the CPU op does not.
        let mask = match &resets {
            Some(r) if !r.device().is_cpu() => Some(ConvMask::new(r, self.cfg.d_conv)?),
            _ => None,
        };
        for layer in &self.layers {
            let h = rms_norm(&residual, &layer.norm, self.cfg.norm_eps)?;
            let out = layer.mixer.forward(&h, resets.as_ref(), mask.as_ref())?;
            residual = (residual + out)?;
        }
        rms_norm(&residual, &self.norm_f, self.cfg.norm_eps)
    }

    /// Logits over the padded vocabulary, (b, l, padded_vocab).
    /// `input_ids`: (b, l) u32; `resets`: optional (b, l) mask, nonzero where a document starts
    /// (state and conv window are zeroed there, so packed documents never see each other).
    pub fn forward(&self, input_ids: &Tensor, resets: Option<&Tensor>) -> Result<Tensor> {
        let h = self.forward_hidden(input_ids, resets)?;
        linear(&h, &self.embedding)
    }

    /// Mean next-token cross-entropy of `targets` (b, l) u32 given `input_ids` (b, l);
    /// differentiable. `loss_mask` (b, l), if given, weights positions (0 = ignore).
    pub fn loss(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        resets: Option<&Tensor>,
        loss_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(input_ids, resets)?;
        let h = h.reshape(((), self.cfg.d_model))?;
        // On the CPU the head and the cross-entropy are one op (see `crate::head`).
        if let Some(nll) = crate::head::head_nll(&h, &self.embedding, targets)? {
            return crate::loss::mean_nll(&nll, loss_mask);
        }
        let logits = linear(&h, &self.embedding)?;
        crate::loss::cross_entropy(&logits, targets, loss_mask)
    }
}
