//! Mamba-3's mixer in the CPU fast step ([`crate::decode`]): in_proj of every token together,
//! then token by token A, dt and the trapezoid's coefficients per head, B and C normed and
//! biased per head and rank, the phases advanced and q, k rotated, the state updated from this
//! token's and the last one's v k^T, y = h q + D v gated (and normed), MIMO's output sum;
//! out_proj. Same arithmetic as [`Mamba3::step`](super::Mamba3::step).

use std::f32::consts::PI;

use candle_core::Result;

use super::reference::Dims;
use super::Mamba3;
use crate::kernels::rows::{fast_mixer, rms_norm, silu, softplus, RunArgs, Weights};
use crate::mixers::mamba2::ssd_cpu::dot;

/// A Mamba-3 layer's weights for the step.
pub(crate) struct Step {
    w: Weights,
    d: Dims,
}

impl Step {
    pub(crate) fn new(m: &Mamba3, int8: bool) -> Result<Step> {
        Ok(Step {
            w: Weights::new(m.w.named_with_init(), int8)?,
            d: m.dims,
        })
    }

    /// Turns the first S pairs of `x` (N) by `phi` (S): SISO's (2i, 2i + 1), MIMO's (i, i + N/2).
    #[inline(always)]
    fn rotate(&self, x: &mut [f32], phi: &[f32]) {
        let half = x.len() / 2;
        for (i, &f) in phi.iter().enumerate() {
            let (sin, cos) = f.sin_cos();
            let (ia, ib) = match self.d.mimo_rank {
                0 => (2 * i, 2 * i + 1),
                _ => (i, i + half),
            };
            let (a, b) = (x[ia], x[ib]);
            x[ia] = a * cos - b * sin;
            x[ib] = a * sin + b * cos;
        }
    }

