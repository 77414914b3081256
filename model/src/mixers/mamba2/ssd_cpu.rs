//! The SSD recurrence as one CPU op with its own backward (training's form on the CPU). Per
//! batch row and head, with the head's scalar decay g_t = exp(dt_t a) (0 where a document
//! starts):
//!
//! ```text
//! h_t = g_t h_{t-1} + (dt_t x_t) B_t^T      (P, N)
//! y_t = h_t C_t + D x_t
//! ```
//!
//! Mamba-1's scan, run channel by channel, would compute exp(dt A) for every state of every
//! channel; here it is one exp per head and position, and the rest is multiply-adds over
//! contiguous rows of N. Work splits by (batch row, head), each task sequential in time and
//! writing its own buffers, summed afterwards in a fixed order: the same bits at any thread
//! count. The backward keeps the state every [`SPAN`] positions and recomputes those between,
//! so no (b, l, H, P, N) tensor is ever held.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::simd::{isa, Isa};
use crate::layers::ops::{contiguous, read_cpu};

/// Positions between the states the backward keeps.
const SPAN: usize = 16;

/// The SSD's output y (b, l, H, P) for x (b, l, H, P), dt (b, l, H) after softplus and
/// clamping, a (H) negative, bm and cm (b, l, G, N), d (H), resets (b, l) nonzero at document
/// starts; f32 on the CPU. Equal to [`super::ssd_reference`] up to rounding.
pub fn ssd_cpu(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    bm: &Tensor,
    cm: &Tensor,
    d: &Tensor,
    resets: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, l, h, p) = x.dims4()?;
    let (g, n) = (bm.dim(2)?, bm.dim(3)?);
    let bad = g == 0 || h % g != 0 || dt.dims() != [b, l, h] || cm.dims() != bm.dims();
    if bad || a.dims() != [h] || d.dims() != [h] || bm.dim(0)? != b || bm.dim(1)? != l {
        candle_core::bail!(
            "ssd: shapes x {:?} dt {:?} B {:?}",
            x.dims(),
            dt.dims(),
            bm.dims()
        )
    }
    // Three inputs, as candle's custom ops take: x with dt as its last channel, B with C, a with D.
    let xdt = Tensor::cat(&[x, &dt.unsqueeze(3)?], 3)?.contiguous()?;
    let bc = Tensor::cat(&[bm, cm], 3)?.contiguous()?;
    let params = Tensor::stack(&[a, d], 1)?.contiguous()?;
    let resets = match resets {
        Some(r) => Some(Arc::new(r.ne(0f64)?.flatten_all()?.to_vec1::<u8>()?)),
        None => None,
    };
    let dims = Dims { b, l, h, p, g, n };
    let y = xdt.apply_op3(&bc, &params, SsdOp { dims, resets })?;
    Ok(y)
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    l: usize,
    h: usize,
    p: usize,
    g: usize,
    n: usize,
}

#[derive(Clone)]
struct SsdOp {
    dims: Dims,
    resets: Option<Arc<Vec<u8>>>,
}

/// The op's inputs, borrowed: x|dt (b, l, H, P + 1), B|C (b, l, G, 2N), a|D (H, 2).
struct Inputs<'a> {
    xdt: &'a [f32],
    bc: &'a [f32],
    params: &'a [f32],
}

/// One position of one (batch row, head): its x (P), dt, B and C (N each), decay.
struct At<'a> {
    x: &'a [f32],
    dt: f32,
    b: &'a [f32],
    c: &'a [f32],
    decay: f32,
}

