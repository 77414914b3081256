//! The Mamba-2 mixer (Dao & Gu 2024, "Transformers are SSMs"), as transformers' `Mamba2Mixer`
//! and mamba_ssm's `Mamba2` compute it; its state-space layer is the SSD of [`ssd`], document
//! resets included: on the CPU as its own fused op ([`ssd_cpu`]; a prefill, which also wants
//! the final state, through Mamba-1's fused scan, [`ssd_scan`]), on a GPU in the paper's
//! chunked form ([`ssd_chunked`]). A Mamba-2 language model is [`MambaLM`](crate::MambaLM) with
//! `arch: Mamba2`: the blocks, norms, head, loss and training are the same as Mamba-1's.
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

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::Config;
use crate::layers::conv::{causal_conv1d_silu, conv_step, conv_tail};
use crate::layers::mixer::{linear_in, read_params, MixerState};
use crate::layers::norm::rms_norm;
use crate::layers::ops::{linear, softplus};

pub mod passing;
pub mod ssd;
pub mod ssd_cpu;
pub use passing::pass_states;
pub use ssd::{ssd_chunked, ssd_reference, ssd_scan};
pub use ssd_cpu::ssd_cpu;

/// Positions per chunk of the chunked SSD (its products within a chunk are CHUNK x CHUNK).
pub const CHUNK: usize = 64;

/// The sizes a mixer computes with (from its [`Config`]).
#[derive(Clone, Copy, Debug)]
struct Dims {
    d_inner: usize,
    heads: usize,
    head_dim: usize,
    groups: usize,
    d_state: usize,
    norm_eps: f64,
    dt_limit: (f64, f64),
}

