//! The language model: embedding -> n_layer x (RMSNorm -> mixer -> residual add) -> RMSNorm ->
//! LM head, tied to the embedding or its own (transformers `MambaForCausalLM` and
//! `Mamba2ForCausalLM`, mamba_ssm `MambaLMHeadModel`); each layer's mixer is of its kind.
//! One forward serves training, evaluation and prefill; see [`ForwardOptions`].

use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::config::Config;
use crate::layers::norm::rms_norm;
use crate::layers::ops::linear_in;
use crate::layers::params::{Init, Param};
use crate::layers::recompute::{add_grads, leaf_grad, recompute, Part};
use crate::mixers::Mixer;

/// Logits the head computes at once off the CPU's fused ops (a block of positions times the
/// vocabulary; 64 MiB in f32).
pub const HEAD_LOGITS: usize = 1 << 24;

/// Bytes per token every block keeps until the end of backward on the path a GPU computes,
/// whatever its kind: its output (the f32 residual stream), its norm's output in the compute
/// dtype (`e` bytes), its mixer's output and, in half precision, that output widened to f32.
pub fn block_kept_per_token(cfg: &Config, e: u64) -> u64 {
    let d = cfg.d_model as u64;
    4 * d + 2 * e * d + if e < 4 { 4 * d } else { 0 }
}

/// Bytes the head and its loss hold at most, on the path a GPU computes, over `tokens`
/// positions: one block of positions (see [`HEAD_LOGITS`]) times the vocabulary, ~18 bytes a
/// logit (the logits in the compute dtype and in f32, their gradient in both; measured), and the
/// head's weight cast to the compute dtype (`e` bytes).
pub fn head_bytes(cfg: &Config, tokens: usize, e: u64) -> u64 {
    let v = cfg.padded_vocab();
    let block = tokens.min((HEAD_LOGITS / v).max(1)) as u64;
    let cast = if e < 4 {
        e * (v * cfg.d_model) as u64
    } else {
        0
    };
    18 * block * v as u64 + cast
}

/// Name of an untied LM head's weight in transformers' layout.
pub const LM_HEAD: &str = "lm_head.weight";

/// One residual block: h + mixer(rms_norm(h)) (candle's and mamba_ssm's `Block`); the mixer is
/// the only part that knows the layer's kind.
#[derive(Clone, Debug)]
pub(crate) struct Block {
    pub(crate) norm: Tensor,
    pub(crate) mixer: Mixer,
}

/// A Mamba language model (its layers of the kinds its config lists) with f32 parameters.
#[derive(Clone, Debug)]
pub struct MambaLM {
    pub(crate) cfg: Config,
    /// (padded_vocab, d_model).
    pub(crate) embedding: Tensor,
    /// (padded_vocab, d_model): the embedding itself when tied, else `lm_head.weight`.
    pub(crate) head: Tensor,
    pub(crate) layers: Vec<Block>,
    pub(crate) norm_f: Tensor,
}

/// How a forward computes. The default is the plain f32 forward without resets.
#[derive(Clone, Copy, Debug)]
pub struct ForwardOptions<'a> {
    /// (b, l), nonzero where a document starts: the conv window and the SSM state are zeroed
    /// there, so packed documents never see each other.
    pub resets: Option<&'a Tensor>,
    /// Dtype of the matmuls (f32, bf16 or f16). Parameters stay f32 and are cast per matmul
    /// (differentiably, so gradients arrive in f32); norms, conv, scan and loss stay f32.
    pub compute: DType,
    /// Gradient checkpointing in [`MambaLM::loss_and_grads`] (Chen et al. 2016): keep only each
    /// block's input and rebuild one block's graph at a time in the backward.
    pub checkpointing: bool,
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        ForwardOptions {
            resets: None,
            compute: DType::F32,
            checkpointing: false,
        }
    }
}

