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

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::Config;
use crate::kernels::scan::{selective_scan, selective_scan_with_state, ScanOptions};
use crate::kernels::ssm::{ssm_fused, SsmWeights};
use crate::layers::conv::{causal_conv1d_silu, conv_step, conv_tail};
use crate::layers::ops::linear;

/// Parameters of one mixer, named as in transformers (`...mixer.in_proj.weight` etc.).
#[derive(Clone, Debug)]
pub struct Mixer {
    in_proj: Tensor,   // (2 di, d)
    conv_w: Tensor,    // (di, 1, k)
    conv_b: Tensor,    // (di)
    x_proj: Tensor,    // (r + 2n, di)
    dt_proj_w: Tensor, // (di, r)
    dt_proj_b: Tensor, // (di)
    a_log: Tensor,     // (di, n)
    d: Tensor,         // (di)
    out_proj: Tensor,  // (d, di)
    d_inner: usize,
    d_state: usize,
    dt_rank: usize,
}

/// The recurrent state of one mixer after a prompt: the last `d_conv - 1` conv inputs
/// (b, conv channels, d_conv - 1) and the SSM state (Mamba-1: (b, di, d_state); Mamba-2:
/// (b, heads, head_dim, d_state)).
#[derive(Clone, Debug)]
pub struct MixerState {
    pub conv: Tensor,
    pub ssm: Tensor,
}

/// x @ w^T computed in `dt` (inputs and weight cast to it), returned in f32. The casts are
/// differentiable, so the gradients of f32 parameters arrive in f32.
pub(crate) fn linear_in(x: &Tensor, w: &Tensor, dt: DType) -> Result<Tensor> {
    if dt == DType::F32 {
        return linear(x, w);
    }
    linear(&x.to_dtype(dt)?, &w.to_dtype(dt)?)?.to_dtype(DType::F32)
}

