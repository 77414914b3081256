//! The Mamba-3 mixer (Lahoti, Gu, Dao et al., ICLR 2026), as mamba_ssm's `Mamba3` computes it,
//! SISO and MIMO ([`reference`] writes out the math). There is no conv and no A_log: A, dt, the
//! trapezoid's gate and the rotation angles all come from in_proj. On the CPU the recurrence is
//! one fused op with its own backward ([`trap_cpu`]; on NVIDIA GPUs its CUDA kernels,
//! `trap.cu`) between candle ops that prepare q, k, v and the coefficients and gate the output;
//! elsewhere the step-by-step form. Generation on
//! the CPU runs [`step`], on plain rows.
//!
//! The A activation follows mamba_ssm's releases (2.3.2.post1) and flash-linear-attention:
//! A = -softplus(a), floored at -A_floor; mamba_ssm's main branch since June 2026 uses a
//! heavy-tail activation instead, which `a_activation: "heavy_tail"` selects.

pub mod reference;
pub(crate) mod step;
pub mod trap_cpu;
#[cfg(feature = "cuda")]
pub mod trap_cuda;

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use serde_json::{json, Value};

use super::state::MixerState;
use crate::config::Config;
use crate::error::Error;
use crate::layers::params::{Init, Param, Params};
use crate::lora::Lora;
use reference::{finish, prepare, recurrence, rotate, Carry, Dims};

/// One Mamba-3 mixer: its parameters (in the order of [`table`]) and sizes.
#[derive(Clone, Debug)]
pub struct Mamba3 {
    pub(crate) w: Params,
    /// Adapters on its projections (none unless training with LoRA).
    pub(crate) lora: Lora,
    pub(crate) dims: Dims,
}

/// The projections LoRA adapts by default.
pub const LORA_TARGETS: &[&str] = &["in_proj"];

/// flash-linear-attention's `model_type` and class of a model of Mamba-3 layers.
pub const TRANSFORMERS: (&str, &str) = ("mamba3", "Mamba3ForCausalLM");

/// flash-linear-attention's `Mamba3Config` when a field is absent: (tie_word_embeddings,
/// n_groups).
pub const HF_DEFAULTS: (bool, usize) = (false, 1);

/// The parameters of a Mamba-3 mixer of `c`: names (mamba_ssm's, below `...mixer.`), shapes,
/// inits (mamba_ssm's: B, C biases and norms 1, mimo_x and mimo_o 1/R, mimo_z 1).
pub fn table(c: &Config) -> Vec<Param> {
    let d = Dims::of(c);
    let (h, p, n, r) = (d.heads, d.head_dim, d.d_state, d.rank());
    let param = |name, shape: Vec<usize>, init| Param { name, shape, init };
    let mut t = vec![
        param(
            "in_proj.weight",
            vec![d.in_proj_rows(), c.d_model],
            Init::Linear,
        ),
        param("dt_bias", vec![h], Init::DtBias),
        param("B_bias", vec![h, r, n], Init::Ones),
        param("C_bias", vec![h, r, n], Init::Ones),
        param("B_norm.weight", vec![n], Init::Ones),
        param("C_norm.weight", vec![n], Init::Ones),
    ];
    if c.mimo_rank > 0 {
        t.push(param("mimo_x", vec![h, r, p], Init::InvRank));
        t.push(param("mimo_z", vec![h, r, p], Init::Ones));
        t.push(param("mimo_o", vec![h, r, p], Init::InvRank));
    }
    t.push(param("D", vec![h], Init::Ones));
    if c.outproj_norm {
        t.push(param("norm.weight", vec![d.d_inner()], Init::Ones));
    }
    t.push(param(
        "out_proj.weight",
        vec![c.d_model, d.d_inner()],
        Init::OutProj,
    ));
    t
}

/// One sequence's state: the phases, the last position's rotated k and its v (one row), and
/// the state (heads, head_dim, n).
pub fn state_shapes(c: &Config) -> (Vec<usize>, Vec<usize>) {
    let d = Dims::of(c);
    let (h, r) = (d.heads, d.rank());
    let carry = h * d.angles() + r * h * d.d_state + r * h * d.head_dim;
    (vec![carry], vec![h, d.head_dim, d.d_state])
}

