//! The Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs"), as transformers' `Mamba2Mixer`
//! and mamba_ssm's `Mamba2` compute it; its state-space layer is the SSD of [`ssd`], document
//! resets included: on the CPU as its own fused op ([`ssd_cpu`]; a prefill, which also wants
//! the final state, through Mamba-1's fused scan, [`ssd_scan`]), on a GPU in the paper's
//! chunked form ([`ssd_chunked`]). A Mamba-2 language model is [`MambaLM`](crate::model::MambaLM) with
//! Mamba-2 layers: the blocks, norms, head, loss and training are the same as Mamba-1's.
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

use std::sync::Arc;

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde_json::{json, Value};

use super::state::MixerState;
use crate::config::Config;
use crate::error::Error;
use crate::layers::conv::{causal_conv1d_silu, conv_step, conv_tail};
use crate::layers::norm::rms_norm;
use crate::layers::ops::{linear, softplus};
use crate::layers::params::{param_table, Init};
use crate::layers::recompute::{recompute, rows_of, rows_per_part, Part};
use crate::lora::Lora;

pub mod passing;
pub mod ssd;
pub mod ssd_cpu;
pub(crate) mod step;
pub use passing::pass_states;
pub use ssd::{ssd_chunked, ssd_reference, ssd_scan};
pub use ssd_cpu::ssd_cpu;

/// Positions per chunk of the chunked SSD (its products within a chunk are CHUNK x CHUNK).
pub const CHUNK: usize = 64;

/// The sizes a mixer computes with (from its [`Config`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    d_inner: usize,
    heads: usize,
    head_dim: usize,
    groups: usize,
    d_state: usize,
    norm_eps: f64,
    dt_limit: (f64, f64),
}

impl Dims {
    pub(crate) fn of(c: &Config) -> Dims {
        Dims {
            d_inner: c.d_inner(),
            heads: c.n_heads(),
            head_dim: c.head_dim,
            groups: c.n_groups,
            d_state: c.d_state,
            norm_eps: c.norm_eps,
            dt_limit: c.dt_limit,
        }
    }

    /// (d_inner, heads, head_dim, groups, d_state).
    fn sizes(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.d_inner,
            self.heads,
            self.head_dim,
            self.groups,
            self.d_state,
        )
    }

    /// Channels of the conv: x, B and C.
    pub(crate) fn conv_dim(&self) -> usize {
        self.d_inner + 2 * self.groups * self.d_state
    }
}

/// Channels of the conv of a mixer of `c`: x, B and C.
pub fn conv_dim(c: &Config) -> usize {
    Dims::of(c).conv_dim()
}

param_table! {
    /// Parameters of one Mamba-2 mixer, named as in transformers (`...mixer.in_proj.weight`).
    pub struct Params for c {
        in_proj: "in_proj.weight", [c.d_inner() + conv_dim(c) + c.n_heads(), c.d_model], Linear;
        conv_w: "conv1d.weight", [conv_dim(c), 1, c.d_conv], Conv;
        conv_b: "conv1d.bias", [conv_dim(c)], Conv;
        dt_bias: "dt_bias", [c.n_heads()], DtBias;
        a_log: "A_log", [c.n_heads()], ALogUniform;
        d: "D", [c.n_heads()], Ones;
        norm: "norm.weight", [c.d_inner()], Ones;
        out_proj: "out_proj.weight", [c.d_model, c.d_inner()], OutProj;
    }
}

/// The parameters of the part between in_proj and out_proj (recomputed in backward off the
/// CPU's fused ops).
const INNER: &[&str] = &[
    "conv1d.weight",
    "conv1d.bias",
    "dt_bias",
    "A_log",
    "D",
    "norm.weight",
];

/// One Mamba-2 mixer: its parameters and the sizes it computes with.
#[derive(Clone, Debug)]
pub struct Mamba2 {
    pub(crate) p: Params,
    /// Adapters on its projections (none unless training with LoRA).
    pub(crate) lora: Lora,
    pub(crate) dims: Dims,
}

/// The projections LoRA adapts by default (see [`super::LayerKind::lora_targets`]).
pub const LORA_TARGETS: &[&str] = &["in_proj"];