impl SsdOp {
    fn at<'a>(&self, i: &Inputs<'a>, bi: usize, hi: usize, t: usize) -> At<'a> {
        let Dims { l, h, p, g, n, .. } = self.dims;
        let row = ((bi * l + t) * h + hi) * (p + 1);
        let grp = hi / (h / g);
        let bc = &i.bc[((bi * l + t) * g + grp) * 2 * n..][..2 * n];
        let dt = i.xdt[row + p];
        let reset = t == 0 || self.resets.as_ref().is_some_and(|r| r[bi * l + t] != 0);
        At {
            x: &i.xdt[row..row + p],
            dt,
            b: &bc[..n],
            c: &bc[n..],
            decay: if reset {
                0.0
            } else {
                (dt * i.params[2 * hi]).exp()
            },
        }
    }

    /// next = decay prev + (dt x) B^T: the state after position `t` from the one before.
    #[inline(always)]
    fn advance(&self, s: &At, prev: &[f32], next: &mut [f32]) {
        let n = self.dims.n;
        for ((row, old), &xv) in next.chunks_exact_mut(n).zip(prev.chunks_exact(n)).zip(s.x) {
            let u = s.dt * xv;
            for ((hv, &ov), &bv) in row.iter_mut().zip(old).zip(s.b) {
                *hv = s.decay * ov + u * bv;
            }
        }
    }

    /// y (l, P) of batch row `bi`, head `hi`.
    #[inline(always)]
    fn forward_task(&self, i: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
        let Dims { l, p, n, .. } = self.dims;
        let dskip = i.params[2 * hi + 1];
        // The state before and after each position, in two buffers that swap roles.
        let (mut prev, mut state) = (vec![0f32; p * n], vec![0f32; p * n]);
        let mut y = vec![0f32; l * p];
        for t in 0..l {
            let s = self.at(i, bi, hi, t);
            self.advance(&s, &prev, &mut state);
            for ((yv, row), &xv) in y[t * p..].iter_mut().zip(state.chunks_exact(n)).zip(s.x) {
                *yv = dot(row, s.c) + dskip * xv;
            }
            std::mem::swap(&mut prev, &mut state);
        }
        y
    }

    /// Gradients of batch row `bi`, head `hi` from dy (b, l, H, P): d(x|dt) (l, P + 1),
    /// d(B|C) (l, 2N) of this head, and (da, dD).
    #[inline(always)]
    fn backward_task(&self, i: &Inputs, dy: &[f32], bi: usize, hi: usize) -> Grads {
        let Dims { l, h, p, n, .. } = self.dims;
        let (a, dskip) = (i.params[2 * hi], i.params[2 * hi + 1]);
        let pn = p * n;
        // The state before each span's first position.
        let spans = l.div_ceil(SPAN);
        let mut kept = vec![0f32; spans * pn];
        let (mut prev, mut state) = (vec![0f32; pn], vec![0f32; pn]);
        for t in 0..l {
            if t % SPAN == 0 {
                kept[t / SPAN * pn..][..pn].copy_from_slice(&prev);
            }
            self.advance(&self.at(i, bi, hi, t), &prev, &mut state);
            std::mem::swap(&mut prev, &mut state);
        }
        let mut out = Grads {
            dxdt: vec![0f32; l * (p + 1)],
            dbc: vec![0f32; l * 2 * n],
            da: 0.0,
            dd: 0.0,
        };
        let mut dstate = vec![0f32; pn];
        let mut states = vec![0f32; (SPAN + 1) * pn];
        let mut dxs = vec![0f32; p];
        for span in (0..spans).rev() {
            let (t0, t1) = (span * SPAN, ((span + 1) * SPAN).min(l));
            // states[k] = the state before position t0 + k; states[t1 - t0] = after t1 - 1.
            states[..pn].copy_from_slice(&kept[span * pn..][..pn]);
            for t in t0..t1 {
                let (before, after) = states.split_at_mut((t - t0 + 1) * pn);
                self.advance(
                    &self.at(i, bi, hi, t),
                    &before[(t - t0) * pn..],
                    &mut after[..pn],
                );
            }
            for t in (t0..t1).rev() {
                let s = self.at(i, bi, hi, t);
                let prev = &states[(t - t0) * pn..][..pn];
                let cur = &states[(t - t0 + 1) * pn..][..pn];
                let dyt = &dy[((bi * l + t) * h + hi) * p..][..p];
                let (db, dc) = out.dbc[t * 2 * n..][..2 * n].split_at_mut(n);
                let mut dg = 0f32;
                let mut ddt = 0f32;
                for pi in 0..p {
                    let (xv, dyv) = (s.x[pi], dyt[pi]);
                    out.dd += dyv * xv;
                    let u = s.dt * xv;
                    let rows = Rows {
                        dh: &mut dstate[pi * n..][..n],
                        h: &cur[pi * n..][..n],
                        prev: &prev[pi * n..][..n],
                    };
                    let (du, dgp) = back_row(rows, &s, dyv, u, db, dc);
                    dg += dgp;
                    // u = dt x.
                    dxs[pi] = dyv * dskip + du * s.dt;
                    ddt += du * xv;
                }
                // g = exp(dt a) (a constant 0 where a document starts).
                if s.decay != 0.0 {
                    ddt += dg * s.decay * a;
                    out.da += dg * s.decay * s.dt;
                }
                let row = &mut out.dxdt[t * (p + 1)..][..p + 1];
                row[..p].copy_from_slice(&dxs);
                row[p] = ddt;
            }
        }
        out
    }
}