/// Values backward keeps per token: the residual and norm output, in_proj's output, B and C
/// normed and per head, q and k rotated (with the rotation's halves and products) and stacked
/// for the op, v, the coefficients, y with D, the gate, and out_proj's input.
pub fn activations_per_token(c: &Config) -> u64 {
    let d = Dims::of(c);
    let (h, r, n, p) = (
        d.heads as u64,
        d.rank() as u64,
        d.d_state as u64,
        d.head_dim as u64,
    );
    let bc = 2 * (d.groups as u64) * r * n;
    3 * c.d_model as u64 + d.in_proj_rows() as u64 + bc + 10 * r * h * n + 6 * r * h * p + 16 * h
}

/// The fields of flash-linear-attention's `Mamba3Config` that only Mamba-3 has.
pub fn hf_fields(c: &Config) -> Value {
    let v = json!({
        "head_dim": c.head_dim,
        "num_heads": c.n_heads(),
        "n_groups": c.n_groups,
        "rope_fraction": c.rope_fraction,
        "A_floor": c.a_floor,
        "is_outproj_norm": c.outproj_norm,
        "is_mimo": c.mimo_rank > 0,
        "mimo_rank": c.mimo_rank.max(1),
        "dt_min": c.dt_min,
        "dt_max": c.dt_max,
        "dt_init_floor": c.dt_init_floor,
        "norm_eps": c.norm_eps,
        "chunk_size": 64,
    });
    with_activation(v, c)
}

/// `v` with `a_activation: "heavy_tail"` when the model computes A with it (the default,
/// softplus, is left unsaid, as the configs of mamba_ssm and flash-linear-attention have it).
fn with_activation(mut v: Value, c: &Config) -> Value {
    if let (Some(o), true) = (v.as_object_mut(), c.heavy_tail) {
        o.insert("a_activation".into(), json!("heavy_tail"));
    }
    v
}

/// mamba_ssm's `ssm_cfg` of a Mamba-3 layer (its `Mamba3` ignores `a_activation`, which says
/// which A this tool computed with).
pub fn ssm_cfg(c: &Config) -> Value {
    let v = json!({
        "layer": "Mamba3", "d_state": c.d_state, "expand": c.expand, "headdim": c.head_dim,
        "ngroups": c.n_groups, "rope_fraction": c.rope_fraction, "is_mimo": c.mimo_rank > 0,
        "mimo_rank": c.mimo_rank.max(1), "is_outproj_norm": c.outproj_norm, "A_floor": c.a_floor,
    });
    with_activation(v, c)
}

/// Reads Mamba-3's own fields of flash-linear-attention's config (or mamba_ssm's `ssm_cfg`,
/// whose names differ where `mamba_ssm` says so) into `c`.
pub fn read_fields(v: &Value, c: &mut Config, mamba_ssm: bool) -> std::result::Result<(), String> {
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let flag = |k: &str| v.get(k).and_then(|x| x.as_bool());
    if flag("is_mimo").unwrap_or(false) {
        c.mimo_rank = v.get("mimo_rank").and_then(|x| x.as_u64()).unwrap_or(4) as usize;
    }
    c.rope_fraction = f("rope_fraction").unwrap_or(0.5);
    c.outproj_norm = flag("is_outproj_norm").unwrap_or(false);
    c.a_floor = f("A_floor").unwrap_or(1e-4);
    c.heavy_tail = match v.get("a_activation").and_then(|x| x.as_str()) {
        None | Some("softplus") => false,
        Some("heavy_tail") => true,
        Some(other) => {
            return Err(format!(
                "a_activation `{other}` is not known (softplus or heavy_tail)"
            ))
        }
    };
    if !mamba_ssm {
        if let Some(eps) = f("norm_eps") {
            c.norm_eps = eps;
        }
    }
    if flag("use_bias").unwrap_or(false) {
        return Err("use_bias = true (biases on in_proj and out_proj) is not supported".into());
    }
    Ok(())
}

/// Its own sizes, for `model-info`.
pub fn describe(c: &Config) -> String {
    let mode = match c.mimo_rank {
        0 => "SISO".to_string(),
        r => format!("MIMO rank {r}"),
    };
    format!(
        "heads {} x head_dim {}  n_groups {}  {mode}, rope {}",
        c.n_heads(),
        c.head_dim,
        c.n_groups,
        c.rope_fraction
    )
}

/// Checks the sizes only Mamba-3 has: heads and groups as Mamba-2's, a rotation it can do.
pub fn check(c: &Config) -> crate::error::Result<()> {
    super::mamba2::check(c)?;
    let bad = |m: String| Err(Error::Config(m));
    if c.rope_fraction != 0.5 && c.rope_fraction != 1.0 {
        return bad(format!(
            "rope_fraction {} must be 0.5 or 1",
            c.rope_fraction
        ));
    }
    if Dims::of(c).angles() == 0 || !c.d_state.is_multiple_of(2) {
        return bad(format!("d_state {} leaves no pair to rotate", c.d_state));
    }
    Ok(())
}

