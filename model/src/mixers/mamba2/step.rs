//! Mamba-2's mixer in the CPU fast step ([`crate::decode`]): in_proj to [z | xBC | dt], conv +
//! SiLU, per head a scalar decay over a (head_dim, n) state, the gated RMSNorm, out_proj. Same
//! arithmetic as [`Mamba2::step`](super::Mamba2::step).

use candle_core::Result;

use super::ssd_cpu::dot;
use super::{Dims, Mamba2};
use crate::kernels::rows::{conv_silu, fast_mixer, rms_norm, silu, softplus, RunArgs, Weights};

/// A Mamba-2 layer's weights for the step, with A = -exp(A_log) per head computed once.
pub(crate) struct Step {
    w: Weights,
    a: Vec<f32>,
    dims: Dims,
}

impl Step {
    pub(crate) fn new(m: &Mamba2, int8: bool) -> Result<Step> {
        Ok(Step {
            w: Weights::new(m.p.named_with_init(), int8)?,
            a: m.p.a_log.exp()?.neg()?.to_vec1()?,
            dims: m.dims,
        })
    }

    /// Each token in turn: `conv` the window (conv_dim, k - 1), `ssm` the state (heads,
    /// head_dim, n).
    #[inline(always)]
    fn run_body(&self, a: RunArgs) -> Result<()> {
        let (h, conv, ssm, sc, out, threads) = (a.h, a.conv, a.ssm, a.scratch, a.out, a.threads);
        let (di, heads, p, groups, n) = self.dims.sizes();
        let (lo, hi) = (self.dims.dt_limit.0 as f32, self.dims.dt_limit.1 as f32);
        let (cd, eps) = (self.dims.conv_dim(), self.dims.norm_eps as f32);
        let tokens = h.len();
        self.w.with(|m| {
            let (conv_w, conv_b) = (m.vec("conv1d.weight")?, m.vec("conv1d.bias")?);
            let (dt_bias, d_skip, norm) = (m.vec("dt_bias")?, m.vec("D")?, m.vec("norm.weight")?);
            let [proj, xbc, y] = sc.take([(tokens, di + cd + heads), (1, cd), (tokens, di)]);
            let xbc = &mut xbc[0];
            m.mat("in_proj.weight")?.matmul(h, proj, threads);
            for (row, y) in proj.iter().zip(y.iter_mut()) {
                let (z, rest) = row.split_at(di);
                let (xbc_in, dt) = rest.split_at(cd);
                conv_silu(conv_w, conv_b, xbc_in, conv, xbc);
                let (x, bc) = xbc.split_at(di);
                let (bm, cm) = bc.split_at(groups * n);
                // h = exp(dt A) h + dt x B^T;  y = h C + D x, head by head.
                for hd in 0..heads {
                    let dt = softplus(dt[hd] + dt_bias[hd]).clamp(lo, hi);
                    let decay = (dt * self.a[hd]).exp();
                    let g = hd / (heads / groups);
                    let (b, cv) = (&bm[g * n..(g + 1) * n], &cm[g * n..(g + 1) * n]);
                    for ch in hd * p..(hd + 1) * p {
                        let u = dt * x[ch];
                        let row = &mut ssm[ch * n..(ch + 1) * n];
                        for (h, &bj) in row.iter_mut().zip(b) {
                            *h = decay * *h + u * bj;
                        }
                        // In lanes: one running sum would be a chain of n dependent adds.
                        y[ch] = dot(row, cv) + d_skip[hd] * x[ch];
                    }
                }
                // rms_norm over each group of di / G channels of y * silu(z), times the weight.
                y.iter_mut().zip(z).for_each(|(y, &z)| *y *= silu(z));
                let width = di / groups;
                for (yg, wg) in y.chunks_mut(width).zip(norm.chunks(width)) {
                    let normed = rms_norm(yg, wg, eps);
                    yg.copy_from_slice(&normed);
                }
            }
            m.mat("out_proj.weight")?.matmul(y, out, threads);
            Ok(())
        })
    }
}

fast_mixer!(Step);
