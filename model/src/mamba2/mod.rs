//! Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"), as transformers' `Mamba2ForCausalLM`
//! computes it: loaded from and saved to its checkpoints, initialised as mamba_ssm does, and
//! trainable (its state-space layer is the chunked SSD of [`ssd`], document resets included).
//! Generation and the command line do not use it yet.
//!
//! A block is h + mixer(rms_norm(h)), the mixer:
//!
//! ```text
//! z, xBC, dt = in_proj(h)                       (d_inner, d_inner + 2 G N, H)
//! xBC        = silu(causal_conv1d(xBC))         depthwise, window d_conv
//! x, B, C    = xBC                              x as H heads of P channels; B, C: G groups of N
//! dt         = clamp(softplus(dt + dt_bias), dt_limit)
//! h_t        = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T      per head: A a scalar, h (P, N)
//! y_t        = h_t C_t + D x_t
//! out        = out_proj(rms_norm_per_group(y * silu(z)))
//! ```
//! Head k reads group k / (H / G) of B and C.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor, Var, D};
use candle_nn::VarMap;
use serde_json::Value;

use crate::error::Error;
use crate::io::config::CONFIG_FILE;
use crate::layers::conv::{causal_conv1d, conv_tail};
use crate::layers::norm::rms_norm;
use crate::layers::ops::{linear, softplus};
use crate::rng::SplitMix64;

mod config;
mod decode;
pub mod ssd;
pub use config::Mamba2Config;
pub use decode::Mamba2State;
pub use ssd::{ssd_chunked, ssd_reference};

/// Positions per chunk of the SSD (the matrix products within a chunk are CHUNK x CHUNK).
const CHUNK: usize = 64;

/// One Mamba-2 mixer's parameters, in the order of [`MIXER`].
struct Mixer2 {
    in_proj: Tensor,  // (d_inner + conv_dim + H, d)
    conv_w: Tensor,   // (conv_dim, 1, k)
    conv_b: Tensor,   // (conv_dim)
    dt_bias: Tensor,  // (H)
    a_log: Tensor,    // (H)
    d: Tensor,        // (H)
    norm: Tensor,     // (d_inner)
    out_proj: Tensor, // (d, d_inner)
}

/// The mixer's parameter names below `...mixer.`, as transformers names them.
const MIXER: [&str; 8] = [
    "in_proj.weight",
    "conv1d.weight",
    "conv1d.bias",
    "dt_bias",
    "A_log",
    "D",
    "norm.weight",
    "out_proj.weight",
];

/// A Mamba-2 language model (embedding, blocks, final norm, head).
pub struct Mamba2LM {
    cfg: Mamba2Config,
    embedding: Tensor,
    head: Tensor,
    layers: Vec<(Tensor, Mixer2)>,
    norm_f: Tensor,
}

impl Mamba2LM {
    /// Every parameter's transformers name and shape, in a fixed order: the one table of them.
    pub fn shapes(c: &Mamba2Config) -> Vec<(String, Vec<usize>)> {
        let (d, di, h, k) = (c.d_model, c.d_inner(), c.n_heads(), c.d_conv);
        let mixer = [
            vec![di + c.conv_dim() + h, d],
            vec![c.conv_dim(), 1, k],
            vec![c.conv_dim()],
            vec![h],
            vec![h],
            vec![h],
            vec![di],
            vec![d, di],
        ];
        let mut v = vec![(
            "backbone.embeddings.weight".to_string(),
            vec![c.vocab_size, d],
        )];
        for i in 0..c.n_layer {
            let p = format!("backbone.layers.{i}");
            v.push((format!("{p}.norm.weight"), vec![d]));
            for (name, shape) in MIXER.iter().zip(&mixer) {
                v.push((format!("{p}.mixer.{name}"), shape.clone()));
            }
        }
        v.push(("backbone.norm_f.weight".to_string(), vec![d]));
        if !c.tie_embeddings {
            v.push(("lm_head.weight".to_string(), vec![c.vocab_size, d]));
        }
        v
    }

    /// The model over named tensors (all of [`Mamba2LM::shapes`], checked by the caller).
    fn from_named(cfg: Mamba2Config, t: &HashMap<String, Tensor>) -> Mamba2LM {
        let get = |n: &str| t[n].clone();
        let layers = (0..cfg.n_layer)
            .map(|i| {
                let p = format!("backbone.layers.{i}");
                let m = |n: &str| get(&format!("{p}.mixer.{n}"));
                let mixer = Mixer2 {
                    in_proj: m(MIXER[0]),
                    conv_w: m(MIXER[1]),
                    conv_b: m(MIXER[2]),
                    dt_bias: m(MIXER[3]),
                    a_log: m(MIXER[4]),
                    d: m(MIXER[5]),
                    norm: m(MIXER[6]),
                    out_proj: m(MIXER[7]),
                };
                (get(&format!("{p}.norm.weight")), mixer)
            })
            .collect();
        let embedding = get("backbone.embeddings.weight");
        let head = match cfg.tie_embeddings {
            true => embedding.clone(),
            false => get("lm_head.weight"),
        };
        Mamba2LM {
            norm_f: get("backbone.norm_f.weight"),
            cfg,
            embedding,
            head,
            layers,
        }
    }