impl Mamba3 {
    /// Reads the parameters of [`table`] from `vb` (below `...mixer.`).
    pub fn new(cfg: &Config, vb: &VarBuilder) -> Result<Self> {
        Ok(Mamba3 {
            w: Params::read(table(cfg), vb)?,
            lora: Lora::default(),
            dims: Dims::of(cfg),
        })
    }

    /// The parameters with their names, in the order of [`table`].
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        self.w.named()
    }

    /// The same mixer with every parameter through `f`.
    pub fn map(&self, f: impl FnMut(&Tensor, Init) -> Result<Tensor>) -> Result<Mamba3> {
        Ok(Mamba3 {
            w: self.w.map(f)?,
            ..self.clone()
        })
    }

    /// The parameter `name` in f32 (the projections may be held in another dtype).
    fn get(&self, name: &str) -> Result<Tensor> {
        self.w.get(name)?.to_dtype(DType::F32)
    }

    fn weight(&self, name: &str) -> Result<&Tensor> {
        self.w.get(name)
    }

    /// h: (b, l, d_model) normalised input -> (b, l, d_model); `resets` (b, l) nonzero at
    /// document starts; the projections run in `dt`.
    pub fn forward(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        Ok(self.run(h, resets, dt, false, true)?.0)
    }

    /// The forward as devices without the fused op run it (one position at a time), on any
    /// device: the CPU's tests compare the two.
    pub fn forward_stepwise(&self, h: &Tensor, resets: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.run(h, resets, DType::F32, false, false)?.0)
    }

    /// The f32 forward of a prompt and the state after its last position.
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        MixerState::prefilled(self.run(h, None, DType::F32, true, true)?)
    }

    /// The forward (`fusable`: through the fused op where the device has it) and, with
    /// `keep_state`, the state after the last position.
    fn run(
        &self,
        h: &Tensor,
        resets: Option<&Tensor>,
        compute: DType,
        keep_state: bool,
        fusable: bool,
    ) -> Result<(Tensor, Option<MixerState>)> {
        let d = &self.dims;
        let proj = self
            .lora
            .linear("in_proj", h, self.weight("in_proj.weight")?, compute)?;
        let get = |name: &str| self.get(name);
        let prep = prepare(&proj, &get, d)?;
        let resets = match resets {
            Some(r) => Some(Arc::new(r.ne(0f64)?.flatten_all()?.to_vec1::<u8>()?)),
            None => None,
        };
        // The fused op on the CPU, and for training on an NVIDIA GPU (a prefill's final state
        // there comes from the step-by-step form).
        let dev = h.device();
        let fused = crate::kernels::has_kernels(dev) && (dev.is_cpu() || !keep_state);
        let (y, carry) = match fusable && fused && proj.dtype() == DType::F32 {
            true => self.fused(&prep, resets, keep_state)?,
            false => {
                let (y, c) = recurrence(&prep, None, resets.as_deref().map(|r| &r[..]))?;
                (y, Some(c))
            }
        };
        let o = finish(&y, &prep, &get, d)?;
        let out = self
            .lora
            .linear("out_proj", &o, self.weight("out_proj.weight")?, compute)?;
        let state = match (keep_state, carry) {
            (true, Some(c)) => Some(pack(&c)?),
            _ => None,
        };
        Ok((out, state))
    }

    /// The recurrence through the CPU's fused op: y (b, l, R, H, P) and, with `keep_state`,
    /// what the last position leaves.
    fn fused(
        &self,
        p: &reference::Prepared,
        resets: Option<Arc<Vec<u8>>>,
        keep_state: bool,
    ) -> Result<(Tensor, Option<Carry>)> {
        let (b, l, _, h, _) = p.v.dims5()?;
        let s = p.turn.dim(4)?;
        // Where a document starts, nothing of the one before reaches it.
        let keep: Vec<f32> = (0..b * l)
            .map(
                |i| match resets.as_ref().is_some_and(|r| i % l > 0 && r[i] != 0) {
                    true => 0.0,
                    false => 1.0,
                },
            )
            .collect();
        let keep = Tensor::from_vec(keep, (b, l, 1), p.v.device())?;
        let turn = p.turn.reshape((b, l, h * s))?;
        let phi = match turn.device().is_cpu() {
            true => trap_cpu::phases(&turn, resets.clone())?,
            false => phases_by_cumsum(&turn, resets.as_deref().map(|r| &r[..]))?,
        };
        let phi = phi.reshape((b, l, 1, h, s))?;
        let (k, q) = (
            rotate(&p.k, &phi, p.pairwise)?,
            rotate(&p.q, &phi, p.pairwise)?,
        );
        let qk = Tensor::stack(&[q.transpose(2, 3)?, k.transpose(2, 3)?], 3)?;
        let v = p.v.transpose(2, 3)?;
        let coef = Tensor::stack(
            &[
                p.alpha.broadcast_mul(&keep)?,
                p.beta.broadcast_mul(&keep)?,
                p.gamma.clone(),
            ],
            3,
        )?;
        let y = trap_cpu::trapezoid(&qk, &v, &coef)?.transpose(2, 3)?;
        let carry = match keep_state {
            false => None,
            true => {
                let last = |x: &Tensor| x.narrow(1, l - 1, 1)?.squeeze(1);
                Some(Carry {
                    phi: phi.narrow(1, l - 1, 1)?.squeeze(1)?,
                    state: trap_cpu::final_state(&qk, &v, &coef)?,
                    k: last(&k)?,
                    v: last(&p.v)?,
                })
            }
        };
        Ok((y, carry))
    }

    /// One position of each sequence: h (b, d_model) -> (b, d_model); `st` advances.
    pub fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        let d = &self.dims;
        let h = h.unsqueeze(1)?;
        let proj = crate::layers::ops::linear(&h, self.weight("in_proj.weight")?)?;
        let get = |name: &str| self.get(name);
        let prep = prepare(&proj, &get, d)?;
        let carry = unpack(st, d)?;
        let (y, carry) = recurrence(&prep, Some(carry), None)?;
        let o = finish(&y, &prep, &get, d)?;
        *st = pack(&carry)?;
        crate::layers::ops::linear(&o, self.weight("out_proj.weight")?)?.squeeze(1)
    }
}

