//! Mamba-3's trapezoidal recurrence as one CPU op with its own backward (training's form on
//! the CPU). Per batch row and head, with the coefficients alpha, beta, gamma of each position
//! (alpha and beta 0 where a document starts) and R ranks of q, k (N) and v (P):
//!
//! ```text
//! W_t = sum_r v_{t,r} k_{t,r}^T
//! h_t = alpha_t h_{t-1} + beta_t W_{t-1} + gamma_t W_t        (P, N)
//! y_{t,r} = h_t q_{t,r}
//! ```
//!
//! With the `cuda` feature the same op runs on NVIDIA GPUs (`trap_cuda.rs`, `trap.cu`: one
//! warp per batch row and head, the same recurrence and backward).
//!
//! Work splits by (batch row, head), each task sequential in time and writing its own buffers:
//! the same bits at any thread count. The backward keeps the state every [`SPAN`] positions and
//! recomputes those between, so no (b, l, H, P, N) tensor is ever held. In the backward, with
//! G_t the gradient of h_t (from y_t and from h_{t+1} = alpha_{t+1} h_t + ...):
//!
//! ```text
//! G_t      = alpha_{t+1} G_{t+1} + sum_r dy_{t,r} q_{t,r}^T
//! dq_{t,r} = h_t^T dy_{t,r}
//! dW_t     = gamma_t G_t + beta_{t+1} G_{t+1}:  dv_{t,r} = dW_t k_{t,r}, dk_{t,r} = dW_t^T v_{t,r}
//! dalpha_t = <G_t, h_{t-1}>,  dbeta_t = <G_t, W_{t-1}>,  dgamma_t = <G_t, W_t>
//! ```

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::layers::ops::{contiguous, read_cpu};
use crate::mixers::mamba2::ssd_cpu::{dot, interleave};

/// Positions between the states the backward keeps.
const SPAN: usize = 16;

/// y (b, l, H, R, P) for qk (b, l, H, 2, R, N) (q then k of each rank), v (b, l, H, R, P) and
/// coef (b, l, H, 3) (alpha, beta, gamma); f32 on the CPU.
pub fn trapezoid(qk: &Tensor, v: &Tensor, coef: &Tensor) -> Result<Tensor> {
    let dims = Dims::of(qk, v, coef)?;
    qk.contiguous()?
        .apply_op3(&v.contiguous()?, &coef.contiguous()?, TrapOp { dims })
}

/// The state after the last position, (b, H, P, N), of the same recurrence (a prefill's).
pub fn final_state(qk: &Tensor, v: &Tensor, coef: &Tensor) -> Result<Tensor> {
    let op = TrapOp {
        dims: Dims::of(qk, v, coef)?,
    };
    let Dims { b, h, p, n, .. } = op.dims;
    let (qk, v, coef) = (qk.contiguous()?, v.contiguous()?, coef.contiguous()?);
    let reads = [&qk, &v, &coef].map(|t| read_cpu(t, "mamba3: input"));
    let i = inputs([
        reads[0].storage()?,
        reads[1].storage()?,
        reads[2].storage()?,
    ])?;
    let states: Vec<Vec<f32>> = (0..b * h)
        .into_par_iter()
        .map(|task| op.forward_task(&i, task / h, task % h).1)
        .collect();
    Tensor::from_vec(states.concat(), (b, h, p, n), qk.device())
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    l: usize,
    h: usize,
    r: usize,
    p: usize,
    n: usize,
}

impl Dims {
    /// (b, l, H, R, P, N).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    fn sizes(&self) -> (usize, usize, usize, usize, usize, usize) {
        (self.b, self.l, self.h, self.r, self.p, self.n)
    }

    fn of(qk: &Tensor, v: &Tensor, coef: &Tensor) -> Result<Dims> {
        let d = qk.dims();
        let vd = v.dims();
        let ok = d.len() == 6 && d[3] == 2 && vd.len() == 5 && vd[..4] == [d[0], d[1], d[2], d[4]];
        if !ok || coef.dims() != [d[0], d[1], d[2], 3] {
            candle_core::bail!("mamba3: shapes qk {d:?} v {vd:?} coef {:?}", coef.dims())
        }
        Ok(Dims {
            b: d[0],
            l: d[1],
            h: d[2],
            r: d[4],
            p: vd[4],
            n: d[5],
        })
    }
}

#[derive(Clone)]
struct TrapOp {
    dims: Dims,
}

struct Inputs<'a> {
    qk: &'a [f32],
    v: &'a [f32],
    coef: &'a [f32],
}

