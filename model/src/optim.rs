//! AdamW whose state (first and second moments, step count) is made of tensors that can be
//! checkpointed with safetensors (candle_nn's AdamW state cannot be saved).
//!
//! Weight decay policy (decoupled, as in torch.optim.AdamW): applied to the matmul and conv
//! weights (`in_proj`, `x_proj`, `dt_proj`, `out_proj`, `conv1d` `.weight`), not to the
//! embedding (tied with the LM head), RMSNorm weights, biases, `A_log` or `D` -- mamba_ssm marks
//! A_log and D `_no_weight_decay`, and the usual GPT recipe exempts norms, biases and embeddings.
//! Pass a custom predicate to [`AdamW::with_decay_policy`] to change it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::error::{Error, Result};
use crate::weights::{read_safetensors, write_safetensors};

/// Hyper-parameters of AdamW.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Whether the default policy applies weight decay to the parameter called `name`.
pub fn default_decay(name: &str) -> bool {
    name.ends_with(".weight")
        && ["in_proj", "x_proj", "dt_proj", "out_proj", "conv1d"]
            .iter()
            .any(|p| name.ends_with(&format!("{p}.weight")))
}

struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over named `Var`s.
pub struct AdamW {
    params: Vec<Param>,
    cfg: AdamWConfig,
    step: u64,
}

impl AdamW {
    /// Optimises `vars` (name, var) with the default decay policy; order does not matter
    /// (parameters are kept sorted by name).
    pub fn new(vars: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        Self::with_decay_policy(vars, cfg, default_decay)
    }

    /// Optimises every variable of a VarMap.
    pub fn from_varmap(varmap: &VarMap, cfg: AdamWConfig) -> Result<Self> {
        let vars = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>();
        Self::new(vars, cfg)
    }

    /// Like [`AdamW::new`] with `decay(name)` deciding which parameters get weight decay.
    pub fn with_decay_policy(
        mut vars: Vec<(String, Var)>,
        cfg: AdamWConfig,
        decay: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                let decay = decay(&name);
                Ok(Param {
                    name,
                    var,
                    m,
                    v,
                    decay,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            params,
            cfg,
            step: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }
    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }
    /// Sets the learning rate used by the next [`AdamW::step`] (schedules call this every step).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
    /// Number of steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// Names of the parameters and whether they are decayed.
    pub fn param_names(&self) -> Vec<(String, bool)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.decay))
            .collect()
    }

    /// One AdamW update from the gradients of `loss.backward()`; parameters without a gradient
    /// are left untouched (their moments too).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - beta2.powi(t);
        for p in self.params.iter_mut() {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let g = g.to_dtype(DType::F32)?;
            if p.var.device().is_cpu() {
                cpu_update(
                    p,
                    &g,
                    lr,
                    beta1,
                    beta2,
                    eps,
                    if p.decay { weight_decay } else { 0.0 },
                    bc1,
                    bc2,
                )?;
                continue;
            }
            let m = ((&p.m * beta1)? + (&g * (1.0 - beta1))?)?;
            let v = ((&p.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let mhat = (&m / bc1)?;
            let vhat = (&v / bc2)?;
            let upd = (mhat / (vhat.sqrt()? + eps)?)?;
            let mut w = p.var.as_tensor().detach();
            if p.decay && weight_decay != 0.0 {
                w = (w * (1.0 - lr * weight_decay))?;
            }
            p.var.set(&(w - (upd * lr)?)?)?;
            p.m = m;
            p.v = v;
        }
        Ok(())
    }

    /// `loss.backward()` then [`AdamW::step`].
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Saves the moments (`<param>.exp_avg`, `<param>.exp_avg_sq`) and the step count and
    /// hyper-parameters (metadata) to a safetensors file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut tensors = Vec::with_capacity(2 * self.params.len());
        for p in &self.params {
            tensors.push((format!("{}.exp_avg", p.name), p.m.clone()));
            tensors.push((format!("{}.exp_avg_sq", p.name), p.v.clone()));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let c = &self.cfg;
        let meta = vec![
            ("step".to_string(), self.step.to_string()),
            ("lr".to_string(), c.lr.to_string()),
            ("beta1".to_string(), c.beta1.to_string()),
            ("beta2".to_string(), c.beta2.to_string()),
            ("eps".to_string(), c.eps.to_string()),
            ("weight_decay".to_string(), c.weight_decay.to_string()),
        ];
        write_safetensors(path.as_ref(), &tensors, &meta)
    }

    /// Restores the state written by [`AdamW::save`] into an optimizer over the same parameters.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let device = self
            .params
            .first()
            .map(|p| p.var.device().clone())
            .unwrap_or(Device::Cpu);
        let (mut tensors, meta): (HashMap<String, Tensor>, _) = read_safetensors(path, &device)?;
        let num = |k: &str| -> Result<f64> {
            meta.get(k)
                .ok_or_else(|| Error::file(path, format!("metadata `{k}` missing")))?
                .parse::<f64>()
                .map_err(|e| Error::file(path, format!("metadata `{k}`: {e}")))
        };
        let step = num("step")? as u64;
        let cfg = AdamWConfig {
            lr: num("lr")?,
            beta1: num("beta1")?,
            beta2: num("beta2")?,
            eps: num("eps")?,
            weight_decay: num("weight_decay")?,
        };
        let mut new_mv = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let mut take = |suffix: &str| -> Result<Tensor> {
                let name = format!("{}.{suffix}", p.name);
                let t = tensors
                    .remove(&name)
                    .ok_or_else(|| Error::tensor(path, &name, "missing"))?;
                if t.dims() != p.var.dims() {
                    return Err(Error::tensor(
                        path,
                        &name,
                        format!("shape {:?}, parameter is {:?}", t.dims(), p.var.dims()),
                    ));
                }
                Ok(t)
            };
            new_mv.push((take("exp_avg")?, take("exp_avg_sq")?));
        }
        if let Some(name) = tensors.keys().min() {
            return Err(Error::tensor(
                path,
                name,
                "no such parameter in this optimizer",
            ));
        }
        for (p, (m, v)) in self.params.iter_mut().zip(new_mv) {
            p.m = m;
            p.v = v;
        }
        self.step = step;
        self.cfg = cfg;
        Ok(())
    }
}

