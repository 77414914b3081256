//! Low-rank adapters (Hu et al. 2021, "LoRA"; PEFT's `LoraModel`). A frozen projection W gets a
//! trained update of rank r:
//!
//! ```text
//! y = x W^T + s * dropout(x) A^T B^T        A (r, in) ~ U(+-1/sqrt(in)), B (out, r) = 0
//! s = alpha / r    (alpha / sqrt(r) with rsLoRA)
//! ```
//!
//! so training starts from the base model's function. The adapters are held under PEFT's
//! names (`base_model.model.<module>.lora_A.weight`), so a saved adapter is PEFT's
//! `adapter_model.safetensors` as it is, and PEFT's adapters load here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;

use crate::config::Config;
use crate::layers::linear::linear_lora;
use crate::layers::ops::{linear_as, linear_in};
use crate::layers::params::Init;
use crate::rng::SplitMix64;

/// What to adapt and how: the rank, alpha, dropout and target modules (short names matched
/// against each layer's projections, as PEFT's `target_modules`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<String>,
    /// rsLoRA's scale alpha / sqrt(r) instead of alpha / r (read from PEFT's configs).
    pub rslora: bool,
}

impl LoraConfig {
    /// The factor of B A.
    pub fn scale(&self) -> f64 {
        match self.rslora {
            true => self.alpha / (self.rank as f64).sqrt(),
            false => self.alpha / self.rank as f64,
        }
    }
}

impl LoraConfig {
    /// The projections these settings adapt in `model`: (layer, module, [out, in]), in layer
    /// and table order.
    pub fn adapted(&self, model: &Config) -> Vec<(usize, &'static str, [usize; 2])> {
        (0..model.n_layer())
            .flat_map(|i| {
                projections(model, i)
                    .into_iter()
                    .map(move |(m, s)| (i, m, s))
            })
            .filter(|(_, m, _)| self.targets.iter().any(|t| t == m))
            .collect()
    }

