//! Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"), as transformers' `Mamba2ForCausalLM`
//! computes it, in the plain recurrent form of its state-space layer: the reference that a
//! chunked SSD implementation (the paper's section 6) must equal. Loads transformers'
//! checkpoints; training, generation and the command line do not use it yet.
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

use std::path::Path;

use candle_core::{Device, Result, Tensor, D};
use serde_json::Value;

use crate::error::Error;
use crate::io::config::CONFIG_FILE;
use crate::layers::conv::causal_conv1d;
use crate::layers::norm::rms_norm;
use crate::layers::ops::{linear, softplus};

mod ssd;
pub use ssd::{ssd_chunked, ssd_reference};

/// Positions per chunk of the SSD (the matrix products within a chunk are CHUNK x CHUNK).
const CHUNK: usize = 64;

/// The shape of a Mamba-2 language model (transformers' `Mamba2Config`).
#[derive(Clone, Debug, PartialEq)]
pub struct Mamba2Config {
    pub d_model: usize,
    pub n_layer: usize,
    /// Rows of the embedding.
    pub vocab_size: usize,
    /// N, the state size per head channel.
    pub d_state: usize,
    pub d_conv: usize,
    pub expand: usize,
    /// P, channels per head; H = expand * d_model / P heads.
    pub head_dim: usize,
    /// G, groups sharing B and C.
    pub n_groups: usize,
    pub norm_eps: f64,
    /// dt is clamped to this range after the softplus.
    pub dt_limit: (f64, f64),
    pub tie_embeddings: bool,
}

impl Mamba2Config {
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    pub fn n_heads(&self) -> usize {
        self.d_inner() / self.head_dim
    }

    /// Channels of the causal conv: x, B and C.
    pub fn conv_dim(&self) -> usize {
        self.d_inner() + 2 * self.n_groups * self.d_state
    }

    /// Parses transformers' `Mamba2Config` JSON; errors name the file and the key.
    pub fn from_hf(v: &Value, path: &Path) -> crate::Result<Self> {
        let bad = |m: String| Error::file(path, m);
        let uint = |k: &str, d: Option<u64>| -> crate::Result<usize> {
            match v.get(k).map(|x| x.as_u64()).unwrap_or(d) {
                Some(x) => Ok(x as usize),
                None => Err(bad(format!("missing or bad `{k}`"))),
            }
        };
        let flag = |k: &str, d: bool| v.get(k).and_then(|x| x.as_bool()).unwrap_or(d);
        if v.get("model_type").and_then(|x| x.as_str()) != Some("mamba2") {
            return Err(bad("model_type is not `mamba2`".into()));
        }
        if flag("use_bias", false) || !flag("use_conv_bias", true) {
            return Err(bad(
                "use_bias = true or use_conv_bias = false is not supported".into(),
            ));
        }
        let limit = |x: &Value| -> Option<f64> {
            x.as_f64()
                .or_else(|| match x.get("__float__").and_then(|f| f.as_str()) {
                    Some("Infinity") => Some(f64::INFINITY),
                    _ => None,
                })
        };
        let dt_limit = match v.get("time_step_limit").and_then(|x| x.as_array()) {
            Some(a) if a.len() == 2 => match (limit(&a[0]), limit(&a[1])) {
                (Some(lo), Some(hi)) => (lo, hi),
                _ => return Err(bad("bad `time_step_limit`".into())),
            },
            _ => (0.0, f64::INFINITY),
        };
        let cfg = Mamba2Config {
            d_model: uint("hidden_size", None)?,
            n_layer: uint("num_hidden_layers", None)?,
            vocab_size: uint("vocab_size", None)?,
            d_state: uint("state_size", Some(128))?,
            d_conv: uint("conv_kernel", Some(4))?,
            expand: uint("expand", Some(2))?,
            head_dim: uint("head_dim", Some(64))?,
            n_groups: uint("n_groups", Some(1))?,
            norm_eps: v
                .get("layer_norm_epsilon")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-5),
            dt_limit,
            tie_embeddings: flag("tie_word_embeddings", false),
        };
        let heads = uint("num_heads", Some(cfg.n_heads() as u64))?;
        if cfg.head_dim == 0
            || !cfg.d_inner().is_multiple_of(cfg.head_dim)
            || heads != cfg.n_heads()
        {
            return Err(bad(format!(
                "num_heads {heads} x head_dim {} must be expand x hidden_size = {}",
                cfg.head_dim,
                cfg.d_inner()
            )));
        }
        if cfg.n_groups == 0 || !heads.is_multiple_of(cfg.n_groups) {
            return Err(bad(format!(
                "n_groups {} must divide num_heads {heads}",
                cfg.n_groups
            )));
        }
        Ok(cfg)
    }
}

/// One Mamba-2 mixer's parameters, named as in transformers (`...mixer.in_proj.weight` etc.).
pub struct Mixer2 {
    in_proj: Tensor,  // (d_inner + conv_dim + H, d)
    conv_w: Tensor,   // (conv_dim, 1, k)
    conv_b: Tensor,   // (conv_dim)
    dt_bias: Tensor,  // (H)
    a_log: Tensor,    // (H)
    d: Tensor,        // (H)
    norm: Tensor,     // (d_inner)
    out_proj: Tensor, // (d, d_inner)
}