    /// Each token in turn: `conv` holds the phases (H x S), the last token's rotated k (R x H x
    /// N) and v (R x H x P); `ssm` the state (H, P, N).
    #[inline(always)]
    fn run_body(&self, a: RunArgs) -> Result<()> {
        let (hs, carry, ssm, sc, out, threads) = (a.h, a.conv, a.ssm, a.scratch, a.out, a.threads);
        let d = &self.d;
        let (h, p, n, g, r, s) = d.sizes();
        let di = d.d_inner();
        let tokens = hs.len();
        self.w.with(|m| {
            let (dt_bias, d_skip) = (m.vec("dt_bias")?, m.vec("D")?);
            let (b_bias, c_bias) = (m.vec("B_bias")?, m.vec("C_bias")?);
            let (b_norm, c_norm) = (m.vec("B_norm.weight")?, m.vec("C_norm.weight")?);
            let mimo = |name: &str| match d.mimo_rank {
                0 => Ok(None),
                _ => m.vec(name).map(Some),
            };
            let (mimo_x, mimo_z, mimo_o) = (mimo("mimo_x")?, mimo("mimo_z")?, mimo("mimo_o")?);
            let norm = match d.outproj_norm {
                true => Some(m.vec("norm.weight")?),
                false => None,
            };
            let [proj, o] = sc.take([(tokens, d.in_proj_rows()), (tokens, di)]);
            m.mat("in_proj.weight")?.matmul(hs, proj, threads);
            let (phi, rest) = carry.split_at_mut(h * s);
            let (k_last, v_last) = rest.split_at_mut(r * h * n);
            let (mut q, mut k, mut v) = (
                vec![0f32; r * h * n],
                vec![0f32; r * h * n],
                vec![0f32; r * h * p],
            );
            let mut yr = vec![0f32; p];
            for (row, o) in proj.iter().zip(o.iter_mut()) {
                let (z, rest) = row.split_at(di);
                let (x, rest) = rest.split_at(di);
                let (bm, rest) = rest.split_at(n * g * r);
                let (cm, rest) = rest.split_at(n * g * r);
                let (dd_dt, rest) = rest.split_at(h);
                let (dd_a, rest) = rest.split_at(h);
                let (trap, theta) = rest.split_at(h);
                // q, k per rank and head: the group's B, C normed, plus the head's bias.
                for ri in 0..r {
                    for hi in 0..h {
                        let gi = hi / (h / g);
                        let at = (ri * g + gi) * n;
                        let bias = (hi * r + ri) * n;
                        let dst = (ri * h + hi) * n;
                        let kb = rms_norm(&bm[at..at + n], b_norm, 1e-5);
                        let qc = rms_norm(&cm[at..at + n], c_norm, 1e-5);
                        for j in 0..n {
                            k[dst + j] = kb[j] + b_bias[bias + j];
                            q[dst + j] = qc[j] + c_bias[bias + j];
                        }
                    }
                }
                o.fill(0.0);
                for hi in 0..h {
                    let f = match d.heavy_tail {
                        true => match dd_a[hi] >= 0.0 {
                            true => 1.0 + dd_a[hi],
                            false => 1.0 / (1.0 - dd_a[hi]),
                        },
                        false => softplus(dd_a[hi]),
                    };
                    let a = (-f).min(-d.a_floor as f32);
                    let dt = softplus(dd_dt[hi] + dt_bias[hi]);
                    let lam = 1.0 / (1.0 + (-trap[hi]).exp());
                    let alpha = (a * dt).exp();
                    let (beta, gamma) = ((1.0 - lam) * dt * alpha, lam * dt);
                    let ph = &mut phi[hi * s..(hi + 1) * s];
                    for (f, &t) in ph.iter_mut().zip(theta) {
                        *f += PI * t.tanh() * dt;
                    }
                    for ri in 0..r {
                        let at = (ri * h + hi) * n;
                        self.rotate(&mut k[at..at + n], ph);
                        self.rotate(&mut q[at..at + n], ph);
                        for pi in 0..p {
                            let scale = mimo_x.map_or(1.0, |w| w[(hi * r + ri) * p + pi]);
                            v[(ri * h + hi) * p + pi] = x[hi * p + pi] * scale;
                        }
                    }
                    // h = alpha h + beta sum_r v' k'^T + gamma sum_r v k^T, row by row.
                    let state = &mut ssm[hi * p * n..(hi + 1) * p * n];
                    for (pi, srow) in state.chunks_exact_mut(n).enumerate() {
                        srow.iter_mut().for_each(|x| *x *= alpha);
                        for ri in 0..r {
                            let (at_k, at_v) = ((ri * h + hi) * n, (ri * h + hi) * p + pi);
                            let (u_last, u) = (beta * v_last[at_v], gamma * v[at_v]);
                            let (kl, kc) = (&k_last[at_k..at_k + n], &k[at_k..at_k + n]);
                            for ((x, &a), &b) in srow.iter_mut().zip(kl).zip(kc) {
                                *x += u_last * a + u * b;
                            }
                        }
                    }
                    // y_r = h q_r + D v_r, gated (and normed) per rank, summed through mimo_o.
                    for ri in 0..r {
                        let at_q = (ri * h + hi) * n;
                        for (pi, y) in yr.iter_mut().enumerate() {
                            let srow = &state[pi * n..(pi + 1) * n];
                            *y = dot(srow, &q[at_q..at_q + n])
                                + d_skip[hi] * v[(ri * h + hi) * p + pi];
                        }
                        if let Some(w) = norm {
                            let normed = rms_norm(&yr, &w[hi * p..(hi + 1) * p], 1e-5);
                            yr.copy_from_slice(&normed);
                        }
                        for pi in 0..p {
                            let at = (hi * r + ri) * p + pi;
                            let zr = z[hi * p + pi] * mimo_z.map_or(1.0, |w| w[at]);
                            o[hi * p + pi] += yr[pi] * silu(zr) * mimo_o.map_or(1.0, |w| w[at]);
                        }
                    }
                }
                k_last.copy_from_slice(&k);
                v_last.copy_from_slice(&v);
            }
            m.mat("out_proj.weight")?.matmul(o, out, threads);
            Ok(())
        })
    }
}

fast_mixer!(Step);