/// The phases (b, l, C) as [`trap_cpu::phases`] gives them, from candle ops on any device:
/// the running sum of `turn` (b, l, C), less its value before each document's start.
pub fn phases_by_cumsum(turn: &Tensor, resets: Option<&[u8]>) -> Result<Tensor> {
    let (b, l, c) = turn.dims3()?;
    let sums = turn.contiguous()?.cumsum(1)?;
    let Some(r) = resets else {
        return Ok(sums);
    };
    // Per position, the row of the sum just before its document's start (none for the first).
    let (mut before, mut inside) = (vec![0u32; b * l], vec![0f32; b * l]);
    for bi in 0..b {
        let mut start = 0;
        for t in 0..l {
            if t > 0 && r[bi * l + t] != 0 {
                start = t;
            }
            before[bi * l + t] = (bi * l + start.max(1) - 1) as u32;
            inside[bi * l + t] = (start > 0) as u8 as f32;
        }
    }
    let dev = turn.device();
    let flat = sums.reshape((b * l, c))?;
    let base = flat
        .index_select(&Tensor::from_vec(before, b * l, dev)?, 0)?
        .broadcast_mul(&Tensor::from_vec(inside, (b * l, 1), dev)?)?;
    (flat - base)?.reshape((b, l, c))
}

/// A carry as a mixer state: conv = [phases | k | v] flat per sequence, ssm = the state.
fn pack(c: &Carry) -> Result<MixerState> {
    let b = c.state.dim(0)?;
    let flat = |t: &Tensor| t.reshape((b, ())).and_then(|t| t.to_dtype(DType::F32));
    Ok(MixerState {
        conv: Tensor::cat(&[flat(&c.phi)?, flat(&c.k)?, flat(&c.v)?], 1)?,
        ssm: c.state.to_dtype(DType::F32)?,
    })
}

/// The inverse of [`pack`].
fn unpack(st: &MixerState, d: &Dims) -> Result<Carry> {
    let b = st.ssm.dim(0)?;
    let (h, r, s) = (d.heads, d.rank(), d.angles());
    let (kn, vp) = (r * h * d.d_state, r * h * d.head_dim);
    Ok(Carry {
        phi: st.conv.narrow(1, 0, h * s)?.reshape((b, 1, h, s))?,
        k: st
            .conv
            .narrow(1, h * s, kn)?
            .reshape((b, r, h, d.d_state))?,
        v: st
            .conv
            .narrow(1, h * s + kn, vp)?
            .reshape((b, r, h, d.head_dim))?,
        state: st.ssm.clone(),
    })
}
