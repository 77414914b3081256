//! Recurrent (step) mode for generation: per layer a conv window and an SSM state, one token in
//! O(1) time and memory. Built from plain tensor ops, so it runs on any device.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::model::MambaLM;
use crate::norm::rms_norm;
use crate::ops::{linear, softplus};

/// Generation state of a batch: for each layer the last d_conv - 1 conv inputs
/// (b, d_inner, d_conv - 1) and the SSM state (b, d_inner, d_state).
#[derive(Clone, Debug)]
pub struct State {
    pub conv: Vec<Tensor>,
    pub ssm: Vec<Tensor>,
    /// Number of tokens consumed so far.
    pub pos: usize,
}

impl State {
    /// All-zero state (the start of a document).
    pub fn new(model: &MambaLM, batch: usize) -> Result<Self> {
        let c = model.config();
        let dev: &Device = model.device();
        let mut conv = Vec::with_capacity(c.n_layer);
        let mut ssm = Vec::with_capacity(c.n_layer);
        for _ in 0..c.n_layer {
            conv.push(Tensor::zeros(
                (batch, c.d_inner(), c.d_conv - 1),
                DType::F32,
                dev,
            )?);
            ssm.push(Tensor::zeros(
                (batch, c.d_inner(), c.d_state),
                DType::F32,
                dev,
            )?);
        }
        Ok(State { conv, ssm, pos: 0 })
    }

    /// Batch size of the state.
    pub fn batch(&self) -> usize {
        self.ssm.first().map(|t| t.dims()[0]).unwrap_or(0)
    }
}

impl MambaLM {
    /// A zero state for `batch` sequences.
    pub fn new_state(&self, batch: usize) -> Result<State> {
        State::new(self, batch)
    }

    /// Feeds one token per sequence (`ids`: (b,) u32) and returns the logits of the next token,
    /// (b, padded_vocab). Equivalent to the last position of [`MambaLM::forward`] on the whole
    /// prefix.
    pub fn step(&self, ids: &Tensor, state: &mut State) -> Result<Tensor> {
        let c = &self.cfg;
        let b = ids.dim(0)?;
        if state.batch() != b || state.ssm.len() != self.layers.len() {
            candle_core::bail!("step: state is for batch {} but got {b} ids", state.batch())
        }
        let mut residual = self.embedding.index_select(ids, 0)?; // (b, d)
        for (i, layer) in self.layers.iter().enumerate() {
            let m = &layer.mixer;
            let h = rms_norm(&residual, &layer.norm, c.norm_eps)?;
            let xz = linear(&h, &m.in_proj)?; // (b, 2 di)
            let x = xz.narrow(1, 0, m.d_inner)?;
            let z = xz.narrow(1, m.d_inner, m.d_inner)?;
            // conv window: previous k-1 inputs followed by x.
            let window = Tensor::cat(&[&state.conv[i], &x.unsqueeze(2)?], 2)?; // (b, di, k)
            let w = m.conv_w.squeeze(1)?; // (di, k)
            let conv = window
                .broadcast_mul(&w)?
                .sum(D::Minus1)?
                .broadcast_add(&m.conv_b)?;
            state.conv[i] = window.narrow(2, 1, c.d_conv - 1)?.contiguous()?;
            let u = conv.silu()?; // (b, di)
            let xdbl = linear(&u, &m.x_proj)?;
            let dt = xdbl.narrow(1, 0, m.dt_rank)?;
            let bm = xdbl.narrow(1, m.dt_rank, m.d_state)?;
            let cm = xdbl.narrow(1, m.dt_rank + m.d_state, m.d_state)?;
            let delta = softplus(&linear(&dt, &m.dt_proj_w)?.broadcast_add(&m.dt_proj_b)?)?;
            let a = m.a()?; // (di, n)
            let da = delta.unsqueeze(2)?.broadcast_mul(&a.unsqueeze(0)?)?.exp()?;
            let dbu = (&delta * &u)?
                .unsqueeze(2)?
                .broadcast_mul(&bm.unsqueeze(1)?)?;
            let hs = ((da * &state.ssm[i])? + dbu)?;
            let y =
                (hs.broadcast_mul(&cm.unsqueeze(1)?)?.sum(D::Minus1)? + u.broadcast_mul(&m.d)?)?;
            state.ssm[i] = hs;
            let y = (y * z.silu()?)?;
            residual = (residual + linear(&y, &m.out_proj)?)?;
        }
        state.pos += 1;
        let h = rms_norm(&residual, &self.norm_f, c.norm_eps)?;
        linear(&h, &self.embedding)
    }
}