/// transformers' `model_type` and class of a model of Mamba-2 layers.
pub const TRANSFORMERS: (&str, &str) = ("mamba2", "Mamba2ForCausalLM");

/// transformers' `Mamba2Config` when a field is absent: (tie_word_embeddings, n_groups). It
/// defaults to 8 groups, where mamba_ssm's models have 1.
pub const HF_DEFAULTS: (bool, usize) = (false, 8);

/// The heads of transformers' `num_heads`, where given, fill d_inner with head_dim channels.
pub fn check_hf(v: &Value, c: &Config) -> std::result::Result<(), String> {
    let heads = match v.get("num_heads") {
        None | Some(Value::Null) => c.n_heads(),
        Some(x) => x.as_u64().ok_or(format!(
            "`num_heads` must be a non-negative integer, got {x}"
        ))? as usize,
    };
    if c.head_dim == 0 || heads * c.head_dim != c.d_inner() {
        return Err(format!(
            "num_heads {heads} x head_dim {} must be expand x hidden_size = {}",
            c.head_dim,
            c.d_inner()
        ));
    }
    Ok(())
}

/// One sequence's recurrent state: the conv window (conv_dim, k - 1) and the SSD state
/// (heads, head_dim, n).
pub fn state_shapes(c: &Config) -> (Vec<usize>, Vec<usize>) {
    (
        vec![conv_dim(c), c.d_conv - 1],
        vec![c.n_heads(), c.head_dim, c.d_state],
    )
}

/// Bytes per token a layer keeps on the path a GPU computes: in_proj's output (z, x, B, C,
/// dt) and the recomputed part's output, in the compute dtype (`e` bytes).
pub fn gpu_kept_per_token(c: &Config, e: u64) -> u64 {
    let (di, gn) = (c.d_inner() as u64, (c.n_groups * c.d_state) as u64);
    e * (2 * di + 2 * gn + c.n_heads() as u64) + e * di
}

/// Bytes per token the recomputed part (conv, chunked SSD, gated norm) holds while its
/// backward runs: ~79 f32 values per inner channel (its chunk products among them) and ~9
/// per channel of B and C (measured).
pub fn gpu_part_per_token(c: &Config) -> u64 {
    let (di, gn) = (c.d_inner() as u64, (c.n_groups * c.d_state) as u64);
    315 * di + 34 * 2 * gn
}

/// Values backward keeps per token: the residual, the norm output, in_proj's z, xBC and dt,
/// the conv and SiLU outputs, dt per head and per channel, the scan's packed inputs and output,
/// the gate and the norm; with `chunked` (the GPU's SSD) also its (chunk x chunk) products per
/// head and its chunk states.
pub fn activations_per_token(c: &Config, chunked: bool) -> u64 {
    let (d, di, n) = (c.d_model as u64, c.d_inner() as u64, c.d_state as u64);
    let (h, gn) = (c.n_heads() as u64, c.n_groups as u64 * n);
    let scan = 3 * d + 9 * di + 6 * gn + 4 * h;
    match chunked {
        false => scan,
        true => scan + 4 * h * CHUNK as u64 + 6 * di,
    }
}

/// mamba_ssm's `ssm_cfg` of a Mamba-2 layer.
pub fn ssm_cfg(c: &Config) -> Value {
    let mut v = json!({
        "layer": "Mamba2", "d_state": c.d_state, "d_conv": c.d_conv, "expand": c.expand,
        "headdim": c.head_dim, "ngroups": c.n_groups,
    });
    if let (Some(o), true) = (v.as_object_mut(), c.dt_limit != (0.0, f64::INFINITY)) {
        o.insert(
            "dt_limit".into(),
            json!([c.dt_limit.0, c.dt_limit.1.min(f64::MAX)]),
        );
    }
    v
}

/// The fields of transformers' `Mamba2Config` that only Mamba-2 has.
pub fn hf_fields(c: &Config) -> Value {
    let limit = |x: f64| match x.is_finite() {
        true => json!(x),
        false => json!({"__float__": "Infinity"}),
    };
    let mut v = json!({
        "head_dim": c.head_dim,
        "num_heads": c.n_heads(),
        "n_groups": c.n_groups,
        "time_step_min": c.dt_min,
        "time_step_max": c.dt_max,
        "time_step_floor": c.dt_init_floor,
        "initializer_range": c.initializer_range,
        "chunk_size": 256,
    });
    // (0, inf) is every version's default: left out, since transformers 4.x reads back
    // neither infinity's JSON spelling of version 5 nor plain JSON's lack of one.
    if let (Some(o), true) = (v.as_object_mut(), c.dt_limit != (0.0, f64::INFINITY)) {
        let (lo, hi) = c.dt_limit;
        o.insert("time_step_limit".into(), json!([limit(lo), limit(hi)]));
    }
    v
}

