//! The Mamba mixer (Gu & Dao 2023, Fig. 3; mamba_ssm `Mamba`, transformers `MambaMixer`):
//!
//! ```text
//! x, z  = in_proj(h)                          (b, l, d_inner) each
//! u     = silu(causal_conv1d(x))               depthwise, window d_conv, reset at documents
//! dt, B, C = x_proj(u)                         (dt_rank, d_state, d_state)
//! delta = dt_proj(dt)                          softplus(delta + bias) inside the scan
//! y     = selective_scan(u, delta, A, B, C, D) * silu(z)
//! out   = out_proj(y)
//! ```

pub(crate) mod fused;
pub(crate) mod step;

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use serde_json::{json, Value};

use super::state::MixerState;
use crate::config::Config;
use crate::kernels::scan::{selective_scan, selective_scan_with_state, ScanOptions};
use crate::layers::conv::{causal_conv1d_silu, conv_step, conv_tail};
use crate::layers::ops::linear;
use crate::layers::params::param_table;
use crate::layers::recompute::{recompute, rows_of, rows_per_part, Part};
use crate::lora::Lora;
use fused::{fused_ssm, SelectiveSsm};

param_table! {
    /// Parameters of one Mamba-1 mixer, named as in transformers (`...mixer.in_proj.weight`).
    pub struct Params for c {
        in_proj: "in_proj.weight", [2 * c.d_inner(), c.d_model], Linear;
        conv_w: "conv1d.weight", [c.d_inner(), 1, c.d_conv], Conv;
        conv_b: "conv1d.bias", [c.d_inner()], Conv;
        x_proj: "x_proj.weight", [c.dt_rank() + 2 * c.d_state, c.d_inner()], Linear;
        dt_proj_w: "dt_proj.weight", [c.d_inner(), c.dt_rank()], DtProj;
        dt_proj_b: "dt_proj.bias", [c.d_inner()], DtBias;
        a_log: "A_log", [c.d_inner(), c.d_state], ALogRange;
        d: "D", [c.d_inner()], Ones;
        out_proj: "out_proj.weight", [c.d_model, c.d_inner()], OutProj;
    }
}

/// The parameters of the part between in_proj and out_proj (recomputed in backward off the
/// CPU's fused ops).
const INNER: &[&str] = &[
    "conv1d.weight",
    "conv1d.bias",
    "x_proj.weight",
    "dt_proj.weight",
    "dt_proj.bias",
    "A_log",
    "D",
];

/// The projections of that part that adapters may adapt.
const INNER_ADAPTED: &[&str] = &["x_proj", "dt_proj"];

/// One Mamba-1 mixer: its parameters and the sizes it computes with.
#[derive(Clone, Debug)]
pub struct Mamba1 {
    pub(crate) p: Params,
    /// Adapters on its projections (none unless training with LoRA).
    pub(crate) lora: Lora,
    pub(crate) d_inner: usize,
    pub(crate) d_state: usize,
    pub(crate) dt_rank: usize,
}

/// The projections LoRA adapts by default (see [`super::LayerKind::lora_targets`]).
pub const LORA_TARGETS: &[&str] = &["in_proj", "x_proj"];

/// transformers' `model_type` and class of a model of Mamba-1 layers.
pub const TRANSFORMERS: (&str, &str) = ("mamba", "MambaForCausalLM");

/// transformers' `MambaConfig` when a field is absent: (tie_word_embeddings, n_groups).
pub const HF_DEFAULTS: (bool, usize) = (true, 1);

/// One sequence's recurrent state: the conv window (di, k - 1) and the SSM state (di, n).
pub fn state_shapes(c: &Config) -> (Vec<usize>, Vec<usize>) {
    (
        vec![c.d_inner(), c.d_conv - 1],
        vec![c.d_inner(), c.d_state],
    )
}

/// Values backward keeps per token: the residual, the norm output, in_proj's 2 d_inner, the
/// conv and SiLU outputs, x_proj's dt_rank + 2N, dt before and after softplus, the scan output
/// and the gate.
pub fn activations_per_token(c: &Config) -> u64 {
    let (d, di, n) = (c.d_model as u64, c.d_inner() as u64, c.d_state as u64);
    3 * d + 8 * di + c.dt_rank() as u64 + 2 * n
}

