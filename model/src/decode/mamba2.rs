//! Mamba-2's mixer in the CPU fast step ([`super::host`]): from in_proj's rows [z | xBC | dt]
//! to y, per head a scalar decay over a (head_dim, n) state, then the gated RMSNorm. Same
//! arithmetic as [`Mixer2::step`](crate::mamba2::Mixer2::step).

use super::host::{conv_silu, rms_norm, silu, softplus, LayerView, Scratch, Weights};
use crate::mamba2::ssd_cpu::dot;

/// Mamba-2's own vectors.
pub(super) struct Mamba2View<'a> {
    /// (heads)
    pub(super) dt_bias: &'a [f32],
    /// The gated norm's weight, (di)
    pub(super) norm: &'a [f32],
}

impl Weights {
    /// One layer's mixer for each token in turn: `proj` rows of in_proj, `conv` the window
    /// (conv_dim, k - 1), `ssm` the state (heads, head_dim, n); y (di per token) out.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn mamba2(
        &self,
        l: &LayerView,
        m: &Mamba2View,
        proj: &[Vec<f32>],
        conv: &mut [f32],
        ssm: &mut [f32],
        sc: &mut Scratch,
        y: &mut [Vec<f32>],
    ) {
        let c = &self.cfg;
        let (di, heads, p, groups, n) =
            (c.d_inner(), c.n_heads(), c.head_dim, c.n_groups, c.d_state);
        let (lo, hi) = (c.dt_limit.0 as f32, c.dt_limit.1 as f32);
        let (cd, eps) = (c.conv_dim(), c.norm_eps as f32);
        let xbc = &mut sc.xbc;
        for (row, y) in proj.iter().zip(y.iter_mut()) {
            let (z, rest) = row.split_at(di);
            let (xbc_in, dt) = rest.split_at(cd);
            conv_silu(l, xbc_in, conv, xbc);
            let (x, bc) = xbc.split_at(di);
            let (bm, cm) = bc.split_at(groups * n);
            // h = exp(dt A) h + dt x B^T;  y = h C + D x, head by head.
            for hd in 0..heads {
                let dt = softplus(dt[hd] + m.dt_bias[hd]).clamp(lo, hi);
                let decay = (dt * l.a[hd]).exp();
                let g = hd / (heads / groups);
                let (b, cv) = (&bm[g * n..(g + 1) * n], &cm[g * n..(g + 1) * n]);
                for ch in hd * p..(hd + 1) * p {
                    let u = dt * x[ch];
                    let row = &mut ssm[ch * n..(ch + 1) * n];
                    for (h, &bj) in row.iter_mut().zip(b) {
                        *h = decay * *h + u * bj;
                    }
                    // In lanes: one running sum would be a chain of n dependent adds.
                    y[ch] = dot(row, cv) + l.d_skip[hd] * x[ch];
                }
            }
            // rms_norm over each group of di / G channels of y * silu(z), times the weight.
            y.iter_mut().zip(z).for_each(|(y, &z)| *y *= silu(z));
            let width = di / groups;
            for (yg, wg) in y.chunks_mut(width).zip(m.norm.chunks(width)) {
                let normed = rms_norm(yg, wg, eps);
                yg.copy_from_slice(&normed);
            }
        }
    }
}