impl Dims {
    fn of(c: &Config) -> Dims {
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
    fn conv_dim(&self) -> usize {
        self.d_inner + 2 * self.groups * self.d_state
    }
}

/// One Mamba-2 mixer's parameters, named as in transformers (`...mixer.in_proj.weight` etc.).
#[derive(Clone, Debug)]
pub struct Mixer2 {
    in_proj: Tensor,  // (d_inner + conv_dim + H, d)
    conv_w: Tensor,   // (conv_dim, 1, k)
    conv_b: Tensor,   // (conv_dim)
    dt_bias: Tensor,  // (H)
    a_log: Tensor,    // (H)
    d: Tensor,        // (H)
    norm: Tensor,     // (d_inner)
    out_proj: Tensor, // (d, d_inner)
    dims: Dims,
}

impl Mixer2 {
    /// The mixer's parameters: transformers' names (below `...mixer.`) and shapes, in the order
    /// [`Mixer2::tensors`] returns them. The one table of them.
    pub fn shapes(c: &Config) -> [(&'static str, Vec<usize>); 8] {
        let (d, di, h, k) = (c.d_model, c.d_inner(), c.n_heads(), c.d_conv);
        [
            ("in_proj.weight", vec![di + c.conv_dim() + h, d]),
            ("conv1d.weight", vec![c.conv_dim(), 1, k]),
            ("conv1d.bias", vec![c.conv_dim()]),
            ("dt_bias", vec![h]),
            ("A_log", vec![h]),
            ("D", vec![h]),
            ("norm.weight", vec![di]),
            ("out_proj.weight", vec![d, di]),
        ]
    }

    /// Reads the parameters of [`Mixer2::shapes`] from `vb` (below `...mixer.`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self::from_tensors(
            read_params(Self::shapes(cfg), vb)?,
            Dims::of(cfg),
        ))
    }

    fn from_tensors(t: [Tensor; 8], dims: Dims) -> Mixer2 {
        let [in_proj, conv_w, conv_b, dt_bias, a_log, d, norm, out_proj] = t;
        Mixer2 {
            in_proj,
            conv_w,
            conv_b,
            dt_bias,
            a_log,
            d,
            norm,
            out_proj,
            dims,
        }
    }

    /// The parameters in the order of [`Mixer2::shapes`].
    pub fn tensors(&self) -> [&Tensor; 8] {
        [
            &self.in_proj,
            &self.conv_w,
            &self.conv_b,
            &self.dt_bias,
            &self.a_log,
            &self.d,
            &self.norm,
            &self.out_proj,
        ]
    }

    /// The same parameters (no copy) as plain tensors, outside any autograd graph.
    pub fn detach(&self) -> Mixer2 {
        Self::from_tensors(self.tensors().map(|t| t.detach()), self.dims)
    }

    /// The mixer with in_proj and out_proj held in `dtype`, the rest detached (see
    /// [`MambaLM::into_weight_dtype`](crate::MambaLM::into_weight_dtype)).
    pub fn into_weight_dtype(self, dtype: DType) -> Result<Mixer2> {
        let mut t = self.tensors().map(|t| t.detach());
        for i in [0, 7] {
            t[i] = t[i].to_dtype(dtype)?.detach();
        }
        Ok(Self::from_tensors(t, self.dims))
    }

    /// h: (b, l, d_model) normalised input -> (b, l, d_model). `resets`: (b, l) u8, nonzero at
    /// document starts (conv window and SSD state never reach back past them). The two
    /// projections run in `dt`; conv, SSD and norm in f32.
    pub fn forward(&self, h: &Tensor, resets: Option<&Tensor>, dt: DType) -> Result<Tensor> {
        Ok(self.run(h, resets, dt, false)?.0)
    }

    /// The f32 forward of a prompt without resets, and the state after its last position:
    /// the conv window's last d_conv - 1 inputs (b, conv_dim, d_conv - 1) and the SSD state
    /// (b, H, P, N), from which [`Mixer2::step`] continues.
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        let (out, state) = self.run(h, None, DType::F32, true)?;
        let state = state.ok_or_else(|| candle_core::Error::Msg("no state".into()))?;
        Ok((out, state))
    }

    fn run(
        &self,
        h: &Tensor,
        resets: Option<&Tensor>,
        compute: DType,
        keep_state: bool,
    ) -> Result<(Tensor, Option<MixerState>)> {
        let (b, l, _) = h.dims3()?;
        let (di, hn, p, g, n) = self.dims.sizes();
        let zxbcdt = linear_in(h, &self.in_proj, compute)?;
        let z = zxbcdt.narrow(2, 0, di)?;
        let xbc = zxbcdt.narrow(2, di, self.dims.conv_dim())?.contiguous()?;
        let dt = zxbcdt.narrow(2, di + self.dims.conv_dim(), hn)?;
        let conv = match keep_state {
            true => Some(conv_tail(&xbc, self.conv_w.dim(2)?)?),
            false => None,
        };
        let xbc = causal_conv1d_silu(&xbc, &self.conv_w, &self.conv_b, resets)?;
        let x = xbc.narrow(2, 0, di)?.reshape((b, l, hn, p))?;
        let bm = xbc.narrow(2, di, g * n)?.reshape((b, l, g, n))?;
        let cm = xbc.narrow(2, di + g * n, g * n)?.reshape((b, l, g, n))?;
        let dt = self.dt(&dt)?;
        let a = self.a_log.exp()?.neg()?;
        // The recurrence on the CPU (the SSD's own op; the scan where the final state is
        // wanted), the chunked form on a GPU (3.4x the scan's speed there on an H200, for 1.6x
        // its memory; BENCHMARKS.md).
        let (y, ssm) = match (x.device().is_cpu(), keep_state) {
            (true, false) if x.dtype() == DType::F32 => {
                (ssd_cpu(&x, &dt, &a, &bm, &cm, &self.d, resets)?, None)
            }
            (true, _) => ssd_scan(&x, &dt, &a, &bm, &cm, &self.d, resets, keep_state)?,
            (false, _) => {
                let (y, s) = ssd_chunked(&x, &dt, &a, &bm, &cm, &self.d, resets, CHUNK)?;
                (y, Some(s))
            }
        };
        let y = self.gated_norm(&y.reshape((b, l, di))?, &z)?;
        let state = match (conv, ssm) {
            (Some(conv), Some(ssm)) => Some(MixerState { conv, ssm }),
            _ => None,
        };
        Ok((linear_in(&y, &self.out_proj, compute)?, state))
    }

    /// One position of each sequence in recurrent form: h (b, d_model) normalised input ->
    /// (b, d_model); `st` advances by one position. Plain candle ops, on any device.
    pub fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        let b = h.dim(0)?;
        let (di, hn, p, g, n) = self.dims.sizes();
        let zxbcdt = linear(h, &self.in_proj)?;
        let z = zxbcdt.narrow(1, 0, di)?;
        let xbc = zxbcdt.narrow(1, di, self.dims.conv_dim())?;
        let dt = self.dt(&zxbcdt.narrow(1, di + self.dims.conv_dim(), hn)?)?; // (b, H)
        let xbc = conv_step(&mut st.conv, &xbc, &self.conv_w, &self.conv_b)?.silu()?;
        let x = xbc.narrow(1, 0, di)?.reshape((b, hn, p))?;
        // One position's B or C (b, G N) -> (b, H, 1, N), each head its group's.
        let heads = |t: Tensor| -> Result<Tensor> {
            ssd::per_head(&t.reshape((b, 1, g, n))?, hn)?.reshape((b, hn, 1, n))
        };
        let bm = heads(xbc.narrow(1, di, g * n)?)?;
        let cm = heads(xbc.narrow(1, di + g * n, g * n)?)?;
        // h = exp(dt A) h + dt x B^T;  y = h C + D x
        let a = self.a_log.exp()?.neg()?;
        let decay = dt.broadcast_mul(&a)?.exp()?.reshape((b, hn, 1, 1))?;
        let dx = x.broadcast_mul(&dt.unsqueeze(2)?)?.unsqueeze(3)?; // (b, H, P, 1)
        st.ssm = (st.ssm.broadcast_mul(&decay)? + dx.broadcast_mul(&bm)?)?;
        let y = st.ssm.broadcast_mul(&cm)?.sum(D::Minus1)?; // (b, H, P)
        let y = (y + x.broadcast_mul(&self.d.reshape((1, hn, 1))?)?)?.reshape((b, di))?;
        linear(&self.gated_norm(&y, &z)?, &self.out_proj)
    }

    /// dt = clamp(softplus(dt + dt_bias), dt_limit).
    fn dt(&self, dt: &Tensor) -> Result<Tensor> {
        let (lo, hi) = self.dims.dt_limit;
        softplus(&dt.broadcast_add(&self.dt_bias)?)?.clamp(lo, hi.min(f64::MAX))
    }

    /// rms_norm over groups of d_inner / G channels of y * silu(z), times the norm's weight
    /// (transformers' `MambaRMSNormGated`, the gate applied before the norm).
    fn gated_norm(&self, y: &Tensor, z: &Tensor) -> Result<Tensor> {
        let dims = y.dims().to_vec();
        let last = dims[dims.len() - 1];
        let gated = (y * z.silu()?)?;
        if self.dims.groups == 1 {
            // One group (the released models): the fused norm of the Mamba-1 blocks.
            return rms_norm(&gated, &self.norm, self.dims.norm_eps);
        }
        let mut grouped = dims[..dims.len() - 1].to_vec();
        grouped.extend([self.dims.groups, last / self.dims.groups]);
        let x = gated.reshape(grouped)?;
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let x = x
            .broadcast_div(&(var + self.dims.norm_eps)?.sqrt()?)?
            .reshape(dims)?;
        x.broadcast_mul(&self.norm)
    }
}