/// Bytes per token a layer keeps on the path a GPU computes: in_proj's output x, z and the
/// recomputed part's output y, in the compute dtype (`e` bytes).
pub fn gpu_kept_per_token(c: &Config, e: u64) -> u64 {
    3 * e * c.d_inner() as u64
}

/// Bytes per token the recomputed part (conv, selection, gated scan) holds while its
/// backward runs: ~24 f32 values per inner channel (measured; B, C and dt's rank are small
/// beside them).
pub fn gpu_part_per_token(c: &Config) -> u64 {
    96 * c.d_inner() as u64
}

/// The fields of transformers' `MambaConfig` that only Mamba-1 has.
/// mamba_ssm's `ssm_cfg` of a Mamba-1 layer.
pub fn ssm_cfg(c: &Config) -> Value {
    let mut v =
        json!({"layer": "Mamba1", "d_state": c.d_state, "d_conv": c.d_conv, "expand": c.expand});
    if let (Some(o), Some(r)) = (v.as_object_mut(), c.dt_rank) {
        o.insert("dt_rank".into(), json!(r));
    }
    v
}

pub fn hf_fields(c: &Config) -> Value {
    json!({
        "intermediate_size": c.d_inner(),
        "time_step_rank": c.dt_rank(),
        "initializer_range": c.initializer_range,
        "time_step_scale": c.dt_scale,
        "time_step_min": c.dt_min,
        "time_step_max": c.dt_max,
        "time_step_floor": c.dt_init_floor,
        "time_step_init_scheme": "random",
        "use_cache": true,
        "use_mambapy": false,
    })
}

/// llama.cpp's architecture of a model of Mamba-1 layers, and what it cannot compute.
pub const GGUF_ARCH: &str = "mamba";

/// llama.cpp computes Mamba-1 with an expansion of 2 only.
pub fn gguf_limits(c: &Config) -> std::result::Result<(), String> {
    match c.d_inner() == 2 * c.d_model {
        true => Ok(()),
        false => Err(format!(
            "llama.cpp computes Mamba-1 only with expand 2 (this model has expand {})",
            c.expand
        )),
    }
}

/// The `mamba.ssm.*` sizes of llama.cpp.
pub fn gguf_sizes(c: &Config) -> Vec<(&'static str, usize)> {
    vec![
        ("ssm.conv_kernel", c.d_conv),
        ("ssm.inner_size", c.d_inner()),
        ("ssm.state_size", c.d_state),
        ("ssm.time_step_rank", c.dt_rank()),
    ]
}

/// Its own sizes, for `model-info`.
pub fn describe(c: &Config) -> String {
    format!("dt_rank {}", c.dt_rank())
}

impl Mamba1 {
    /// Reads the parameters of [`Params::table`] from `vb` (below `...mixer.`).
    pub fn new(cfg: &Config, vb: &VarBuilder) -> Result<Self> {
        Ok(Self::over(Params::read(cfg, vb)?, cfg))
    }

    fn over(p: Params, cfg: &Config) -> Mamba1 {
        Mamba1 {
            p,
            lora: Lora::default(),
            d_inner: cfg.d_inner(),
            d_state: cfg.d_state,
            dt_rank: cfg.dt_rank(),
        }
    }

    /// The same mixer with every parameter through `f` (see [`Params::map`]).
    pub fn map(
        &self,
        f: impl FnMut(&Tensor, crate::layers::params::Init) -> Result<Tensor>,
    ) -> Result<Mamba1> {
        Ok(Mamba1 {
            p: self.p.map(f)?,
            lora: self.lora.clone(),
            ..*self
        })
    }

    /// The parameters under llama.cpp's names (below `blk.N.`), in its shapes: the conv
    /// weight (di, k), A = -exp(A_log).
    pub(crate) fn gguf_tensors(&self) -> Result<Vec<(&'static str, Tensor)>> {
        let p = &self.p;
        Ok(vec![
            ("ssm_in.weight", p.in_proj.clone()),
            ("ssm_conv1d.weight", p.conv_w.squeeze(1)?),
            ("ssm_conv1d.bias", p.conv_b.clone()),
            ("ssm_x.weight", p.x_proj.clone()),
            ("ssm_dt.weight", p.dt_proj_w.clone()),
            ("ssm_dt.bias", p.dt_proj_b.clone()),
            ("ssm_a", self.a()?),
            ("ssm_d", p.d.clone()),
            ("ssm_out.weight", p.out_proj.clone()),
        ])
    }