/// One position of one (batch row, head): q and k (R x N each), v (R x P), coefficients.
struct At<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    alpha: f32,
    beta: f32,
    gamma: f32,
}

impl TrapOp {
    fn at<'a>(&self, i: &Inputs<'a>, bi: usize, hi: usize, t: usize) -> At<'a> {
        let Dims { l, h, r, p, n, .. } = self.dims;
        let row = (bi * l + t) * h + hi;
        let qk = &i.qk[row * 2 * r * n..][..2 * r * n];
        let c = &i.coef[row * 3..][..3];
        At {
            q: &qk[..r * n],
            k: &qk[r * n..],
            v: &i.v[row * r * p..][..r * p],
            alpha: c[0],
            beta: c[1],
            gamma: c[2],
        }
    }

    /// next = alpha prev + beta W_{t-1} + gamma W_t, W of the ranks' v k^T.
    #[inline(always)]
    fn advance(&self, s: &At, before: Option<&At>, prev: &[f32], next: &mut [f32]) {
        let Dims { r, p, n, .. } = self.dims;
        for (pi, (row, old)) in next
            .chunks_exact_mut(n)
            .zip(prev.chunks_exact(n))
            .enumerate()
        {
            for (hv, &ov) in row.iter_mut().zip(old) {
                *hv = s.alpha * ov;
            }
            for ri in 0..r {
                let u = s.gamma * s.v[ri * p + pi];
                for (hv, &kv) in row.iter_mut().zip(&s.k[ri * n..][..n]) {
                    *hv += u * kv;
                }
                if let Some(b) = before {
                    let u = s.beta * b.v[ri * p + pi];
                    for (hv, &kv) in row.iter_mut().zip(&b.k[ri * n..][..n]) {
                        *hv += u * kv;
                    }
                }
            }
        }
    }

    /// y (l, R, P) of batch row `bi`, head `hi`, and the state after the last position.
    fn forward_task(&self, i: &Inputs, bi: usize, hi: usize) -> (Vec<f32>, Vec<f32>) {
        let Dims { l, r, p, n, .. } = self.dims;
        let (mut prev, mut state) = (vec![0f32; p * n], vec![0f32; p * n]);
        let mut y = vec![0f32; l * r * p];
        for t in 0..l {
            let s = self.at(i, bi, hi, t);
            let before = (t > 0).then(|| self.at(i, bi, hi, t - 1));
            self.advance(&s, before.as_ref(), &prev, &mut state);
            for ri in 0..r {
                let q = &s.q[ri * n..][..n];
                for (yv, row) in y[(t * r + ri) * p..][..p]
                    .iter_mut()
                    .zip(state.chunks_exact(n))
                {
                    *yv = dot(row, q);
                }
            }
            std::mem::swap(&mut prev, &mut state);
        }
        (y, prev)
    }

    /// Gradients of batch row `bi`, head `hi` from dy (b, l, H, R, P): dqk (l, 2RN), dv (l,
    /// RP), dcoef (l, 3).
    fn backward_task(&self, i: &Inputs, dy: &[f32], bi: usize, hi: usize) -> Grads {
        let Dims { l, h, r, p, n, .. } = self.dims;
        let pn = p * n;
        let spans = l.div_ceil(SPAN);
        let mut kept = vec![0f32; spans * pn];
        let (mut prev, mut state) = (vec![0f32; pn], vec![0f32; pn]);
        for t in 0..l {
            if t % SPAN == 0 {
                kept[t / SPAN * pn..][..pn].copy_from_slice(&prev);
            }
            let before = (t > 0).then(|| self.at(i, bi, hi, t - 1));
            self.advance(&self.at(i, bi, hi, t), before.as_ref(), &prev, &mut state);
            std::mem::swap(&mut prev, &mut state);
        }
        let mut out = Grads {
            dqk: vec![0f32; l * 2 * r * n],
            dv: vec![0f32; l * r * p],
            dcoef: vec![0f32; l * 3],
        };
        // G_{t+1} and the coefficients of t + 1 (none past the end).
        let (mut g_next, mut g) = (vec![0f32; pn], vec![0f32; pn]);
        let (mut alpha_next, mut beta_next) = (0f32, 0f32);
        let mut states = vec![0f32; (SPAN + 1) * pn];
        let mut dw = vec![0f32; pn];
        for span in (0..spans).rev() {
            let (t0, t1) = (span * SPAN, ((span + 1) * SPAN).min(l));
            states[..pn].copy_from_slice(&kept[span * pn..][..pn]);
            for t in t0..t1 {
                let (before, after) = states.split_at_mut((t - t0 + 1) * pn);
                let b = (t > 0).then(|| self.at(i, bi, hi, t - 1));
                let s = self.at(i, bi, hi, t);
                self.advance(&s, b.as_ref(), &before[(t - t0) * pn..], &mut after[..pn]);
            }
            for t in (t0..t1).rev() {
                let s = self.at(i, bi, hi, t);
                let hprev = &states[(t - t0) * pn..][..pn];
                let hcur = &states[(t - t0 + 1) * pn..][..pn];
                let dyt = &dy[((bi * l + t) * h + hi) * r * p..][..r * p];
                let (dq, dk) = out.dqk[t * 2 * r * n..][..2 * r * n].split_at_mut(r * n);
                // G_t = alpha_{t+1} G_{t+1} + sum_r dy q^T;  dq = h_t^T dy.
                for (gv, &gn) in g.iter_mut().zip(&g_next) {
                    *gv = alpha_next * gn;
                }
                for ri in 0..r {
                    let q = &s.q[ri * n..][..n];
                    let dqr = &mut dq[ri * n..][..n];
                    for pi in 0..p {
                        let d = dyt[ri * p + pi];
                        let grow = &mut g[pi * n..][..n];
                        let hrow = &hcur[pi * n..][..n];
                        for k in 0..n {
                            grow[k] += d * q[k];
                            dqr[k] += d * hrow[k];
                        }
                    }
                }
                // dW_t = gamma_t G_t + beta_{t+1} G_{t+1}.
                for ((w, &gv), &gn) in dw.iter_mut().zip(&g).zip(&g_next) {
                    *w = s.gamma * gv + beta_next * gn;
                }
                let dvt = &mut out.dv[t * r * p..][..r * p];
                let before = (t > 0).then(|| self.at(i, bi, hi, t - 1));
                let (mut dalpha, mut dbeta, mut dgamma) = (0f32, 0f32, 0f32);
                for pi in 0..p {
                    let (grow, wrow) = (&g[pi * n..][..n], &dw[pi * n..][..n]);
                    dalpha += dot(grow, &hprev[pi * n..][..n]);
                    for ri in 0..r {
                        let k = &s.k[ri * n..][..n];
                        let vv = s.v[ri * p + pi];
                        dvt[ri * p + pi] = dot(wrow, k);
                        let dkr = &mut dk[ri * n..][..n];
                        for (d, &w) in dkr.iter_mut().zip(wrow) {
                            *d += w * vv;
                        }
                        dgamma += vv * dot(grow, k);
                        if let Some(b) = &before {
                            dbeta += b.v[ri * p + pi] * dot(grow, &b.k[ri * n..][..n]);
                        }
                    }
                }
                out.dcoef[t * 3..][..3].copy_from_slice(&[dalpha, dbeta, dgamma]);
                std::mem::swap(&mut g, &mut g_next);
                (alpha_next, beta_next) = (s.alpha, s.beta);
            }
        }
        out
    }
}