impl MambaLM {
    /// Every parameter's transformers name, shape and initialisation, in a fixed order
    /// (embedding, layers 0.., final norm, then the LM head when it is not tied to the
    /// embedding).
    pub fn params(cfg: &Config) -> Vec<(String, Param)> {
        let own = |name: &'static str, shape: Vec<usize>, init: Init| Param { name, shape, init };
        let vocab = cfg.padded_vocab();
        let mut v = vec![(
            "backbone.embeddings.weight".to_string(),
            own(
                "embeddings.weight",
                vec![vocab, cfg.d_model],
                Init::Embedding,
            ),
        )];
        for (i, kind) in cfg.layers.iter().enumerate() {
            let p = format!("backbone.layers.{i}");
            let norm = own("norm.weight", vec![cfg.d_model], Init::Ones);
            v.push((format!("{p}.norm.weight"), norm));
            for param in kind.table(cfg) {
                v.push((format!("{p}.mixer.{}", param.name), param));
            }
        }
        let norm_f = own("norm_f.weight", vec![cfg.d_model], Init::Ones);
        v.push(("backbone.norm_f.weight".to_string(), norm_f));
        if !cfg.tie_embeddings {
            let head = own(LM_HEAD, vec![vocab, cfg.d_model], Init::Linear);
            v.push((LM_HEAD.to_string(), head));
        }
        v
    }

    /// Every parameter's transformers name and shape, in the order of [`MambaLM::params`].
    pub fn shapes(cfg: &Config) -> Vec<(String, Vec<usize>)> {
        Self::params(cfg)
            .into_iter()
            .map(|(name, p)| (name, p.shape))
            .collect()
    }