    /// Rank, dropout and targets make sense for `model`: every target names a projection of
    /// some layer. The error says what to give instead.
    pub fn check(&self, model: &Config) -> std::result::Result<(), String> {
        let known = all_projections(model);
        if self.rank == 0 {
            return Err("the LoRA rank must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "the LoRA dropout must be in [0, 1), not {}",
                self.dropout
            ));
        }
        if self.targets.is_empty() {
            return Err(format!(
                "no LoRA targets; this model has {}",
                known.join(", ")
            ));
        }
        match self.targets.iter().find(|t| !known.contains(&t.as_str())) {
            Some(t) => Err(format!(
                "LoRA target {t:?} is no projection of this model; it has {}",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// The projections a LoRA adapter can target in a layer of `cfg`: every 2-d matrix of its
/// kind's table except the embedding, by module name ("in_proj"), in table order.
pub fn projections(cfg: &Config, layer: usize) -> Vec<(&'static str, [usize; 2])> {
    cfg.layers[layer]
        .table(cfg)
        .into_iter()
        .filter(|p| p.init.is_matrix() && p.init != Init::Embedding && p.shape.len() == 2)
        .map(|p| (module_of(p.name), [p.shape[0], p.shape[1]]))
        .collect()
}

/// A parameter's module: "in_proj" of "in_proj.weight".
pub(crate) fn module_of(param: &'static str) -> &'static str {
    param.strip_suffix(".weight").unwrap_or(param)
}

/// Every projection name some layer of `cfg` has, for messages and the default targets.
pub fn all_projections(cfg: &Config) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for i in 0..cfg.n_layer() {
        for (m, _) in projections(cfg, i) {
            if !names.contains(&m) {
                names.push(m);
            }
        }
    }
    names
}

/// The default targets of a model: each of its kinds' [`LayerKind::lora_targets`].
///
/// [`LayerKind::lora_targets`]: crate::LayerKind::lora_targets
pub fn default_targets(cfg: &Config) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for kind in &cfg.layers {
        for t in kind.lora_targets() {
            if !out.iter().any(|o| o == t) {
                out.push(t.to_string());
            }
        }
    }
    out
}

/// PEFT's name of adapter `ab` ("A" or "B") of `module` in layer `i` of a Mamba model, the
/// name this tool keeps it under whatever the family.
pub fn peft_name(i: usize, module: &str, ab: &str) -> String {
    format!("base_model.model.backbone.layers.{i}.mixer.{module}.lora_{ab}.weight")
}

/// PEFT's name of the same adapter in `model`'s family's layout (a hybrid's module names).
fn peft_file_name(model: &Config, i: usize, module: &str, ab: &str) -> String {
    let weight = format!("backbone.layers.{i}.mixer.{module}.weight");
    let file = crate::io::hybrid::file_name(model, &weight);
    let module = file.strip_suffix(".weight").unwrap_or(&file);
    format!("base_model.model.{module}.lora_{ab}.weight")
}

/// One adapted projection: A (r, in), B (out, r).
#[derive(Clone, Debug)]
pub struct Adapter {
    pub a: Tensor,
    pub b: Tensor,
}

/// Dropout on the adapters' input, seeded so a run is repeatable: the mask of a projection is
/// a function of (the step's seed, layer, projection), so a recomputed forward (gradient
/// checkpointing) draws the same mask, and `u64::MAX` (eval, generation) turns it off.
#[derive(Clone, Debug)]
struct Dropout {
    p: f64,
    seed: Arc<AtomicU64>,
    layer: usize,
}

const DROPOUT_OFF: u64 = u64::MAX;

impl Dropout {
    fn apply(&self, x: &Tensor, module: &str) -> Result<Tensor> {
        let seed = self.seed.load(Ordering::Relaxed);
        if seed == DROPOUT_OFF || self.p <= 0.0 {
            return Ok(x.clone());
        }
        let module = module.bytes().fold(0u64, |h, c| (h << 8) ^ c as u64);
        let mut rng = SplitMix64::derive(seed, &[self.layer as u64, module]);
        let keep = 1.0 - self.p;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| match rng.uniform() < keep {
                true => (1.0 / keep) as f32,
                false => 0.0,
            })
            .collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// The adapters of one mixer, by module name ("in_proj"); empty for a plain model.
#[derive(Clone, Debug, Default)]
pub struct Lora {
    adapters: Vec<(&'static str, Adapter)>,
    scale: f64,
    dropout: Option<Dropout>,
}

impl Lora {
    fn get(&self, module: &str) -> Option<&Adapter> {
        self.adapters
            .iter()
            .find_map(|(m, a)| (*m == module).then_some(a))
    }

    /// Whether `module` has an adapter whose input is dropped out now (the mixer's fused ops,
    /// which take the weight whole, cannot do that).
    pub(crate) fn drops(&self, module: &str) -> bool {
        let active = self
            .dropout
            .as_ref()
            .is_some_and(|d| d.p > 0.0 && d.seed.load(Ordering::Relaxed) != DROPOUT_OFF);
        active && self.get(module).is_some()
    }

    /// x @ w^T plus the adapter of `module`, if any, computed in `dt`.
    pub(crate) fn linear(&self, module: &str, x: &Tensor, w: &Tensor, dt: DType) -> Result<Tensor> {
        let [y]: [Tensor; 1] = self
            .linear_parts(module, x, w, &[(0, w.dim(0)?)], dt)?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("linear: one part expected".into()))?;
        Ok(y)
    }

    /// x @ w[rows]^T plus those rows of the adapter's output, for each (start, len) of `parts`
    /// (Mamba-1 computes in_proj's x and z halves apart). The adapter's input (dropped out)
    /// and its down-projection are computed once for all parts.
    pub(crate) fn linear_parts(
        &self,
        module: &str,
        x: &Tensor,
        w: &Tensor,
        parts: &[(usize, usize)],
        dt: DType,
    ) -> Result<Vec<Tensor>> {
        let Some(ad) = self.get(module) else {
            return parts
                .iter()
                .map(|&(start, len)| linear_in(x, &w.narrow(0, start, len)?, dt))
                .collect();
        };
        let down = self.down(ad, module, x, dt)?;
        parts
            .iter()
            .map(|&(start, len)| {
                let (w, b) = (w.narrow(0, start, len)?, ad.b.narrow(0, start, len)?);
                if dt == DType::F32 {
                    if let Some(y) = linear_lora(x, &w, &down, &b)? {
                        return Ok(y);
                    }
                }
                linear_in(x, &w, dt)? + linear_in(&down, &b, dt)?
            })
            .collect()
    }

    /// The adapter's down-projection s x A^T (x dropped out), computed in `dt`, in f32. The
    /// scale goes on the rank-r tensor, the smallest.
    fn down(&self, ad: &Adapter, module: &str, x: &Tensor, dt: DType) -> Result<Tensor> {
        let dropped = match &self.dropout {
            Some(d) => d.apply(x, module)?,
            None => x.clone(),
        };
        linear_in(&dropped, &ad.a, dt)? * self.scale
    }

    /// [`Lora::linear`] with the result left in `dt`: for the input of a part a layer
    /// recomputes in backward, kept at the compute dtype's size.
    pub(crate) fn linear_kept(
        &self,
        module: &str,
        x: &Tensor,
        w: &Tensor,
        dt: DType,
    ) -> Result<Tensor> {
        match self.get(module) {
            None => linear_as(x, w, dt),
            Some(ad) => {
                linear_as(x, w, dt)? + linear_as(&self.down(ad, module, x, dt)?, &ad.b, dt)?
            }
        }
    }

    /// A and B of the adapters on `modules` (those it has), in the order of `modules`.
    pub(crate) fn tensors_of(&self, modules: &[&str]) -> Vec<Tensor> {
        modules
            .iter()
            .filter_map(|m| self.get(m))
            .flat_map(|ad| [ad.a.clone(), ad.b.clone()])
            .collect()
    }

    /// The same adapters, those on `modules` with A and B from `subs` (in the order of
    /// [`Lora::tensors_of`]).
    pub(crate) fn replaced(&self, modules: &[&str], subs: &[Tensor]) -> Result<Lora> {
        let mut out = self.clone();
        let mut subs = subs.iter();
        for m in modules {
            if let Some((_, ad)) = out.adapters.iter_mut().find(|(n, _)| n == m) {
                match (subs.next(), subs.next()) {
                    (Some(a), Some(b)) => (ad.a, ad.b) = (a.clone(), b.clone()),
                    _ => candle_core::bail!("lora: no replacement for {m}"),
                }
            }
        }
        Ok(out)
    }

    /// w + s B A in f32, for an op that takes the weight whole (Mamba-1's fused selective
    /// SSM), differentiable in A and B only (the base under an adapter is frozen); w itself
    /// (as f32) when `module` has no adapter.
    pub(crate) fn merged(&self, module: &str, w: &Tensor) -> Result<Tensor> {
        match self.get(module) {
            Some(ad) => w.detach().to_dtype(DType::F32)? + (ad.b.matmul(&ad.a)? * self.scale)?,
            None => w.to_dtype(DType::F32),
        }
    }
}

/// A model's adapters: the configuration, A and B of every adapted projection under PEFT's
/// names, and the dropout seed the trainer sets per micro-batch.
#[derive(Clone, Debug)]
pub struct Adapters {
    pub cfg: LoraConfig,
    /// PEFT name -> tensor (the VarMap's variables while training).
    tensors: BTreeMap<String, Tensor>,
    /// PEFT name -> its name in the model family's layout, as the adapter file has it.
    files: BTreeMap<String, String>,
    seed: Arc<AtomicU64>,
}

impl Adapters {
    /// Fresh adapters for the targets of `lcfg` in every layer of `model` that has them:
    /// A ~ U(+-1/sqrt(in)) (PEFT's kaiming-uniform with a = sqrt(5)), B = 0; deterministic
    /// for a `seed`. The VarMap holds A and B as variables under PEFT's names.
    pub fn init(
        model: &Config,
        lcfg: &LoraConfig,
        seed: u64,
        dev: &Device,
    ) -> Result<(Self, VarMap)> {
        check_targets(model, lcfg)?;
        let mut tensors = BTreeMap::new();
        for (i, module, [out, inp]) in lcfg.adapted(model) {
            let bound = 1.0 / (inp as f64).sqrt();
            let a = peft_name(i, module, "A");
            let mut rng = SplitMix64::for_tensor(seed, &a);
            let values: Vec<f32> = (0..lcfg.rank * inp)
                .map(|_| rng.uniform_in(-bound, bound) as f32)
                .collect();
            tensors.insert(a, Tensor::from_vec(values, (lcfg.rank, inp), dev)?);
            let b = Tensor::zeros((out, lcfg.rank), DType::F32, dev)?;
            tensors.insert(peft_name(i, module, "B"), b);
        }
        Adapters::of(lcfg.clone(), tensors, file_names(model, lcfg)).into_vars()
    }

    /// Adapters over `tensors` (PEFT names, of `model`'s family's layout or this tool's),
    /// checked against `model`: every target's A and B present with their shapes, nothing
    /// else.
    pub fn from_tensors(
        model: &Config,
        lcfg: LoraConfig,
        mut tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self> {
        check_targets(model, &lcfg)?;
        let mut kept = BTreeMap::new();
        for (i, module, [out, inp]) in lcfg.adapted(model) {
            for (ab, shape) in [("A", [lcfg.rank, inp]), ("B", [out, lcfg.rank])] {
                let name = peft_name(i, module, ab);
                let file = peft_file_name(model, i, module, ab);
                let t = tensors.remove(&file).or_else(|| tensors.remove(&name));
                let t = t.ok_or_else(|| {
                    candle_core::Error::Msg(format!("the adapter has no tensor {file}"))
                })?;
                if t.dims() != shape {
                    candle_core::bail!(
                        "adapter tensor {name} has shape {:?}, the model needs {shape:?}",
                        t.dims()
                    )
                }
                kept.insert(name, t.to_dtype(DType::F32)?);
            }
        }
        if let Some(extra) = tensors.keys().next() {
            candle_core::bail!(
                "adapter tensor {extra} adapts nothing in this model ({} more unknown)",
                tensors.len() - 1
            )
        }
        let files = file_names(model, &lcfg);
        Ok(Adapters::of(lcfg, kept, files))
    }

    /// The same adapters as variables, to train on (a resumed run, a loaded adapter): the
    /// VarMap holds them under PEFT's names.
    pub fn into_vars(self) -> Result<(Adapters, VarMap)> {
        let varmap = VarMap::new();
        let mut tensors = BTreeMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| candle_core::Error::Msg("adapter variables poisoned".into()))?;
            for (name, t) in self.tensors {
                let v = Var::from_tensor(&t)?;
                tensors.insert(name.clone(), v.as_tensor().clone());
                data.insert(name, v);
            }
        }
        Ok((Adapters::of(self.cfg, tensors, self.files), varmap))
    }

    fn of(
        cfg: LoraConfig,
        tensors: BTreeMap<String, Tensor>,
        files: BTreeMap<String, String>,
    ) -> Adapters {
        Adapters {
            cfg,
            tensors,
            files,
            seed: Arc::new(AtomicU64::new(DROPOUT_OFF)),
        }
    }

    /// Every A and B under PEFT's names.
    pub fn named(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// Every A and B under PEFT's names in the model family's layout, for the adapter file.
    pub fn file_named(&self) -> Vec<(String, Tensor)> {
        let file = |n: &String| self.files.get(n).cloned().unwrap_or_else(|| n.clone());
        self.tensors
            .iter()
            .map(|(n, t)| (file(n), t.clone()))
            .collect()
    }

    /// Number of adapter parameters.
    pub fn num_params(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }

    /// Dropout draws its masks from `seed` from now on (a training micro-batch); `None`
    /// turns it off (eval).
    pub fn set_dropout_seed(&self, seed: Option<u64>) {
        let s = seed.map_or(DROPOUT_OFF, |s| s.min(DROPOUT_OFF - 1));
        self.seed.store(s, Ordering::Relaxed);
    }

    /// A and B of `module` in layer `i`, if adapted.
    fn adapter(&self, i: usize, module: &str) -> Option<Adapter> {
        Some(Adapter {
            a: self.tensors.get(&peft_name(i, module, "A"))?.clone(),
            b: self.tensors.get(&peft_name(i, module, "B"))?.clone(),
        })
    }

    /// The adapters of layer `i`, for its mixer.
    pub(crate) fn layer(&self, model: &Config, i: usize) -> Lora {
        let adapters = projections(model, i)
            .into_iter()
            .filter_map(|(module, _)| Some((module, self.adapter(i, module)?)))
            .collect();
        Lora {
            adapters,
            scale: self.cfg.scale(),
            dropout: (self.cfg.dropout > 0.0).then(|| Dropout {
                p: self.cfg.dropout,
                seed: self.seed.clone(),
                layer: i,
            }),
        }
    }

    /// s B A of `module` in layer `i` (out, in), f32, if adapted.
    pub fn delta(&self, i: usize, module: &str) -> Result<Option<Tensor>> {
        match self.adapter(i, module) {
            Some(ad) => Ok(Some((ad.b.matmul(&ad.a)? * self.cfg.scale())?)),
            None => Ok(None),
        }
    }
}

/// Each adapter's PEFT name -> its name in `model`'s family's layout.
fn file_names(model: &Config, lcfg: &LoraConfig) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, module, _) in lcfg.adapted(model) {
        for ab in ["A", "B"] {
            out.insert(
                peft_name(i, module, ab),
                peft_file_name(model, i, module, ab),
            );
        }
    }
    out
}

/// [`LoraConfig::check`] as a candle error.
fn check_targets(model: &Config, lcfg: &LoraConfig) -> Result<()> {
    lcfg.check(model).map_err(candle_core::Error::Msg)
}