/// The rows of per-(batch row, head) tasks, task `bi * h + hi` holding `l` rows of `width`,
/// laid out as (b, l, h, width).
pub(crate) fn interleave(tasks: &[Vec<f32>], l: usize, h: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0f32; tasks.len() * l * width];
    for (task, rows) in tasks.iter().enumerate() {
        let (bi, hi) = (task / h, task % h);
        for (t, row) in rows.chunks_exact(width).enumerate() {
            out[((bi * l + t) * h + hi) * width..][..width].copy_from_slice(row);
        }
    }
    out
}

/// One task's gradients (see [`SsdOp::backward_task`]).
struct Grads {
    dxdt: Vec<f32>,
    dbc: Vec<f32>,
    da: f32,
    dd: f32,
}

/// Lanes of the sums below (independent, so the loops vectorise; fixed, so the bits do not
/// depend on the machine).
const LANES: usize = 16;

/// <a, b> summed in [`LANES`] lanes, then the lanes in order.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let full = a.len() / LANES * LANES;
    for k0 in (0..full).step_by(LANES) {
        let (x, y) = (&a[k0..k0 + LANES], &b[k0..k0 + LANES]);
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = a[full..].iter().zip(&b[full..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// One state row (one of the P channels) at one position in the backward: dh_t (in, becomes
/// dh_{t-1}), h_t and h_{t-1}.
struct Rows<'a> {
    dh: &'a mut [f32],
    h: &'a [f32],
    prev: &'a [f32],
}

/// Through y_t = h_t C_t (into dh_t, dC_t) and h_t = g h_{t-1} + u B_t (into dB_t; dh_{t-1}
/// = g dh_t); returns (du, this row's part of dg).
#[inline(always)]
fn back_row(r: Rows, s: &At, dy: f32, u: f32, db: &mut [f32], dc: &mut [f32]) -> (f32, f32) {
    let n = r.dh.len();
    let full = n / LANES * LANES;
    let (mut du, mut dg) = ([0f32; LANES], [0f32; LANES]);
    let lanes = |v: &[f32]| -> [f32; LANES] { v.try_into().unwrap_or([0.0; LANES]) };
    for k0 in (0..full).step_by(LANES) {
        let k = k0..k0 + LANES;
        // Whole registers in, whole registers out: the sums stay in registers.
        let (mut dh, h, prev) = (
            lanes(&r.dh[k.clone()]),
            lanes(&r.h[k.clone()]),
            lanes(&r.prev[k.clone()]),
        );
        let (b, c) = (lanes(&s.b[k.clone()]), lanes(&s.c[k.clone()]));
        let (mut dbk, mut dck) = (lanes(&db[k.clone()]), lanes(&dc[k.clone()]));
        for j in 0..LANES {
            dh[j] += dy * c[j];
            dck[j] += dy * h[j];
            du[j] += dh[j] * b[j];
            dbk[j] += dh[j] * u;
            dg[j] += dh[j] * prev[j];
            dh[j] *= s.decay;
        }
        r.dh[k.clone()].copy_from_slice(&dh);
        db[k.clone()].copy_from_slice(&dbk);
        dc[k].copy_from_slice(&dck);
    }
    let (mut du_tail, mut dg_tail) = (0f32, 0f32);
    for k in full..n {
        r.dh[k] += dy * s.c[k];
        dc[k] += dy * r.h[k];
        du_tail += r.dh[k] * s.b[k];
        db[k] += r.dh[k] * u;
        dg_tail += r.dh[k] * r.prev[k];
        r.dh[k] *= s.decay;
    }
    (
        du.iter().sum::<f32>() + du_tail,
        dg.iter().sum::<f32>() + dg_tail,
    )
}

/// The tasks compiled for the widest vectors the CPU has (the loops over N vectorise).
impl SsdOp {
    fn forward_isa(&self, i: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
        match isa() {
            // Safety: the CPU has the features (checked at run time by `isa`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.forward_avx512(i, bi, hi) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.forward_avx2(i, bi, hi) },
            _ => self.forward_task(i, bi, hi),
        }
    }

    fn backward_isa(&self, i: &Inputs, dy: &[f32], bi: usize, hi: usize) -> Grads {
        match isa() {
            // Safety: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.backward_avx512(i, dy, bi, hi) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.backward_avx2(i, dy, bi, hi) },
            _ => self.backward_task(i, dy, bi, hi),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn forward_avx512(&self, i: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
        self.forward_task(i, bi, hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(&self, i: &Inputs, bi: usize, hi: usize) -> Vec<f32> {
        self.forward_task(i, bi, hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn backward_avx512(&self, i: &Inputs, dy: &[f32], bi: usize, hi: usize) -> Grads {
        self.backward_task(i, dy, bi, hi)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward_avx2(&self, i: &Inputs, dy: &[f32], bi: usize, hi: usize) -> Grads {
        self.backward_task(i, dy, bi, hi)
    }
}

fn inputs<'a>(s: [(&'a CpuStorage, &'a Layout); 3]) -> Result<Inputs<'a>> {
    Ok(Inputs {
        xdt: contiguous::<f32>(s[0].0, s[0].1, "ssd: x")?,
        bc: contiguous::<f32>(s[1].0, s[1].1, "ssd: B, C")?,
        params: contiguous::<f32>(s[2].0, s[2].1, "ssd: a, D")?,
    })
}

impl CustomOp3 for SsdOp {
    fn name(&self) -> &'static str {
        "ssd"
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
        let Dims { b, l, h, p, .. } = self.dims;
        let ys: Vec<Vec<f32>> = (0..b * h)
            .into_par_iter()
            .map(|task| self.forward_isa(&i, task / h, task % h))
            .collect();
        let y = interleave(&ys, l, h, p);
        Ok((CpuStorage::F32(y), Shape::from((b, l, h, p))))
    }

    fn bwd(
        &self,
        xdt: &Tensor,
        bc: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Dims { b, l, h, p, g, n } = self.dims;
        // Read in place, as the forward does (the inputs are the contiguous ones it took).
        let grad = grad.contiguous()?;
        let [rx, rbc, rp] = [xdt, bc, params].map(|t| read_cpu(t, "ssd: input"));
        let rdy = read_cpu(&grad, "ssd: output gradient");
        let i = inputs([rx.storage()?, rbc.storage()?, rp.storage()?])?;
        let dy = rdy.f32s()?;
        let grads: Vec<Grads> = (0..b * h)
            .into_par_iter()
            .map(|task| self.backward_isa(&i, dy, task / h, task % h))
            .collect();
        // Scattered back, and summed in a fixed order: heads into their group, rows into the
        // parameters.
        let mut dxdt = vec![0f32; b * l * h * (p + 1)];
        let mut dbc = vec![0f32; b * l * g * 2 * n];
        let mut dparams = vec![0f32; h * 2];
        for (task, gr) in grads.iter().enumerate() {
            let (bi, hi) = (task / h, task % h);
            let grp = hi / (h / g);
            for t in 0..l {
                dxdt[((bi * l + t) * h + hi) * (p + 1)..][..p + 1]
                    .copy_from_slice(&gr.dxdt[t * (p + 1)..][..p + 1]);
                let dst = &mut dbc[((bi * l + t) * g + grp) * 2 * n..][..2 * n];
                for (d, s) in dst.iter_mut().zip(&gr.dbc[t * 2 * n..][..2 * n]) {
                    *d += s;
                }
            }
            dparams[2 * hi] += gr.da;
            dparams[2 * hi + 1] += gr.dd;
        }
        let dev = xdt.device();
        Ok((
            Some(Tensor::from_vec(dxdt, xdt.dims(), dev)?),
            Some(Tensor::from_vec(dbc, bc.dims(), dev)?),
            Some(Tensor::from_vec(dparams, params.dims(), dev)?),
        ))
    }
}