    /// Loads a transformers `Mamba2ForCausalLM` directory (any weights layout
    /// [`MambaLM::load`](crate::MambaLM::load) reads); the parameters are `Var`s in the
    /// returned VarMap, ready to train. Errors name the file and the tensor.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> crate::Result<(Self, VarMap)> {
        let dir = dir.as_ref();
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
        let cfg = Mamba2Config::from_hf(&v, &path)?;
        let (mut tensors, wpath) = crate::io::weights::read_weights(dir)?;
        if cfg.tie_embeddings {
            // A copy of the tied head some exporters write.
            tensors.remove("lm_head.weight");
        }
        let varmap = crate::io::weights::variables(tensors, Self::shapes(&cfg), &wpath, device)?;
        let named = named_of(&varmap);
        Ok((Self::from_named(cfg, &named), varmap))
    }

    /// A freshly initialised, trainable model, deterministic for `seed` (mamba_ssm's Mamba-2
    /// initialisation: A = -U(1, 16), dt log-uniform in [dt_min, dt_max] through the inverse
    /// softplus into dt_bias, D = 1; projections and conv as PyTorch's defaults, out_proj
    /// divided by sqrt(n_layer); embedding N(0, 0.02)).
    pub fn init(cfg: &Mamba2Config, seed: u64, device: &Device) -> crate::Result<(Self, VarMap)> {
        let varmap = VarMap::new();
        for (name, shape) in Self::shapes(cfg) {
            let v = init_values(cfg, &name, &shape, seed);
            let var = Var::from_vec(v, shape, device)?;
            varmap.data().lock().unwrap().insert(name, var);
        }
        Ok((Self::from_named(cfg.clone(), &named_of(&varmap)), varmap))
    }

    pub fn config(&self) -> &Mamba2Config {
        &self.cfg
    }

    /// Every parameter with its name, in the order of [`Mamba2LM::shapes`].
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut t = vec![self.embedding.clone()];
        for (norm, m) in &self.layers {
            t.push(norm.clone());
            t.extend(
                [
                    &m.in_proj,
                    &m.conv_w,
                    &m.conv_b,
                    &m.dt_bias,
                    &m.a_log,
                    &m.d,
                    &m.norm,
                    &m.out_proj,
                ]
                .map(Tensor::clone),
            );
        }
        t.push(self.norm_f.clone());
        if !self.cfg.tie_embeddings {
            t.push(self.head.clone());
        }
        Self::shapes(&self.cfg)
            .into_iter()
            .map(|(n, _)| n)
            .zip(t)
            .collect()
    }

    /// Saves `dir/config.json` and `dir/model.safetensors` in transformers' layout.
    pub fn save(&self, dir: impl AsRef<Path>) -> crate::Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(CONFIG_FILE);
        let text =
            serde_json::to_string_pretty(&self.cfg.to_hf()).map_err(|e| Error::file(&path, e))?;
        std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        let mut named = self.named_tensors();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let max = crate::io::weights::MAX_SHARD_BYTES;
        crate::io::safetensors::write_checkpoint_weights(dir, &named, max)
    }

    /// Logits (b, l, vocab) of `ids` (b, l) u32; `resets` (b, l), nonzero where a document
    /// starts (the conv window and the SSD state never reach back past it).
    pub fn forward(&self, ids: &Tensor, resets: Option<&Tensor>) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let mut h = self
            .embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, self.cfg.d_model))?;
        for (norm, mixer) in &self.layers {
            let x = rms_norm(&h, norm, self.cfg.norm_eps)?;
            h = (&h + mixer.forward(&x, &self.cfg, resets)?)?;
        }
        let h = rms_norm(&h, &self.norm_f, self.cfg.norm_eps)?;
        linear(&h, &self.head)
    }

    /// Mean next-token cross-entropy of `targets` (b, l) given `ids` (b, l); differentiable.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor, resets: Option<&Tensor>) -> Result<Tensor> {
        let logits = self.forward(ids, resets)?;
        let v = logits.dim(2)?;
        crate::loss::cross_entropy(&logits.reshape(((), v))?, &targets.flatten_all()?, None)
    }
}

/// The variables' tensors by name.
fn named_of(varmap: &VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect()
}