/// llama.cpp's architecture of a model of Mamba-2 layers.
pub const GGUF_ARCH: &str = "mamba2";

/// llama.cpp does not clamp dt to a time-step limit: only the default (0, inf) decodes alike.
pub fn gguf_limits(c: &Config) -> std::result::Result<(), String> {
    match c.dt_limit == (0.0, f64::INFINITY) {
        true => Ok(()),
        false => Err(format!(
            "llama.cpp does not clamp dt to time_step_limit {:?}: this model would decode differently there",
            c.dt_limit
        )),
    }
}

/// The `mamba2.ssm.*` sizes of llama.cpp (its `time_step_rank` is the number of heads).
pub fn gguf_sizes(c: &Config) -> Vec<(&'static str, usize)> {
    vec![
        ("ssm.conv_kernel", c.d_conv),
        ("ssm.inner_size", c.d_inner()),
        ("ssm.state_size", c.d_state),
        ("ssm.time_step_rank", c.n_heads()),
        ("ssm.group_count", c.n_groups),
    ]
}

/// Its own sizes, for `model-info`.
pub fn describe(c: &Config) -> String {
    format!(
        "heads {} x head_dim {}  n_groups {}",
        c.n_heads(),
        c.head_dim,
        c.n_groups
    )
}

/// Checks the sizes only Mamba-2 has: heads of head_dim channels fill d_inner, groups divide
/// the heads.
pub fn check(c: &Config) -> crate::error::Result<()> {
    let (p, g) = (c.head_dim, c.n_groups);
    if p == 0 || !c.d_inner().is_multiple_of(p) {
        return Err(Error::Config(format!(
            "head_dim {p} must divide d_inner {}",
            c.d_inner()
        )));
    }
    if g == 0 || !c.n_heads().is_multiple_of(g) {
        return Err(Error::Config(format!(
            "n_groups {g} must divide the {} heads",
            c.n_heads()
        )));
    }
    Ok(())
}

impl Mamba2 {
    /// Reads the parameters of [`Params::table`] from `vb` (below `...mixer.`).
    pub fn new(cfg: &Config, vb: &VarBuilder) -> Result<Self> {
        Ok(Mamba2 {
            p: Params::read(cfg, vb)?,
            lora: Lora::default(),
            dims: Dims::of(cfg),
        })
    }

    /// The same mixer with every parameter through `f` (see [`Params::map`]).
    pub fn map(&self, f: impl FnMut(&Tensor, Init) -> Result<Tensor>) -> Result<Mamba2> {
        Ok(Mamba2 {
            p: self.p.map(f)?,
            lora: self.lora.clone(),
            dims: self.dims,
        })
    }

    /// The parameters under llama.cpp's names (below `blk.N.`), in its shapes: the conv
    /// weight (conv_dim, k), A = -exp(A_log) and D as (H, 1), the gated norm as (G, di / G).
    pub(crate) fn gguf_tensors(&self) -> Result<Vec<(&'static str, Tensor)>> {
        let (p, (di, h, _, g, _)) = (&self.p, self.dims.sizes());
        Ok(vec![
            ("ssm_in.weight", p.in_proj.clone()),
            ("ssm_conv1d.weight", p.conv_w.squeeze(1)?),
            ("ssm_conv1d.bias", p.conv_b.clone()),
            ("ssm_dt.bias", p.dt_bias.clone()),
            ("ssm_a", p.a_log.exp()?.neg()?.reshape((h, 1))?),
            ("ssm_d", p.d.reshape((h, 1))?),
            ("ssm_norm.weight", p.norm.reshape((g, di / g))?),
            ("ssm_out.weight", p.out_proj.clone()),
        ])
    }

