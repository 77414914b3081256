//! Generation with Mamba-2: a prompt runs through the chunked forward, which also returns each
//! layer's state after it; then each token goes through the recurrent form, O(1) in time and
//! memory: per layer a conv window (b, conv_dim, d_conv - 1) and an SSD state (b, H, P, N).

use candle_core::{Result, Tensor, D};

use super::{gated_rms_norm, Mamba2Config, Mamba2LM, Mixer2};
use crate::layers::conv::conv_step;
use crate::layers::norm::rms_norm;
use crate::layers::ops::linear;

/// The recurrent state of a batch of sequences (each after its own prompt).
#[derive(Clone, Debug)]
pub struct Mamba2State {
    /// Per layer: conv window, SSD state.
    layers: Vec<(Tensor, Tensor)>,
}

impl Mamba2LM {
    /// Runs each prompt (at least one token) through the forward and returns their states as
    /// one batch, with each prompt's next-token logits.
    pub fn prefill(&self, prompts: &[&[u32]]) -> Result<(Mamba2State, Vec<Vec<f32>>)> {
        let c = &self.cfg;
        let mut layers: Vec<(Vec<Tensor>, Vec<Tensor>)> = vec![Default::default(); c.n_layer];
        let mut logits = Vec::with_capacity(prompts.len());
        for ids in prompts {
            if ids.is_empty() {
                candle_core::bail!("prefill: empty prompt")
            }
            let l = ids.len();
            let ids = Tensor::from_slice(ids, (1, l), self.embedding.device())?;
            let mut h = self
                .embedding
                .index_select(&ids.flatten_all()?, 0)?
                .unsqueeze(0)?;
            for ((norm, mixer), st) in self.layers.iter().zip(layers.iter_mut()) {
                let x = rms_norm(&h, norm, c.norm_eps)?;
                let (out, state) = mixer.run(&x, c, None, true)?;
                let (conv, ssm) =
                    state.ok_or_else(|| candle_core::Error::Msg("no state".into()))?;
                st.0.push(conv);
                st.1.push(ssm);
                h = (h + out)?;
            }
            let last = rms_norm(
                &h.narrow(1, l - 1, 1)?.squeeze(1)?,
                &self.norm_f,
                c.norm_eps,
            )?;
            logits.push(linear(&last, &self.head)?.squeeze(0)?.to_vec1::<f32>()?);
        }
        let layers = layers
            .iter()
            .map(|(cv, s)| Ok((Tensor::cat(cv, 0)?, Tensor::cat(s, 0)?)))
            .collect::<Result<_>>()?;
        Ok((Mamba2State { layers }, logits))
    }

    /// Feeds `ids[i]` to sequence `i` and returns each sequence's next-token logits; equal to
    /// the last position of [`Mamba2LM::forward`] over the whole prefix.
    pub fn step(&self, ids: &[u32], st: &mut Mamba2State) -> Result<Vec<Vec<f32>>> {
        let c = &self.cfg;
        let ids = Tensor::from_slice(ids, ids.len(), self.embedding.device())?;
        let mut h = self.embedding.index_select(&ids, 0)?; // (b, d)
        for ((norm, mixer), (conv, ssm)) in self.layers.iter().zip(st.layers.iter_mut()) {
            let x = rms_norm(&h, norm, c.norm_eps)?;
            h = (h + mixer.step(&x, c, conv, ssm)?)?;
        }
        let h = rms_norm(&h, &self.norm_f, c.norm_eps)?;
        linear(&h, &self.head)?.to_vec2::<f32>()
    }
}

impl Mixer2 {
    /// One position per sequence: h (b, d_model) normalised -> (b, d_model); the conv window
    /// and SSD state advance by one.
    fn step(
        &self,
        h: &Tensor,
        c: &Mamba2Config,
        conv: &mut Tensor,
        ssm: &mut Tensor,
    ) -> Result<Tensor> {
        let b = h.dim(0)?;
        let (di, hn, p, g, n) = (c.d_inner(), c.n_heads(), c.head_dim, c.n_groups, c.d_state);
        let zxbcdt = linear(h, &self.in_proj)?;
        let z = zxbcdt.narrow(1, 0, di)?;
        let xbc = zxbcdt.narrow(1, di, c.conv_dim())?;
        let dt = self.dt(&zxbcdt.narrow(1, di + c.conv_dim(), hn)?, c)?; // (b, H)
        let xbc = conv_step(conv, &xbc, &self.conv_w, &self.conv_b)?.silu()?;
        let x = xbc.narrow(1, 0, di)?.reshape((b, hn, p))?;
        let per = hn / g;
        let heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, g, 1, n))?
                .broadcast_as((b, g, per, n))?
                .reshape((b, hn, 1, n))
        };
        let bm = heads(xbc.narrow(1, di, g * n)?)?;
        let cm = heads(xbc.narrow(1, di + g * n, g * n)?)?;
        // h = exp(dt A) h + dt x B^T;  y = h C + D x
        let a = self.a_log.exp()?.neg()?;
        let decay = dt.broadcast_mul(&a)?.exp()?.reshape((b, hn, 1, 1))?;
        let dx = x.broadcast_mul(&dt.unsqueeze(2)?)?.unsqueeze(3)?; // (b, H, P, 1)
        *ssm = (ssm.broadcast_mul(&decay)? + dx.broadcast_mul(&bm)?)?;
        let y = ssm.broadcast_mul(&cm)?.sum(D::Minus1)?; // (b, H, P)
        let y = (y + x.broadcast_mul(&self.d.reshape((1, hn, 1))?)?)?.reshape((b, di))?;
        let y = gated_rms_norm(&y, &z, &self.norm, di / g, c.norm_eps)?;
        linear(&y, &self.out_proj)
    }
}