/// Reads the tensors of a mixer's parameter table from `vb`; errors name a missing tensor or a
/// wrong shape.
pub(crate) fn read_params<const N: usize>(
    shapes: [(&'static str, Vec<usize>); N],
    vb: VarBuilder,
) -> Result<[Tensor; N]> {
    let t = shapes
        .map(|(name, shape)| vb.get(shape, name))
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    t.try_into()
        .map_err(|_| candle_core::Error::Msg("mixer parameters".into()))
}

impl Mixer {
    /// The mixer's parameters: transformers' names (below `...mixer.`) and shapes, in the order
    /// [`Mixer::new`] reads them and [`Mixer::tensors`] returns them. The one table of them.
    pub fn shapes(cfg: &Config) -> [(&'static str, Vec<usize>); 9] {
        let (d, di, n, r, k) = (
            cfg.d_model,
            cfg.d_inner(),
            cfg.d_state,
            cfg.dt_rank(),
            cfg.d_conv,
        );
        [
            ("in_proj.weight", vec![2 * di, d]),
            ("conv1d.weight", vec![di, 1, k]),
            ("conv1d.bias", vec![di]),
            ("x_proj.weight", vec![r + 2 * n, di]),
            ("dt_proj.weight", vec![di, r]),
            ("dt_proj.bias", vec![di]),
            ("A_log", vec![di, n]),
            ("D", vec![di]),
            ("out_proj.weight", vec![d, di]),
        ]
    }

    /// Reads the parameters of [`Mixer::shapes`] from `vb` (below `...mixer.`); errors name a
    /// missing tensor or a wrong shape.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self::from_tensors(
            read_params(Self::shapes(cfg), vb)?,
            cfg.d_inner(),
            cfg.d_state,
            cfg.dt_rank(),
        ))
    }

    /// The mixer over parameters in the order of [`Mixer::shapes`].
    fn from_tensors(t: [Tensor; 9], d_inner: usize, d_state: usize, dt_rank: usize) -> Mixer {
        let [in_proj, conv_w, conv_b, x_proj, dt_proj_w, dt_proj_b, a_log, d, out_proj] = t;
        Mixer {
            in_proj,
            conv_w,
            conv_b,
            x_proj,
            dt_proj_w,
            dt_proj_b,
            a_log,
            d,
            out_proj,
            d_inner,
            d_state,
            dt_rank,
        }
    }

    /// The parameters in the order of [`Mixer::shapes`].
    pub fn tensors(&self) -> [&Tensor; 9] {
        [
            &self.in_proj,
            &self.conv_w,
            &self.conv_b,
            &self.x_proj,
            &self.dt_proj_w,
            &self.dt_proj_b,
            &self.a_log,
            &self.d,
            &self.out_proj,
        ]
    }

    /// The same parameters (no copy) as plain tensors, outside any autograd graph.
    pub fn detach(&self) -> Mixer {
        let t = self.tensors().map(|t| t.detach());
        Self::from_tensors(t, self.d_inner, self.d_state, self.dt_rank)
    }

    /// The mixer with its four projections held in `dtype` (see
    /// [`MambaLM::into_weight_dtype`](crate::MambaLM::into_weight_dtype)), the rest detached.
    /// This layer's f32 projections stay alive until the end of the call: one layer's worth,
    /// not the model's.
    pub fn into_weight_dtype(self, dtype: DType) -> Result<Mixer> {
        // in_proj, x_proj, dt_proj.weight, out_proj in the order of `shapes`.
        const MATRICES: [usize; 4] = [0, 3, 4, 8];
        let mut t = self.tensors().map(|t| t.detach());
        for i in MATRICES {
            t[i] = t[i].to_dtype(dtype)?.detach();
        }
        Ok(Self::from_tensors(
            t,
            self.d_inner,
            self.d_state,
            self.dt_rank,
        ))
    }

    /// A = -exp(A_log), (di, n): negative, so every channel's state decays.
    pub fn a(&self) -> Result<Tensor> {
        self.a_log.exp()?.neg()
    }

    pub(crate) fn ssm_weights(&self) -> SsmWeights<'_> {
        SsmWeights {
            x_proj: &self.x_proj,
            dt_proj_w: &self.dt_proj_w,
            dt_proj_b: &self.dt_proj_b,
            a_log: &self.a_log,
            d: &self.d,
        }
    }

    /// x and z of `h` (b, l, d_model), each (b, l, di). Two matmuls instead of one plus narrow:
    /// x and z come out contiguous and their gradients need no zero-padding.
    fn in_proj(&self, h: &Tensor, dt: DType) -> Result<(Tensor, Tensor)> {
        let di = self.d_inner;
        let x = linear_in(h, &self.in_proj.narrow(0, 0, di)?, dt)?;
        let z = linear_in(h, &self.in_proj.narrow(0, di, di)?, dt)?;
        Ok((x, z))
    }

    /// The scan's input-dependent parameters of u (b, l, di): (delta before its bias, B, C).
    fn selection(&self, u: &Tensor, dt: DType) -> Result<(Tensor, Tensor, Tensor)> {
        let (n, r) = (self.d_state, self.dt_rank);
        let xdbl = linear_in(u, &self.x_proj, dt)?;
        let delta = linear_in(&xdbl.narrow(2, 0, r)?, &self.dt_proj_w, dt)?;
        let b = xdbl.narrow(2, r, n)?.contiguous()?;
        let c = xdbl.narrow(2, r + n, n)?.contiguous()?;
        Ok((delta, b, c))
    }

    fn scan_options<'a>(&'a self, z: &'a Tensor, resets: Option<&'a Tensor>) -> ScanOptions<'a> {
        ScanOptions {
            delta_bias: Some(&self.dt_proj_b),
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
        let (x, z) = self.in_proj(h, dt)?;
        let u = causal_conv1d_silu(&x, &self.conv_w, &self.conv_b, resets)?;
        // On the CPU in f32 the whole SSM path is one op (see `crate::kernels::ssm`).
        let fused = match dt {
            DType::F32 => ssm_fused(&u, &z, &self.ssm_weights(), resets)?,
            _ => None,
        };
        let y = match fused {
            Some(y) => y,
            None => self.ssm_ops(&u, &z, resets, dt)?,
        };
        linear_in(&y, &self.out_proj, dt)
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
        selective_scan(u, &delta, &self.a()?, &b, &c, &self.d, &opts)
    }

    /// The f32 forward of a prompt without document resets, and the state after its last
    /// position, from which [`Mixer::step`] continues.
    pub fn prefill(&self, h: &Tensor) -> Result<(Tensor, MixerState)> {
        let (x, z) = self.in_proj(h, DType::F32)?;
        let conv = conv_tail(&x, self.conv_w.dim(2)?)?;
        let u = causal_conv1d_silu(&x, &self.conv_w, &self.conv_b, None)?;
        let (delta, b, c) = self.selection(&u, DType::F32)?;
        let opts = self.scan_options(&z, None);
        let (y, ssm) = selective_scan_with_state(&u, &delta, &self.a()?, &b, &c, &self.d, &opts)?;
        Ok((linear(&y, &self.out_proj)?, MixerState { conv, ssm }))
    }

    /// One position of each sequence in recurrent form (Gu & Dao 2023, Alg. 2): h (b, d_model)
    /// normalised input -> (b, d_model); `st` advances by one position. Plain candle ops, so
    /// it runs on any device; on the CPU the decoder's fast path computes the same.
    pub fn step(&self, h: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        let (di, n, r) = (self.d_inner, self.d_state, self.dt_rank);
        let xz = linear(h, &self.in_proj)?; // (b, 2 di)
        let x = xz.narrow(1, 0, di)?;
        let z = xz.narrow(1, di, di)?;
        let u = conv_step(&mut st.conv, &x, &self.conv_w, &self.conv_b)?.silu()?; // (b, di)
        let xdbl = linear(&u, &self.x_proj)?;
        let bm = xdbl.narrow(1, r, n)?;
        let cm = xdbl.narrow(1, r + n, n)?;
        let delta = linear(&xdbl.narrow(1, 0, r)?, &self.dt_proj_w)?;
        let delta = crate::layers::ops::softplus(&delta.broadcast_add(&self.dt_proj_b)?)?;
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
        let y = ((y + u.broadcast_mul(&self.d)?)? * z.silu()?)?;
        linear(&y, &self.out_proj)
    }
}