    /// h: (b, l, d_model) normalised input -> (b, l, d_model). `resets`: (b, l) u8, nonzero at
    /// document starts (conv window and SSD state never reach back past them). The two
    /// projections run in `dt`; conv, SSD and norm in f32.
    pub fn forward(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        Ok(self.run(h, resets, dt, false)?.0)
    }

    /// The f32 forward of a prompt without resets, and the state after its last position:
    /// the conv window's last d_conv - 1 inputs (b, conv_dim, d_conv - 1) and the SSD state
    /// (b, H, P, N), from which [`Mamba2::step`] continues.
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        MixerState::prefilled(self.run(h, None, DType::F32, true)?)
    }

    fn run(
        &self,
        h: &Tensor,
        resets: Option<&Tensor>,
        compute: DType,
        keep_state: bool,
    ) -> Result<(Tensor, Option<MixerState>)> {
        if !keep_state && !crate::kernels::cpu_fused(h.device()) {
            return Ok((self.forward_recomputed(h, resets, compute)?, None));
        }
        let zxbcdt = self.lora.linear("in_proj", h, &self.p.in_proj, compute)?;
        let (y, state) = self.inner(&zxbcdt, resets, keep_state)?;
        let out = self
            .lora
            .linear("out_proj", &y, &self.p.out_proj, compute)?;
        Ok((out, state))
    }

    /// The forward off the CPU's fused ops: in_proj, then conv, SSD and gated norm as one
    /// part recomputed in backward, a few sequences at a time, then out_proj. A layer keeps
    /// in_proj's output and the part's, both in the compute dtype.
    fn forward_recomputed(
        &self,
        h: &Tensor,
        resets: Option<&Tensor>,
        compute: DType,
    ) -> Result<Tensor> {
        let zxbcdt = self
            .lora
            .linear_kept("in_proj", h, &self.p.in_proj, compute)?;
        let (me, resets) = (self.clone(), resets.cloned());
        let part: Part = Arc::new(move |zxbcdt, start, p| {
            let m = Mamba2 {
                p: me.p.replaced(INNER, p)?,
                ..me.clone()
            };
            let resets = rows_of(resets.as_ref(), start, zxbcdt.dim(0)?)?;
            let (y, _) = m.inner(&zxbcdt.to_dtype(DType::F32)?, resets.as_ref(), false)?;
            y.to_dtype(compute)
        });
        let rows = rows_per_part(h.dim(1)?);
        let y = recompute(&zxbcdt, &self.p.select(INNER), Some(rows), part)?;
        self.lora
            .linear_kept("out_proj", &y, &self.p.out_proj, compute)
    }

    /// From in_proj's output (b, l, di + conv_dim + H) in f32 to the gated norm's (b, l, di),
    /// and with `keep_state` the state after the last position.
    fn inner(
        &self,
        zxbcdt: &Tensor,
        resets: Option<&Tensor>,
        keep_state: bool,
    ) -> Result<(Tensor, Option<MixerState>)> {
        let (b, l, _) = zxbcdt.dims3()?;
        let (di, hn, p, g, n) = self.dims.sizes();
        let z = zxbcdt.narrow(2, 0, di)?;
        let xbc = zxbcdt.narrow(2, di, self.dims.conv_dim())?.contiguous()?;
        let dt = zxbcdt.narrow(2, di + self.dims.conv_dim(), hn)?;
        let conv = match keep_state {
            true => Some(conv_tail(&xbc, self.p.conv_w.dim(2)?)?),
            false => None,
        };
        let xbc = causal_conv1d_silu(&xbc, &self.p.conv_w, &self.p.conv_b, resets)?;
        let x = xbc.narrow(2, 0, di)?.reshape((b, l, hn, p))?;
        let bm = xbc.narrow(2, di, g * n)?.reshape((b, l, g, n))?;
        let cm = xbc.narrow(2, di + g * n, g * n)?.reshape((b, l, g, n))?;
        let dt = self.dt(&dt)?;
        let a = self.p.a_log.exp()?.neg()?;
        // The recurrence on the CPU (the SSD's own op; the scan where the final state is
        // wanted), the chunked form on a GPU (3.4x the scan's speed there on an H200, for 1.6x
        // its memory; BENCHMARKS.md).
        let (y, ssm) = match (crate::kernels::cpu_fused(x.device()), keep_state) {
            (true, false) if x.dtype() == DType::F32 => {
                (ssd_cpu(&x, &dt, &a, &bm, &cm, &self.p.d, resets)?, None)
            }
            (true, _) => ssd_scan(&x, &dt, &a, &bm, &cm, &self.p.d, resets, keep_state)?,
            (false, _) => {
                let (y, s) = ssd_chunked(&x, &dt, &a, &bm, &cm, &self.p.d, resets, CHUNK)?;
                (y, Some(s))
            }
        };
        let y = self.gated_norm(&y.reshape((b, l, di))?, &z)?;
        let state = match (conv, ssm) {
            (Some(conv), Some(ssm)) => Some(MixerState { conv, ssm }),
            _ => None,
        };
        Ok((y, state))
    }

    /// One position of each sequence in recurrent form: h (b, d_model) normalised input ->
    /// (b, d_model); `st` advances by one position. Plain candle ops, on any device.
    pub fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        let b = h.dim(0)?;
        let (di, hn, p, g, n) = self.dims.sizes();
        let zxbcdt = linear(h, &self.p.in_proj)?;
        let z = zxbcdt.narrow(1, 0, di)?;
        let xbc = zxbcdt.narrow(1, di, self.dims.conv_dim())?;
        let dt = self.dt(&zxbcdt.narrow(1, di + self.dims.conv_dim(), hn)?)?; // (b, H)
        let xbc = conv_step(&mut st.conv, &xbc, &self.p.conv_w, &self.p.conv_b)?.silu()?;
        let x = xbc.narrow(1, 0, di)?.reshape((b, hn, p))?;
        // One position's B or C (b, G N) -> (b, H, 1, N), each head its group's.
        let heads = |t: Tensor| -> Result<Tensor> {
            ssd::per_head(&t.reshape((b, 1, g, n))?, hn)?.reshape((b, hn, 1, n))
        };
        let bm = heads(xbc.narrow(1, di, g * n)?)?;
        let cm = heads(xbc.narrow(1, di + g * n, g * n)?)?;
        // h = exp(dt A) h + dt x B^T;  y = h C + D x
        let a = self.p.a_log.exp()?.neg()?;
        let decay = dt.broadcast_mul(&a)?.exp()?.reshape((b, hn, 1, 1))?;
        let dx = x.broadcast_mul(&dt.unsqueeze(2)?)?.unsqueeze(3)?; // (b, H, P, 1)
        st.ssm = (st.ssm.broadcast_mul(&decay)? + dx.broadcast_mul(&bm)?)?;
        let y = st.ssm.broadcast_mul(&cm)?.sum(D::Minus1)?; // (b, H, P)
        let y = (y + x.broadcast_mul(&self.p.d.reshape((1, hn, 1))?)?)?.reshape((b, di))?;
        linear(&self.gated_norm(&y, &z)?, &self.p.out_proj)
    }

    /// dt = clamp(softplus(dt + dt_bias), dt_limit).
    fn dt(&self, dt: &Tensor) -> Result<Tensor> {
        let (lo, hi) = self.dims.dt_limit;
        softplus(&dt.broadcast_add(&self.p.dt_bias)?)?.clamp(lo, hi.min(f64::MAX))
    }

    /// rms_norm over groups of d_inner / G channels of y * silu(z), times the norm's weight
    /// (transformers' `MambaRMSNormGated`, the gate applied before the norm).
    fn gated_norm(&self, y: &Tensor, z: &Tensor) -> Result<Tensor> {
        let dims = y.dims().to_vec();
        let last = dims[dims.len() - 1];
        let gated = (y * z.silu()?)?;
        if self.dims.groups == 1 {
            // One group (the released models): the fused norm of the Mamba-1 blocks.
            return rms_norm(&gated, &self.p.norm, self.dims.norm_eps);
        }
        let mut grouped = dims[..dims.len() - 1].to_vec();
        grouped.extend([self.dims.groups, last / self.dims.groups]);
        let x = gated.reshape(grouped)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x
            .broadcast_div(&(var + self.dims.norm_eps)?.sqrt()?)?
            .reshape(dims)?;
        x.broadcast_mul(&self.p.norm)
    }
}