/// A Mamba-2 language model (embedding, blocks, final norm, head).
pub struct Mamba2LM {
    cfg: Mamba2Config,
    embedding: Tensor,
    head: Tensor,
    layers: Vec<(Tensor, Mixer2)>,
    norm_f: Tensor,
}

impl Mamba2LM {
    /// Loads a transformers `Mamba2ForCausalLM` directory (any weights layout
    /// [`MambaLM::load`](crate::MambaLM::load) reads), as f32 tensors on `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> crate::Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
        let cfg = Mamba2Config::from_hf(&v, &path)?;
        let (mut tensors, wpath) = crate::io::weights::read_weights(dir)?;
        let (d, di, h) = (cfg.d_model, cfg.d_inner(), cfg.n_heads());
        let mut take = |name: &str, shape: Vec<usize>| -> crate::Result<Tensor> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| Error::tensor(&wpath, name, "missing"))?;
            if t.shape != shape {
                let msg = format!("shape {:?}, expected {shape:?} from config.json", t.shape);
                return Err(Error::tensor(&wpath, name, msg));
            }
            Tensor::from_vec(t.data, shape, device).map_err(|e| Error::tensor(&wpath, name, e))
        };
        let embedding = take("backbone.embeddings.weight", vec![cfg.vocab_size, d])?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("backbone.layers.{i}");
            let m = |n: &str| format!("{p}.mixer.{n}");
            let norm = take(&format!("{p}.norm.weight"), vec![d])?;
            let mixer = Mixer2 {
                in_proj: take(&m("in_proj.weight"), vec![di + cfg.conv_dim() + h, d])?,
                conv_w: take(&m("conv1d.weight"), vec![cfg.conv_dim(), 1, cfg.d_conv])?,
                conv_b: take(&m("conv1d.bias"), vec![cfg.conv_dim()])?,
                dt_bias: take(&m("dt_bias"), vec![h])?,
                a_log: take(&m("A_log"), vec![h])?,
                d: take(&m("D"), vec![h])?,
                norm: take(&m("norm.weight"), vec![di])?,
                out_proj: take(&m("out_proj.weight"), vec![d, di])?,
            };
            layers.push((norm, mixer));
        }
        let norm_f = take("backbone.norm_f.weight", vec![d])?;
        let head = match cfg.tie_embeddings {
            true => embedding.clone(),
            false => take("lm_head.weight", vec![cfg.vocab_size, d])?,
        };
        if let Some(name) = tensors.keys().min() {
            return Err(Error::tensor(
                &wpath,
                name,
                "unexpected tensor for this config",
            ));
        }
        Ok(Mamba2LM {
            cfg,
            embedding,
            head,
            layers,
            norm_f,
        })
    }

    pub fn config(&self) -> &Mamba2Config {
        &self.cfg
    }

    /// Logits (b, l, vocab) of `ids` (b, l) u32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let mut h = self
            .embedding
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, self.cfg.d_model))?;
        for (norm, mixer) in &self.layers {
            let x = rms_norm(&h, norm, self.cfg.norm_eps)?;
            h = (&h + mixer.forward(&x, &self.cfg)?)?;
        }
        let h = rms_norm(&h, &self.norm_f, self.cfg.norm_eps)?;
        linear(&h, &self.head)
    }
}

impl Mixer2 {
    /// h: (b, l, d_model) normalised input -> (b, l, d_model).
    fn forward(&self, h: &Tensor, c: &Mamba2Config) -> Result<Tensor> {
        let (b, l, _) = h.dims3()?;
        let (di, hn, p, g, n) = (c.d_inner(), c.n_heads(), c.head_dim, c.n_groups, c.d_state);
        let zxbcdt = linear(h, &self.in_proj)?;
        let z = zxbcdt.narrow(2, 0, di)?;
        let xbc = zxbcdt.narrow(2, di, c.conv_dim())?;
        let dt = zxbcdt.narrow(2, di + c.conv_dim(), hn)?;
        let xbc = causal_conv1d(&xbc, &self.conv_w, &self.conv_b, None)?.silu()?;
        let x = xbc.narrow(2, 0, di)?.reshape((b, l, hn, p))?;
        let bm = xbc.narrow(2, di, g * n)?.reshape((b, l, g, n))?;
        let cm = xbc.narrow(2, di + g * n, g * n)?.reshape((b, l, g, n))?;
        let dt = softplus(&dt.broadcast_add(&self.dt_bias)?)?
            .clamp(c.dt_limit.0, c.dt_limit.1.min(f64::MAX))?;
        let a = self.a_log.exp()?.neg()?;
        let y = ssd_chunked(&x, &dt, &a, &bm, &cm, &self.d, None, CHUNK)?.reshape((b, l, di))?;
        let y = gated_rms_norm(&y, &z, &self.norm, di / g, c.norm_eps)?;
        linear(&y, &self.out_proj)
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