/// Initial value of one parameter (see [`Mamba2LM::init`]).
fn init_values(c: &Mamba2Config, name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let mut rng = SplitMix64::for_tensor(seed, name);
    let last = name.rsplit('.').next().unwrap_or(name);
    let uniform = |rng: &mut SplitMix64, lo: f64, hi: f64| -> Vec<f32> {
        (0..numel).map(|_| rng.uniform_in(lo, hi) as f32).collect()
    };
    if last == "A_log" {
        return uniform(&mut rng, 1.0, 16.0)
            .iter()
            .map(|a| a.ln())
            .collect();
    }
    if last == "dt_bias" {
        let (lo, hi) = (1e-3f64.ln(), 0.1f64.ln());
        return (0..numel)
            .map(|_| crate::init::inv_softplus(rng.uniform_in(lo, hi).exp().max(1e-4)) as f32)
            .collect();
    }
    if last == "D" || name.ends_with("norm.weight") || name.ends_with("norm_f.weight") {
        return vec![1.0; numel];
    }
    if name.ends_with("embeddings.weight") {
        return (0..numel).map(|_| (rng.normal() * 0.02) as f32).collect();
    }
    // Linear and conv weights: U(+-1/sqrt(fan_in)); out_proj then / sqrt(n_layer).
    let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
    let bound = 1.0 / (fan_in as f64).sqrt();
    let scale = match name.ends_with("out_proj.weight") {
        true => 1.0 / (c.n_layer as f64).sqrt(),
        false => 1.0,
    };
    let v = uniform(&mut rng, -bound, bound);
    match last == "bias" {
        // The conv bias: fan_in is the window.
        true => uniform(
            &mut rng,
            -1.0 / (c.d_conv as f64).sqrt(),
            1.0 / (c.d_conv as f64).sqrt(),
        ),
        false => v.into_iter().map(|x| x * scale as f32).collect(),
    }
}

impl Mixer2 {
    /// h: (b, l, d_model) normalised input -> (b, l, d_model).
    fn forward(&self, h: &Tensor, c: &Mamba2Config, resets: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.run(h, c, resets, false)?.0)
    }

    /// The forward, and with `state` the recurrent state after the last position: the conv
    /// window's last d_conv - 1 inputs (b, conv_dim, d_conv - 1) and the SSD state
    /// (b, H, P, N).
    fn run(
        &self,
        h: &Tensor,
        c: &Mamba2Config,
        resets: Option<&Tensor>,
        state: bool,
    ) -> Result<(Tensor, Option<(Tensor, Tensor)>)> {
        let (b, l, _) = h.dims3()?;
        let (di, hn, p, g, n) = (c.d_inner(), c.n_heads(), c.head_dim, c.n_groups, c.d_state);
        let zxbcdt = linear(h, &self.in_proj)?;
        let z = zxbcdt.narrow(2, 0, di)?;
        let xbc = zxbcdt.narrow(2, di, c.conv_dim())?.contiguous()?;
        let dt = zxbcdt.narrow(2, di + c.conv_dim(), hn)?;
        let conv = match state {
            true => Some(conv_tail(&xbc, c.d_conv)?),
            false => None,
        };
        let xbc = causal_conv1d(&xbc, &self.conv_w, &self.conv_b, resets)?.silu()?;
        let x = xbc.narrow(2, 0, di)?.reshape((b, l, hn, p))?;
        let bm = xbc.narrow(2, di, g * n)?.reshape((b, l, g, n))?;
        let cm = xbc.narrow(2, di + g * n, g * n)?.reshape((b, l, g, n))?;
        let dt = self.dt(&dt, c)?;
        let a = self.a_log.exp()?.neg()?;
        let (y, last) = ssd_chunked(&x, &dt, &a, &bm, &cm, &self.d, resets, CHUNK)?;
        let y = gated_rms_norm(&y.reshape((b, l, di))?, &z, &self.norm, di / g, c.norm_eps)?;
        Ok((linear(&y, &self.out_proj)?, conv.map(|cv| (cv, last))))
    }

    /// dt = clamp(softplus(dt + dt_bias), dt_limit).
    fn dt(&self, dt: &Tensor, c: &Mamba2Config) -> Result<Tensor> {
        softplus(&dt.broadcast_add(&self.dt_bias)?)?.clamp(c.dt_limit.0, c.dt_limit.1.min(f64::MAX))
    }
}

/// rms_norm over groups of `group` channels of y * silu(z), times `weight` (transformers'
/// `MambaRMSNormGated` with the gate applied before the norm).
fn gated_rms_norm(
    y: &Tensor,
    z: &Tensor,
    weight: &Tensor,
    group: usize,
    eps: f64,
) -> Result<Tensor> {
    let dims = y.dims().to_vec();
    let last = dims[dims.len() - 1];
    let gated = (y * z.silu()?)?;
    let mut grouped = dims[..dims.len() - 1].to_vec();
    grouped.extend([last / group, group]);
    let x = gated.reshape(grouped)?;
    let var = x.sqr()?.mean_keepdim(D::Minus1)?;
    let x = x.broadcast_div(&(var + eps)?.sqrt()?)?.reshape(dims)?;
    x.broadcast_mul(weight)
}