    /// A = -exp(A_log), (di, n): negative, so every channel's state decays.
    pub fn a(&self) -> Result<Tensor> {
        self.p.a_log.exp()?.neg()
    }

    pub(crate) fn ssm_weights(&self) -> SelectiveSsm<'_> {
        SelectiveSsm {
            x_proj: &self.p.x_proj,
            dt_proj_w: &self.p.dt_proj_w,
            dt_proj_b: &self.p.dt_proj_b,
            a_log: &self.p.a_log,
            d: &self.p.d,
        }
    }

    /// x and z of `h` (b, l, d_model), each (b, l, di). Two matmuls instead of one plus narrow:
    /// x and z come out contiguous and their gradients need no zero-padding.
    fn in_proj(&self, h: &Tensor, dt: DType) -> Result<(Tensor, Tensor)> {
        let (di, w) = (self.d_inner, &self.p.in_proj);
        let parts = self
            .lora
            .linear_parts("in_proj", h, w, &[(0, di), (di, di)], dt)?;
        let [x, z]: [Tensor; 2] = parts
            .try_into()
            .map_err(|_| candle_core::Error::Msg("in_proj: two parts expected".into()))?;
        Ok((x, z))
    }

    /// The scan's input-dependent parameters of u (b, l, di): (delta before its bias, B, C).
    fn selection(&self, u: &Tensor, dt: DType) -> Result<(Tensor, Tensor, Tensor)> {
        let (n, r) = (self.d_state, self.dt_rank);
        let xdbl = self.lora.linear("x_proj", u, &self.p.x_proj, dt)?;
        let delta = self
            .lora
            .linear("dt_proj", &xdbl.narrow(2, 0, r)?, &self.p.dt_proj_w, dt)?;
        let b = xdbl.narrow(2, r, n)?.contiguous()?;
        let c = xdbl.narrow(2, r + n, n)?.contiguous()?;
        Ok((delta, b, c))
    }

    fn scan_options<'a>(&'a self, z: &'a Tensor, resets: Option<&'a Tensor>) -> ScanOptions<'a> {
        ScanOptions {
            delta_bias: Some(&self.p.dt_proj_b),
            delta_softplus: true,
            z: Some(z),
            resets,
            chunk: 0,
        }
    }

    /// h: (b, l, d_model) normalised input -> (b, l, d_model). `resets`: (b, l) u8, nonzero at
    /// document starts (conv window and state never reach back past them). The matmuls run in
    /// `dt` (f32, bf16 or f16); the conv and the scan always in f32, as mamba_ssm keeps its scan
    /// in f32 under autocast.
    pub fn forward(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        if !crate::kernels::cpu_fused(h.device()) {
            return self.forward_recomputed(h, resets, dt);
        }
        let (x, z) = self.in_proj(h, dt)?;
        let u = causal_conv1d_silu(&x, &self.p.conv_w, &self.p.conv_b, resets)?;
        // On the CPU in f32 the whole SSM path is one op (see [`fused`]); it takes x_proj and
        // dt_proj whole, so their adapters are merged in, unless their input is dropped out.
        let whole = !self.lora.drops("x_proj") && !self.lora.drops("dt_proj");
        let fused = match dt {
            DType::F32 if whole => {
                let x_proj = self.lora.merged("x_proj", &self.p.x_proj)?;
                let dt_proj_w = self.lora.merged("dt_proj", &self.p.dt_proj_w)?;
                let w = SelectiveSsm {
                    x_proj: &x_proj,
                    dt_proj_w: &dt_proj_w,
                    ..self.ssm_weights()
                };
                fused_ssm(&u, &z, &w, resets)?
            }
            _ => None,
        };
        let y = match fused {
            Some(y) => y,
            None => self.ssm_ops(&u, &z, resets, dt)?,
        };
        self.lora.linear("out_proj", &y, &self.p.out_proj, dt)
    }

    /// The forward off the CPU's fused ops: in_proj, then conv, selection and the gated scan
    /// as one part recomputed in backward (mamba_ssm's fused mixer recomputes the conv and
    /// delta likewise), then out_proj. A layer keeps in_proj's output and the part's, both in
    /// the compute dtype.
    fn forward_recomputed(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        let xz = self.lora.linear_kept("in_proj", h, &self.p.in_proj, dt)?;
        let (me, resets) = (self.clone(), resets.cloned());
        let own = INNER.len();
        let part: Part = Arc::new(move |xz, start, p| {
            let m = Mamba1 {
                p: me.p.replaced(INNER, &p[..own])?,
                lora: me.lora.replaced(INNER_ADAPTED, &p[own..])?,
                ..me.clone()
            };
            let di = m.d_inner;
            let x = xz.narrow(2, 0, di)?.to_dtype(DType::F32)?;
            let z = xz.narrow(2, di, di)?.to_dtype(DType::F32)?;
            let resets = rows_of(resets.as_ref(), start, xz.dim(0)?)?;
            let u = causal_conv1d_silu(&x, &m.p.conv_w, &m.p.conv_b, resets.as_ref())?;
            m.ssm_ops(&u, &z, resets.as_ref(), dt)?.to_dtype(dt)
        });
        let rows = rows_per_part(h.dim(1)?);
        let mut params = self.p.select(INNER);
        params.extend(self.lora.tensors_of(INNER_ADAPTED));
        let y = recompute(&xz, &params, Some(rows), part)?;
        self.lora.linear_kept("out_proj", &y, &self.p.out_proj, dt)
    }

    /// The SSM path from separate ops: selection, then the selective scan gated by silu(z).
    /// u, z: (b, l, di) -> (b, l, di).
    pub(crate) fn ssm_ops(
        &self,
        u: &Tensor,
        z: &Tensor,
        resets: Option<&Tensor>,
        dt: DType,
    ) -> Result<Tensor> {
        let (delta, b, c) = self.selection(u, dt)?;
        let opts = self.scan_options(z, resets);
        selective_scan(u, &delta, &self.a()?, &b, &c, &self.p.d, &opts)
    }

    /// The f32 forward of a prompt without document resets, and the state after its last
    /// position, from which [`Mamba1::step`] continues.
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        let (x, z) = self.in_proj(h, DType::F32)?;
        let conv = conv_tail(&x, self.p.conv_w.dim(2)?)?;
        let u = causal_conv1d_silu(&x, &self.p.conv_w, &self.p.conv_b, None)?;
        let (delta, b, c) = self.selection(&u, DType::F32)?;
        let opts = self.scan_options(&z, None);
        let (y, ssm) = selective_scan_with_state(&u, &delta, &self.a()?, &b, &c, &self.p.d, &opts)?;
        Ok((linear(&y, &self.p.out_proj)?, MixerState { conv, ssm }))
    }

    /// One position of each sequence in recurrent form (Gu & Dao 2023, Alg. 2): h (b, d_model)
    /// normalised input -> (b, d_model); `st` advances by one position. Plain candle ops, so
    /// it runs on any device; on the CPU the decoder's fast path computes the same.
    pub fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        let (di, n, r) = (self.d_inner, self.d_state, self.dt_rank);
        let xz = linear(h, &self.p.in_proj)?; // (b, 2 di)
        let x = xz.narrow(1, 0, di)?;
        let z = xz.narrow(1, di, di)?;
        let u = conv_step(&mut st.conv, &x, &self.p.conv_w, &self.p.conv_b)?.silu()?; // (b, di)
        let xdbl = linear(&u, &self.p.x_proj)?;
        let bm = xdbl.narrow(1, r, n)?;
        let cm = xdbl.narrow(1, r + n, n)?;
        let delta = linear(&xdbl.narrow(1, 0, r)?, &self.p.dt_proj_w)?;
        let delta = crate::layers::ops::softplus(&delta.broadcast_add(&self.p.dt_proj_b)?)?;
        // h_t = exp(delta A) h_{t-1} + delta B u;  y = <C, h_t> + D u
        let da = delta
            .unsqueeze(2)?
            .broadcast_mul(&self.a()?.unsqueeze(0)?)?
            .exp()?;
        let dbu = (&delta * &u)?
            .unsqueeze(2)?
            .broadcast_mul(&bm.unsqueeze(1)?)?;
        st.ssm = ((da * &st.ssm)? + dbu)?;
        let y = st
            .ssm
            .broadcast_mul(&cm.unsqueeze(1)?)?
            .sum(candle_core::D::Minus1)?;
        let y = ((y + u.broadcast_mul(&self.p.d)?)? * z.silu()?)?;
        linear(&y, &self.p.out_proj)
    }
}
