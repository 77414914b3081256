//! Mamba-1's mixer in the CPU fast step ([`crate::decode`]): in_proj to [x | z], conv + SiLU,
//! x_proj, dt_proj, the selective scan gated by silu(z), out_proj; the tokens of a short
//! prompt go through each projection together and through the conv and the scan one after
//! another. Same arithmetic as [`Mamba1::step`](super::Mamba1::step).

use candle_core::Result;

use super::Mamba1;
use crate::kernels::rows::{conv_silu, fast_mixer, silu, softplus, RunArgs, Weights};
use crate::kernels::scan::exp_sub_inplace;

/// A Mamba-1 layer's weights for the step, with A = -exp(A_log) (di, n) computed once.
pub(crate) struct Step {
    w: Weights,
    a: Vec<f32>,
    d_inner: usize,
    d_state: usize,
    dt_rank: usize,
}

impl Step {
    pub(crate) fn new(m: &Mamba1, int8: bool) -> Result<Step> {
        Ok(Step {
            w: Weights::new(m.p.named_with_init(), int8)?,
            a: m.a()?.flatten_all()?.to_vec1()?,
            d_inner: m.d_inner,
            d_state: m.d_state,
            dt_rank: m.dt_rank,
        })
    }

    #[inline(always)]
    fn run_body(&self, a: RunArgs) -> Result<()> {
        let (h, conv, ssm, sc, out, threads) = (a.h, a.conv, a.ssm, a.scratch, a.out, a.threads);
        let (di, n, r, tokens) = (self.d_inner, self.d_state, self.dt_rank, h.len());
        self.w.with(|m| {
            let (conv_w, conv_b) = (m.vec("conv1d.weight")?, m.vec("conv1d.bias")?);
            let (dt_b, d_skip) = (m.vec("dt_proj.bias")?, m.vec("D")?);
            let [xz, u, xdbl, dts, delta, y, decay] = sc.take([
                (tokens, 2 * di),
                (tokens, di),
                (tokens, r + 2 * n),
                (tokens, r),
                (tokens, di),
                (tokens, di),
                (1, di * n),
            ]);
            let decay = &mut decay[0];
            m.mat("in_proj.weight")?.matmul(h, xz, threads);
            for (xz, u) in xz.iter().zip(u.iter_mut()) {
                conv_silu(conv_w, conv_b, &xz[..di], conv, u);
            }
            m.mat("x_proj.weight")?.matmul(u, xdbl, 1);
            for (dt, row) in dts.iter_mut().zip(xdbl.iter()) {
                dt.copy_from_slice(&row[..r]);
            }
            m.mat("dt_proj.weight")?.matmul(dts, delta, 1);
            for t in 0..tokens {
                let (bm, cm) = xdbl[t][r..].split_at(n);
                let (delta, u, y) = (&mut delta[t][..], &u[t][..], &mut y[t][..]);
                // The gate silu(z), into y until the scan's output multiplies it.
                y.iter_mut()
                    .zip(&xz[t][di..])
                    .for_each(|(y, &z)| *y = silu(z));
                delta
                    .iter_mut()
                    .zip(dt_b)
                    .for_each(|(d, b)| *d = softplus(*d + b));
                // The layer's decays exp(dt A) in one vectorised pass (one exp per state
                // element: as a scalar loop they were a quarter of the step).
                for ch in 0..di {
                    for j in 0..n {
                        decay[ch * n + j] = delta[ch] * self.a[ch * n + j];
                    }
                }
                exp_sub_inplace(decay, 0.0);
                for ch in 0..di {
                    let du = delta[ch] * u[ch];
                    let da = &decay[ch * n..(ch + 1) * n];
                    let hrow = &mut ssm[ch * n..(ch + 1) * n];
                    let mut acc = 0f32;
                    for j in 0..n {
                        hrow[j] = da[j] * hrow[j] + du * bm[j];
                        acc += hrow[j] * cm[j];
                    }
                    y[ch] *= acc + d_skip[ch] * u[ch];
                }
            }
            m.mat("out_proj.weight")?.matmul(y, out, threads);
            Ok(())
        })
    }
}

fast_mixer!(Step);