/// Fused single-pass update for CPU tensors (the tensor-op path is used on other devices).
#[allow(clippy::too_many_arguments)]
fn cpu_update(
    p: &mut Param,
    g: &Tensor,
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    bc1: f64,
    bc2: f64,
) -> Result<()> {
    let shape = p.var.shape().clone();
    let mut w = p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let gv = g.flatten_all()?.to_vec1::<f32>()?;
    let mut m = p.m.flatten_all()?.to_vec1::<f32>()?;
    let mut v = p.v.flatten_all()?.to_vec1::<f32>()?;
    let (b1f, b2f) = (b1 as f32, b2 as f32);
    let (lr_f, eps_f) = (lr as f32, eps as f32);
    let decay = (1.0 - lr * wd) as f32;
    let (ibc1, ibc2) = ((1.0 / bc1) as f32, (1.0 / bc2) as f32);
    for i in 0..w.len() {
        let gi = gv[i];
        m[i] = b1f * m[i] + (1.0 - b1f) * gi;
        v[i] = b2f * v[i] + (1.0 - b2f) * gi * gi;
        let upd = (m[i] * ibc1) / ((v[i] * ibc2).sqrt() + eps_f);
        w[i] = w[i] * decay - lr_f * upd;
    }
    let dev = p.var.device().clone();
    p.var.set(&Tensor::from_vec(w, shape.clone(), &dev)?)?;
    p.m = Tensor::from_vec(m, shape.clone(), &dev)?;
    p.v = Tensor::from_vec(v, shape, &dev)?;
    Ok(())
}

/// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before
/// clipping. Gradients of `vars` missing from `grads` are skipped.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm && norm > 0.0 {
        let s = max_norm / norm;
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g2 = (g * s)?;
                grads.insert(v.as_tensor(), g2);
            }
        }
    }
    Ok(norm)
}