    /// Total number of parameters (a tied LM head is the embedding, not counted twice).
    pub fn num_params(cfg: &Config) -> usize {
        Self::params(cfg)
            .iter()
            .map(|(_, p)| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Builds the model from a VarBuilder using the names of [`MambaLM::params`].
    /// With a VarMap-backed builder, use [`MambaLM::init`] to get mamba_ssm's initialisation.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        crate::mixers::check(cfg).map_err(candle_core::Error::wrap)?;
        let bb = vb.pp("backbone");
        let embedding = bb.get((cfg.padded_vocab(), cfg.d_model), "embeddings.weight")?;
        let mut layers = Vec::with_capacity(cfg.n_layer());
        for (i, &kind) in cfg.layers.iter().enumerate() {
            let lv = bb.pp(format!("layers.{i}"));
            layers.push(Block {
                norm: lv.get(cfg.d_model, "norm.weight")?,
                mixer: Mixer::new(kind, cfg, &lv.pp("mixer"))?,
            });
        }
        let norm_f = bb.get(cfg.d_model, "norm_f.weight")?;
        let head = match cfg.tie_embeddings {
            true => embedding.clone(),
            false => vb.get((cfg.padded_vocab(), cfg.d_model), LM_HEAD)?,
        };
        Ok(MambaLM {
            cfg: cfg.clone(),
            embedding,
            head,
            layers,
            norm_f,
        })
    }

    /// A freshly initialised, trainable model (mamba_ssm's initialisation, see [`crate::init`]),
    /// deterministic for a given `seed`. The returned VarMap holds every parameter as a `Var`
    /// under its transformers name.
    pub fn init(cfg: &Config, seed: u64, device: &Device) -> Result<(Self, VarMap)> {
        crate::mixers::check(cfg).map_err(candle_core::Error::wrap)?;
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            for (name, p) in Self::params(cfg) {
                let v = crate::init::init_values(cfg, p.init, &name, &p.shape, seed);
                let t = Tensor::from_vec(v, p.shape, device)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let model = MambaLM::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok((model, varmap))
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Where the parameters live (CPU or a CUDA device).
    pub fn device(&self) -> &Device {
        self.embedding.device()
    }

    /// Every parameter with its name, in the order of [`MambaLM::shapes`].
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = vec![self.embedding.clone()];
        for l in &self.layers {
            tensors.push(l.norm.clone());
            tensors.extend(l.mixer.named().into_iter().map(|(_, t)| t.clone()));
        }
        tensors.push(self.norm_f.clone());
        if !self.cfg.tie_embeddings {
            tensors.push(self.head.clone());
        }
        Self::shapes(&self.cfg)
            .into_iter()
            .map(|(name, _)| name)
            .zip(tensors)
            .collect()
    }

    /// The same model on the same weights (no copy) as plain tensors rather than variables:
    /// for generation and evaluation, whose forward then records no autograd graph.
    pub fn detach(&self) -> MambaLM {
        let layers = self
            .layers
            .iter()
            .map(|l| Block {
                norm: l.norm.detach(),
                mixer: l.mixer.detach(),
            })
            .collect();
        MambaLM {
            cfg: self.cfg.clone(),
            embedding: self.embedding.detach(),
            head: self.head.detach(),
            layers,
            norm_f: self.norm_f.detach(),
        }
    }

    /// The same weights (no copy) with `adapters` on the mixers' projections: the model a
    /// LoRA run trains (its loss; generation merges the adapters instead, see
    /// [`MambaLM::merge_adapters`]).
    pub fn with_adapters(&self, adapters: &crate::lora::Adapters) -> MambaLM {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| Block {
                norm: l.norm.clone(),
                mixer: l.mixer.with_lora(adapters.layer(&self.cfg, i)),
            })
            .collect();
        MambaLM {
            layers,
            ..self.clone()
        }
    }

    /// The model with `adapters` merged into its weights, W + s B A, each in its own dtype
    /// (PEFT's `merge_and_unload`); detached.
    pub fn merge_adapters(&self, adapters: &crate::lora::Adapters) -> Result<MambaLM> {
        let mut out = self.detach();
        for (i, layer) in out.layers.iter_mut().enumerate() {
            let names: Vec<&'static str> =
                layer.mixer.named().into_iter().map(|(n, _)| n).collect();
            let mut k = 0;
            // `map` visits the parameters in the order of `named`.
            layer.mixer = layer.mixer.map(|t, _| {
                let module = crate::lora::module_of(names[k]);
                k += 1;
                match adapters.delta(i, module)? {
                    Some(d) => (t.to_dtype(DType::F32)? + d)?.to_dtype(t.dtype()),
                    None => Ok(t.clone()),
                }
            })?;
        }
        Ok(out)
    }

    /// The model for generation with its matrices (embedding, head, the four projections of
    /// every mixer) held in `dtype` (bf16: half the bytes each decode step reads), the rest in
    /// f32; computation stays f32, each matrix cast as it is used. Consumes the model so that
    /// each f32 matrix is freed as its copy is made (no 1.5x peak); the result is detached.
    pub fn into_weight_dtype(self, dtype: DType) -> Result<MambaLM> {
        let MambaLM {
            cfg,
            embedding,
            head,
            layers,
            norm_f,
        } = self;
        // A tied head is the embedding: dropped here so the embedding's f32 copy can go.
        let head = (!cfg.tie_embeddings).then_some(head);
        let embedding = cast(embedding, dtype)?;
        let head = match head {
            Some(h) => cast(h, dtype)?,
            None => embedding.clone(),
        };
        let layers = layers
            .into_iter()
            .map(|l| {
                Ok(Block {
                    norm: l.norm.detach(),
                    mixer: l.mixer.into_weight_dtype(dtype)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MambaLM {
            cfg,
            embedding,
            head,
            layers,
            norm_f: norm_f.detach(),
        })
    }

    /// The parameter named `name` (see [`MambaLM::shapes`]), if the model has one.
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        self.named_tensors()
            .into_iter()
            .find_map(|(n, t)| (n == name).then_some(t))
    }

    /// Token embeddings (b, l, d_model) of `ids` (b, l) u32.
    pub(crate) fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        self.embed_flat(&ids.flatten_all()?)?
            .reshape((b, l, self.cfg.d_model))
    }

    /// Token embeddings (n, d_model) of `ids` (n) u32, times the embedding multiplier.
    pub(crate) fn embed_flat(&self, ids: &Tensor) -> Result<Tensor> {
        let e = self.embedding.index_select(ids, 0)?.to_dtype(DType::F32)?;
        match self.cfg.embedding_multiplier {
            1.0 => Ok(e),
            m => e * m,
        }
    }

    /// The residual stream after a layer: h + out, out scaled by the residual multiplier.
    pub(crate) fn residual(&self, h: &Tensor, out: &Tensor) -> Result<Tensor> {
        let out = &out.to_dtype(h.dtype())?;
        match self.cfg.residual_multiplier {
            1.0 => h + out,
            m => h + (out * m)?,
        }
    }

    /// The final norm of `h`, divided by the logits scaling (so that the head gives the
    /// scaled logits).
    pub(crate) fn final_norm(&self, h: &Tensor) -> Result<Tensor> {
        let x = rms_norm(h, &self.norm_f, self.cfg.norm_eps)?;
        match self.cfg.logits_scaling {
            1.0 => Ok(x),
            s => x / s,
        }
    }

    /// Residual block `i` on `h` (b, l, d_model) in f32 without resets: one layer's work, for
    /// benchmarks that compare a layer with another library's.
    pub fn layer_forward(&self, i: usize, h: &Tensor) -> Result<Tensor> {
        self.block(i, h, &ForwardOptions::default())
    }

    /// Residual block `i`: h + mixer(rms_norm(h)).
    fn block(&self, i: usize, h: &Tensor, o: &ForwardOptions) -> Result<Tensor> {
        let layer = &self.layers[i];
        let x = self.block_norm(h, &layer.norm, o.compute)?;
        self.residual(h, &layer.mixer.forward(&x, o.resets, o.compute)?)
    }

    /// A block's input norm. Off the CPU's fused ops it is recomputed in backward and handed to
    /// the mixer in the compute dtype, so a layer keeps only that half-size copy of it.
    fn block_norm(&self, h: &Tensor, w: &Tensor, compute: DType) -> Result<Tensor> {
        let eps = self.cfg.norm_eps;
        if crate::kernels::cpu_fused(h.device()) {
            return rms_norm(h, w, eps);
        }
        let norm: Part = Arc::new(move |h, _, p| rms_norm(h, &p[0], eps)?.to_dtype(compute));
        recompute(h, std::slice::from_ref(w), None, norm)
    }

    /// Final norm, head and mean next-token cross-entropy of `targets` (b, l) given the
    /// last block's output `h` (b, l, d_model); `loss_mask` (b, l) weights positions.
    fn head_loss(
        &self,
        h: &Tensor,
        targets: &Tensor,
        loss_mask: Option<&Tensor>,
        o: &ForwardOptions,
    ) -> Result<Tensor> {
        if !crate::kernels::cpu_fused(h.device()) {
            let nll = self.head_nll_recomputed(h, targets, o.compute)?;
            return crate::loss::mean_nll(&nll, loss_mask);
        }
        let h = self.final_norm(h)?.reshape(((), self.cfg.d_model))?;
        // On the CPU in f32 the head and the cross-entropy are one op (see `crate::kernels::head`).
        if o.compute == DType::F32 {
            if let Some(nll) = crate::kernels::head::head_nll(&h, &self.head, targets)? {
                return crate::loss::mean_nll(&nll, loss_mask);
            }
        }
        let logits = linear_in(&h, &self.head, o.compute)?;
        crate::loss::cross_entropy(&logits, targets, loss_mask)
    }

    /// Per-position loss (N) of the last block's output `h` (b, l, d_model) off the CPU's
    /// fused ops: final norm, head and cross-entropy as one part recomputed in backward, a
    /// block of positions at a time, so that the (positions x vocabulary) logits never exist
    /// whole, forward or backward.
    fn head_nll_recomputed(&self, h: &Tensor, targets: &Tensor, compute: DType) -> Result<Tensor> {
        let h = h.reshape(((), self.cfg.d_model))?;
        let targets = targets.flatten_all()?.to_dtype(DType::U32)?;
        let (eps, scaling) = (self.cfg.norm_eps, self.cfg.logits_scaling);
        let part: Part = Arc::new(move |h, start, p| {
            let x = rms_norm(h, &p[1], eps)?;
            let x = if scaling == 1.0 { x } else { (x / scaling)? };
            let logits = linear_in(&x, &p[0], compute)?;
            let t = targets.narrow(0, start, h.dim(0)?)?;
            crate::loss::per_position_nll(&logits, &t)
        });
        let rows = (HEAD_LOGITS / self.cfg.padded_vocab()).max(1);
        recompute(
            &h,
            &[self.head.clone(), self.norm_f.clone()],
            Some(rows),
            part,
        )
    }

    /// Checks `resets` against `ids` and makes it a u8 mask.
    fn checked(&self, ids: &Tensor, resets: Option<&Tensor>) -> Result<Option<Tensor>> {
        let Some(r) = resets else { return Ok(None) };
        if r.dims() != ids.dims() {
            candle_core::bail!(
                "resets has shape {:?}, expected {:?} like input_ids",
                r.dims(),
                ids.dims()
            )
        }
        Ok(Some(r.ne(0f64)?.to_dtype(DType::U8)?))
    }

    /// Last block's output (b, l, d_model) for `ids` (b, l) u32, before the final norm.
    fn trunk(&self, ids: &Tensor, o: &ForwardOptions) -> Result<Tensor> {
        let resets = self.checked(ids, o.resets)?;
        let o = ForwardOptions {
            resets: resets.as_ref(),
            ..*o
        };
        let mut h = self.embed(ids)?;
        for i in 0..self.layers.len() {
            h = self.block(i, &h, &o)?;
        }
        Ok(h)
    }

    /// Logits over the padded vocabulary, (b, l, padded_vocab), for `input_ids` (b, l) u32.
    /// `resets`: optional (b, l) mask, nonzero where a document starts.
    pub fn forward(&self, input_ids: &Tensor, resets: Option<&Tensor>) -> Result<Tensor> {
        let o = ForwardOptions {
            resets,
            ..Default::default()
        };
        let h = self.trunk(input_ids, &o)?;
        let h = self.final_norm(&h)?;
        crate::layers::ops::linear(&h, &self.head)
    }

    /// Mean next-token cross-entropy of `targets` (b, l) u32 given `input_ids` (b, l), computed
    /// as `o` says (its `checkpointing` is ignored: this builds the whole graph); differentiable.
    /// `loss_mask` (b, l), if given, weights positions (0 = ignore).
    pub fn loss_with(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        loss_mask: Option<&Tensor>,
        o: &ForwardOptions,
    ) -> Result<Tensor> {
        let h = self.trunk(input_ids, o)?;
        self.head_loss(&h, targets, loss_mask, o)
    }

    /// [`MambaLM::loss_with`] in f32.
    pub fn loss(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        resets: Option<&Tensor>,
        loss_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let o = ForwardOptions {
            resets,
            ..Default::default()
        };
        self.loss_with(input_ids, targets, loss_mask, &o)
    }

    /// The loss (detached) and the gradients of `loss * scale` with respect to every parameter,
    /// with or without gradient checkpointing as `o` says; both give the same gradients.
    pub fn loss_and_grads(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        o: &ForwardOptions,
        scale: f64,
    ) -> Result<(Tensor, GradStore)> {
        if o.checkpointing {
            return self.checkpointed_loss_and_grads(input_ids, targets, o, scale);
        }
        let loss = self.loss_with(input_ids, targets, None, o)?;
        let grads = (&loss * scale)?.backward()?;
        Ok((loss.detach(), grads))
    }

    /// Gradient checkpointing: the forward keeps only each block's input, with no graph; the
    /// backward walks the blocks from the top, rebuilding one block's graph at a time and
    /// backpropagating the incoming gradient through it as the surrogate `sum(out * grad_out)`.
    /// Peak memory holds one block's activations instead of all, for one extra forward per
    /// block.
    fn checkpointed_loss_and_grads(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        o: &ForwardOptions,
        scale: f64,
    ) -> Result<(Tensor, GradStore)> {
        let resets = self.checked(ids, o.resets)?;
        let o = ForwardOptions {
            resets: resets.as_ref(),
            ..*o
        };
        let params: Vec<Tensor> = self.named_tensors().into_iter().map(|(_, t)| t).collect();
        let mut acc = GradStore::default();
        let mut inputs = vec![self.embed(ids)?.detach()];
        for i in 0..self.layers.len() {
            let h = self.block(i, &inputs[i], &o)?.detach();
            inputs.push(h);
        }
        // The head's graph starts at a leaf standing for the last hidden state.
        let top = Var::from_tensor(&inputs[self.layers.len()])?;
        let loss = self.head_loss(top.as_tensor(), targets, None, &o)?;
        let grads = (&loss * scale)?.backward()?;
        add_grads(&mut acc, &grads, &params)?;
        let mut g = leaf_grad(&grads, &top, "the head input")?;
        drop(grads);
        for i in (0..self.layers.len()).rev() {
            let x = Var::from_tensor(&inputs[i])?;
            let out = self.block(i, x.as_tensor(), &o)?;
            let grads = (out * &g)?.sum_all()?.backward()?;
            add_grads(&mut acc, &grads, &params)?;
            g = leaf_grad(&grads, &x, &format!("block {i}"))?;
        }
        let grads = (self.embed(ids)? * &g)?.sum_all()?.backward()?;
        add_grads(&mut acc, &grads, &params)?;
        Ok((loss.detach(), acc))
    }
}

/// `t` in `dtype`, detached; `t` itself is dropped, so its storage goes when nothing else
/// holds it.
fn cast(t: Tensor, dtype: DType) -> Result<Tensor> {
    Ok(t.detach().to_dtype(dtype)?.detach())
}