/// The backward on a GPU: (qk, v and dy stacked, coef) -> the flat gradients.
struct TrapBwd {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    dims: Dims,
}

impl CustomOp3 for TrapBwd {
    fn name(&self) -> &'static str {
        "mamba3-trapezoid-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("mamba3: the CPU's backward is the op's own")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::trap_cuda::backward(self.dims.sizes(), (s1, l1), (s2, l2), (s3, l3))
    }
}

/// One task's gradients (see [`TrapOp::backward_task`]).
struct Grads {
    dqk: Vec<f32>,
    dv: Vec<f32>,
    dcoef: Vec<f32>,
}

fn inputs<'a>(s: [(&'a CpuStorage, &'a Layout); 3]) -> Result<Inputs<'a>> {
    Ok(Inputs {
        qk: contiguous::<f32>(s[0].0, s[0].1, "mamba3: q, k")?,
        v: contiguous::<f32>(s[1].0, s[1].1, "mamba3: v")?,
        coef: contiguous::<f32>(s[2].0, s[2].1, "mamba3: coefficients")?,
    })
}

impl CustomOp3 for TrapOp {
    fn name(&self) -> &'static str {
        "mamba3-trapezoid"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let i = inputs([(s1, l1), (s2, l2), (s3, l3)])?;
        let Dims { b, l, h, r, p, .. } = self.dims;
        let ys: Vec<Vec<f32>> = (0..b * h)
            .into_par_iter()
            .map(|task| self.forward_task(&i, task / h, task % h).0)
            .collect();
        let y = interleave(&ys, l, h, r * p);
        Ok((CpuStorage::F32(y), Shape::from((b, l, h, r, p))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::trap_cuda::forward(self.dims.sizes(), (s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        qk: &Tensor,
        v: &Tensor,
        coef: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Dims { b, l, h, r, p, n } = self.dims;
        if qk.device().is_cuda() {
            // The kernels' flat [dqk | dv | dcoef], from a second op (v and dy stacked).
            let vdy = Tensor::stack(&[v, grad], 0)?.contiguous()?;
            let flat = qk.apply_op3_no_bwd(&vdy, coef, &TrapBwd { dims: self.dims })?;
            let (lqk, lv) = (b * l * h * 2 * r * n, b * l * h * r * p);
            return Ok((
                Some(flat.narrow(0, 0, lqk)?.reshape(qk.dims())?),
                Some(flat.narrow(0, lqk, lv)?.reshape(v.dims())?),
                Some(
                    flat.narrow(0, lqk + lv, b * l * h * 3)?
                        .reshape(coef.dims())?,
                ),
            ));
        }
        let grad = grad.contiguous()?;
        let reads = [qk, v, coef].map(|t| read_cpu(t, "mamba3: input"));
        let rdy = read_cpu(&grad, "mamba3: output gradient");
        let i = inputs([
            reads[0].storage()?,
            reads[1].storage()?,
            reads[2].storage()?,
        ])?;
        let dy = rdy.f32s()?;
        let grads: Vec<Grads> = (0..b * h)
            .into_par_iter()
            .map(|task| self.backward_task(&i, dy, task / h, task % h))
            .collect();
        let (dqk, dv, dcoef): (Vec<_>, Vec<_>, Vec<_>) =
            grads.into_iter().map(|g| (g.dqk, g.dv, g.dcoef)).fold(
                (vec![], vec![], vec![]),
                |(mut a, mut b, mut c), (x, y, z)| {
                    a.push(x);
                    b.push(y);
                    c.push(z);
                    (a, b, c)
                },
            );
        let dqk = interleave(&dqk, l, h, 2 * r * n);
        let dv = interleave(&dv, l, h, r * p);
        let dcoef = interleave(&dcoef, l, h, 3);
        let dev = qk.device();
        Ok((
            Some(Tensor::from_vec(dqk, qk.dims(), dev)?),
            Some(Tensor::from_vec(dv, v.dims(), dev)?),
            Some(Tensor::from_vec(dcoef, coef.dims(), dev)?),
        ))
    }
}

/// The phases (b, l, C): the running sum of `turn` (b, l, C) within each document, a document
/// starting where `resets` (b x l) is nonzero; f32 on the CPU, differentiable.
pub fn phases(turn: &Tensor, resets: Option<Arc<Vec<u8>>>) -> Result<Tensor> {
    let (b, l, c) = turn.dims3()?;
    turn.contiguous()?.apply_op1(RunningSum { b, l, c, resets })
}

/// [`phases`] as an op: forward a running sum over positions, backward the same from the end.
#[derive(Clone)]
struct RunningSum {
    b: usize,
    l: usize,
    c: usize,
    resets: Option<Arc<Vec<u8>>>,
}

impl RunningSum {
    /// Whether position `t` of row `bi` starts a document (past the first position).
    fn starts(&self, bi: usize, t: usize) -> bool {
        t > 0
            && self
                .resets
                .as_ref()
                .is_some_and(|r| r[bi * self.l + t] != 0)
    }

    /// The running sums of `x` over positions, forward or from the end.
    fn run(&self, x: &[f32], from_end: bool) -> Vec<f32> {
        let (l, c) = (self.l, self.c);
        let mut out = vec![0f32; x.len()];
        for bi in 0..self.b {
            let mut acc = vec![0f32; c];
            for step in 0..l {
                let t = if from_end { l - 1 - step } else { step };
                if !from_end && self.starts(bi, t) {
                    acc.fill(0.0);
                }
                let at = (bi * l + t) * c;
                for (a, (o, &v)) in acc
                    .iter_mut()
                    .zip(out[at..at + c].iter_mut().zip(&x[at..at + c]))
                {
                    *a += v;
                    *o = *a;
                }
                // From the end, a document's first position is the last its sums reach.
                if from_end && self.starts(bi, t) {
                    acc.fill(0.0);
                }
            }
        }
        out
    }
}

impl candle_core::CustomOp1 for RunningSum {
    fn name(&self) -> &'static str {
        "mamba3-phases"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s, l, "mamba3: phases")?;
        Ok((
            CpuStorage::F32(self.run(x, false)),
            Shape::from((self.b, self.l, self.c)),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let read = read_cpu(&grad, "mamba3: phases gradient");
        let g = self.run(read.f32s()?, true);
        Ok(Some(Tensor::from_vec(g, arg.dims(), arg.device())?))
    }
}
