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
use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use candle_nn::VarMap;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::io::safetensors::{read_safetensors, write_safetensors};
use crate::layers::ops::contiguous;

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

/// Whether the default policy applies weight decay to the parameter called `name`: the
/// projections (the Mamba mixers', attention's and the MLPs') and the conv, and LoRA adapters
/// (as transformers' Trainer decays every trainable matrix).
pub fn default_decay(name: &str) -> bool {
    name.ends_with(".weight")
        && [
            "in_proj",
            "x_proj",
            "dt_proj",
            "out_proj",
            "conv1d",
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "input_linear",
            "output_linear",
            "lora_A",
            "lora_B",
        ]
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

    /// The optimizer's settings.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }
    /// The learning rate of the next step.
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

/// The update for CPU tensors, in place: the moments, then the weights, each one parallel
/// pass (the tensor-op path is used on other devices).
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
    let g = g.contiguous()?;
    p.m.inplace_op2(
        &g,
        &MomentPass {
            beta: b1 as f32,
            square: false,
        },
    )?;
    p.v.inplace_op2(
        &g,
        &MomentPass {
            beta: b2 as f32,
            square: true,
        },
    )?;
    let pass = WeightPass {
        lr: lr as f32,
        decay: (1.0 - lr * wd) as f32,
        eps: eps as f32,
        ibc1: (1.0 / bc1) as f32,
        ibc2: (1.0 / bc2) as f32,
    };
    p.var.as_tensor().inplace_op3(&p.m, &p.v, &pass)?;
    Ok(())
}

/// m <- beta m + (1 - beta) g (or g^2), in place.
struct MomentPass {
    beta: f32,
    square: bool,
}

/// w <- decay w - lr (m / bc1) / (sqrt(v / bc2) + eps), in place.
struct WeightPass {
    lr: f32,
    decay: f32,
    eps: f32,
    ibc1: f32,
    ibc2: f32,
}

/// Elements per parallel task of the in-place passes.
const PASS_CHUNK: usize = 1 << 14;

fn cpu_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("adamw: expected contiguous f32 tensors"),
    }
}

impl InplaceOp2 for MomentPass {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        m: &mut CpuStorage,
        ml: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let (m, g) = (
            cpu_slice_mut(m, ml)?,
            contiguous::<f32>(g, gl, "adamw: gradient")?,
        );
        let (beta, square) = (self.beta, self.square);
        m.par_chunks_mut(PASS_CHUNK)
            .zip(g.par_chunks(PASS_CHUNK))
            .for_each(|(m, g)| {
                for (m, &g) in m.iter_mut().zip(g) {
                    let x = if square { g * g } else { g };
                    *m = beta * *m + (1.0 - beta) * x;
                }
            });
        Ok(())
    }
}

impl InplaceOp3 for WeightPass {
    fn name(&self) -> &'static str {
        "adamw-weights"
    }

    fn cpu_fwd(
        &self,
        w: &mut CpuStorage,
        wl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let m = contiguous::<f32>(m, ml, "adamw: first moment")?;
        let v = contiguous::<f32>(v, vl, "adamw: second moment")?;
        let w = cpu_slice_mut(w, wl)?;
        let WeightPass {
            lr,
            decay,
            eps,
            ibc1,
            ibc2,
        } = *self;
        w.par_chunks_mut(PASS_CHUNK)
            .zip(m.par_chunks(PASS_CHUNK).zip(v.par_chunks(PASS_CHUNK)))
            .for_each(|(w, (m, v))| {
                for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                    *w = *w * decay - lr * (m * ibc1) / ((v * ibc2).sqrt() + eps);
                }
            });
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// torch.optim.AdamW's update written out in f64, for one parameter with a fixed gradient.
    fn reference(w0: &[f64], g: &[f64], cfg: &AdamWConfig, decay: bool, steps: i32) -> Vec<f64> {
        let (mut w, mut m, mut v) = (w0.to_vec(), vec![0.0; w0.len()], vec![0.0; w0.len()]);
        for t in 1..=steps {
            for i in 0..w.len() {
                if decay {
                    w[i] *= 1.0 - cfg.lr * cfg.weight_decay;
                }
                m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g[i];
                v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g[i] * g[i];
                let mhat = m[i] / (1.0 - cfg.beta1.powi(t));
                let vhat = v[i] / (1.0 - cfg.beta2.powi(t));
                w[i] -= cfg.lr * mhat / (vhat.sqrt() + cfg.eps);
            }
        }
        w
    }

    #[test]
    fn cpu_update_matches_torch_adamw() {
        let n = 40_000; // more than one parallel chunk
        let w0: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        let cfg = AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        };
        for (name, decay) in [("l.in_proj.weight", true), ("l.norm.weight", false)] {
            let var = Var::from_vec(w0.clone(), n, &Device::Cpu).unwrap();
            let mut opt = AdamW::new(vec![(name.to_string(), var.clone())], cfg.clone()).unwrap();
            let coef = Tensor::from_vec(g.clone(), n, &Device::Cpu).unwrap();
            for _ in 0..3 {
                let loss = (var.as_tensor() * &coef).unwrap().sum_all().unwrap();
                opt.backward_step(&loss).unwrap();
            }
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            let w64: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
            let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            let want = reference(&w64, &g64, &cfg, decay, 3);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((*a as f64 - b).abs() < 1e-5, "{name}[{i}]: {a} vs {b}");
            }
        }
    }
}
