//! The Mamba-3 layer step by step (Lahoti, Gu, Dao et al. 2026), as mamba_ssm's `Mamba3`
//! computes it, written for clarity over speed: basic candle ops, one position at a time, in
//! any dtype (f64 for tests), differentiable by candle's autograd. It is the definition the
//! fast forms are checked against, in value and in every gradient.
//!
//! ```text
//! z, x, B, C, dt, a, trap, theta = in_proj(u)       B, C: rank R x groups G x state N
//! A   = min(-f(a), -A_floor)                         f: heavy tail (main) or softplus
//! dt  = softplus(dt + dt_bias);  lambda = sigmoid(trap)
//! k   = rms_norm(B) + B_bias;  q = rms_norm(C) + C_bias    per head (its group) and rank
//! phi_t = phi_{t-1} + pi tanh(theta_t) dt_t           per head, S angles; rotates q and k
//! v_r = x * mimo_x[r]                                (SISO: R = 1, v = x)
//! h_t = e^{A dt} h_{t-1} + (1 - lambda) dt e^{A dt} sum_r v_{t-1,r} k_{t-1,r}^T
//!                        + lambda dt sum_r v_{t,r} k_{t,r}^T          h: head_dim x N
//! y_r = h_t q_r + D v_r
//! o   = sum_r gate(y_r, z * mimo_z[r]) * mimo_o[r]   gate: silu(z) times y, or its rms norm
//! out = out_proj(o)
//! ```

use std::collections::HashMap;
use std::f64::consts::PI;

use candle_core::{DType, Result, Tensor, D};

/// The sizes and options of one Mamba-3 layer.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub d_model: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub d_state: usize,
    pub groups: usize,
    /// MIMO's rank R; 0 for SISO (one rank, no mimo_* parameters).
    pub mimo_rank: usize,
    /// Fraction of the state rotated: 0.5 or 1.0.
    pub rope_fraction: f64,
    /// The per-head RMSNorm of y before the gate (`is_outproj_norm`).
    pub outproj_norm: bool,
    pub a_floor: f64,
    /// A = -(heavy-tail activation) (mamba_ssm since June 2026) rather than -softplus (its
    /// releases, flash-linear-attention).
    pub heavy_tail: bool,
}

impl Dims {
    pub fn d_inner(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Ranks of B, C and v (1 for SISO).
    pub fn rank(&self) -> usize {
        self.mimo_rank.max(1)
    }

    /// Rotation angles per head: pairs of state entries that turn.
    pub fn angles(&self) -> usize {
        let split = (self.d_state as f64 * self.rope_fraction) as usize;
        (split - split % 2) / 2
    }

    /// Width of in_proj's output: z, x, B, C, dt, A, trap, angles.
    pub fn in_proj_rows(&self) -> usize {
        let bc = self.d_state * self.groups * self.rank();
        2 * self.d_inner() + 2 * bc + 3 * self.heads + self.angles()
    }
}

/// softplus(x) = log(1 + e^x), stable.
fn softplus(x: &Tensor) -> Result<Tensor> {
    crate::layers::ops::softplus(x)
}

/// 1 + x for x >= 0, 1 / (1 - x) below.
fn heavy_tail(x: &Tensor) -> Result<Tensor> {
    let pos = x.relu()?;
    let neg = x.minimum(0.0)?;
    pos + (neg.neg()? + 1.0)?.recip()?
}

/// x / sqrt(mean(x^2) + eps) * w over the last dimension.
fn rms(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// Rotates the pairs of `x` (.., N) by the phases `phi` (.., S): SISO turns (2i, 2i + 1),
/// MIMO (i, i + N/2), for i < S; the other entries stay.
fn rotate(x: &Tensor, phi: &Tensor, pairwise: bool) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    let s = phi.dim(D::Minus1)?;
    let (cos, sin) = (phi.cos()?, phi.sin()?);
    let turn = |a: &Tensor, b: &Tensor| -> Result<(Tensor, Tensor)> {
        let ra = (a.broadcast_mul(&cos)? - b.broadcast_mul(&sin)?)?;
        let rb = (a.broadcast_mul(&sin)? + b.broadcast_mul(&cos)?)?;
        Ok((ra, rb))
    };
    let mut dims = x.dims().to_vec();
    if pairwise {
        // (.., N) -> (.., N/2, 2): the first S pairs turn.
        let last = dims.len() - 1;
        dims[last] = n / 2;
        dims.push(2);
        let pairs = x.reshape(dims.clone())?;
        let rank = dims.len();
        let (a, b) = (
            pairs
                .narrow(rank - 2, 0, s)?
                .narrow(rank - 1, 0, 1)?
                .squeeze(rank - 1)?,
            pairs
                .narrow(rank - 2, 0, s)?
                .narrow(rank - 1, 1, 1)?
                .squeeze(rank - 1)?,
        );
        let (ra, rb) = turn(&a, &b)?;
        let turned = Tensor::stack(&[ra, rb], rank - 1)?;
        let rest = pairs.narrow(rank - 2, s, n / 2 - s)?;
        return Tensor::cat(&[turned, rest], rank - 2)?.reshape(x.dims());
    }
    let half = n / 2;
    let last = x.rank() - 1;
    let (a, b) = (x.narrow(last, 0, s)?, x.narrow(last, half, s)?);
    let (ra, rb) = turn(&a, &b)?;
    Tensor::cat(
        &[
            ra,
            x.narrow(last, s, half - s)?,
            rb,
            x.narrow(last, half + s, half - s)?,
        ],
        last,
    )
}

/// The layer on `u` (b, l, d_model) with the parameters `p` under mamba_ssm's names, in `u`'s
/// dtype; (b, l, d_model).
pub fn forward(u: &Tensor, p: &HashMap<String, Tensor>, d: &Dims) -> Result<Tensor> {
    let get = |name: &str| -> Result<Tensor> {
        match p.get(name) {
            Some(t) => t.to_dtype(u.dtype()),
            None => candle_core::bail!("mamba3 reference: no parameter {name}"),
        }
    };
    let (b, l, _) = u.dims3()?;
    let (h, hp, n, g, r, s) = (
        d.heads,
        d.head_dim,
        d.d_state,
        d.groups,
        d.rank(),
        d.angles(),
    );
    let di = d.d_inner();
    let proj = crate::layers::ops::linear(u, &get("in_proj.weight")?)?; // (b, l, rows)
    let mut at = 0;
    let mut take = |width: usize| -> Result<Tensor> {
        let t = proj.narrow(2, at, width)?;
        at += width;
        Ok(t)
    };
    let z = take(di)?.reshape((b, l, h, hp))?;
    let x = take(di)?.reshape((b, l, h, hp))?;
    let bm = take(n * g * r)?.reshape((b, l, r, g, n))?;
    let cm = take(n * g * r)?.reshape((b, l, r, g, n))?;
    let dd_dt = take(h)?;
    let dd_a = take(h)?;
    let trap = take(h)?;
    let theta = take(s)?;
    let f = match d.heavy_tail {
        true => heavy_tail(&dd_a)?,
        false => softplus(&dd_a)?,
    };
    let a = f.neg()?.minimum(-d.a_floor)?; // (b, l, h)
    let dt = softplus(&dd_dt.broadcast_add(&get("dt_bias")?)?)?;
    let lam = (trap.neg()?.exp()? + 1.0)?.recip()?; // sigmoid
    let alpha = (&a * &dt)?.exp()?;
    let beta = ((lam.neg()? + 1.0)? * &dt)?.mul(&alpha)?;
    let gamma = (&lam * &dt)?;
    // B, C normed, then per head (its group's) and rank with the head's bias: (b, l, r, h, n).
    let per_head = |m: &Tensor, w: &str, bias: &str| -> Result<Tensor> {
        let m = rms(m, &get(w)?, 1e-5)?;
        let m = m
            .unsqueeze(4)?
            .broadcast_as((b, l, r, g, h / g, n))?
            .reshape((b, l, r, h, n))?;
        // bias (h, r, n) -> (r, h, n)
        m.broadcast_add(&get(bias)?.transpose(0, 1)?)
    };
    let k = per_head(&bm, "B_norm.weight", "B_bias")?;
    let q = per_head(&cm, "C_norm.weight", "C_bias")?;
    // Each position turns the phases by pi tanh(theta) dt, per head: (b, l, 1, h, s).
    let turn = theta
        .tanh()?
        .affine(PI, 0.0)?
        .unsqueeze(2)?
        .broadcast_mul(&dt.unsqueeze(3)?)?
        .unsqueeze(2)?;
    let pairwise = d.mimo_rank == 0;
    // v per rank: (b, l, r, h, p).
    let v = match d.mimo_rank {
        0 => x.unsqueeze(2)?,
        _ => x
            .unsqueeze(2)?
            .broadcast_mul(&get("mimo_x")?.transpose(0, 1)?)?,
    };
    let dskip = get("D")?.reshape((1, h, 1))?;
    let mut state = Tensor::zeros((b, h, hp, n), u.dtype(), u.device())?;
    let mut prev: Option<Tensor> = None; // sum_r v k^T of the position before
    let mut phi = Tensor::zeros((b, 1, h, s), u.dtype(), u.device())?;
    let mut ys = Vec::with_capacity(l);
    for t in 0..l {
        let at = |m: &Tensor| m.narrow(1, t, 1)?.squeeze(1);
        phi = (phi + at(&turn)?)?;
        let kt = rotate(&at(&k)?, &phi, pairwise)?; // (b, r, h, n)
        let qt = rotate(&at(&q)?, &phi, pairwise)?;
        let vt = at(&v)?; // (b, r, h, p)
        let coef = |c: &Tensor| at(c)?.reshape((b, h, 1, 1));
        // sum_r v k^T: (b, h, p, n)
        let vk = vt.unsqueeze(4)?.broadcast_mul(&kt.unsqueeze(3)?)?.sum(1)?;
        state = (state.broadcast_mul(&coef(&alpha)?)? + vk.broadcast_mul(&coef(&gamma)?)?)?;
        if let Some(pv) = &prev {
            state = (state + pv.broadcast_mul(&coef(&beta)?)?)?;
        }
        prev = Some(vk);
        // y_r = h q_r + D v_r: (b, r, h, p)
        let y = state
            .unsqueeze(1)?
            .broadcast_mul(&qt.unsqueeze(3)?)?
            .sum(D::Minus1)?;
        ys.push((y + vt.broadcast_mul(&dskip)?)?);
    }
    let y = Tensor::stack(&ys, 1)?; // (b, l, r, h, p)
    let zr = match d.mimo_rank {
        0 => z.unsqueeze(2)?,
        _ => z
            .unsqueeze(2)?
            .broadcast_mul(&get("mimo_z")?.transpose(0, 1)?)?,
    };
    let y = match d.outproj_norm {
        true => rms(&y, &get("norm.weight")?.reshape((h, hp))?, 1e-5)?,
        false => y,
    };
    let gated = (y * zr.silu()?)?;
    let o = match d.mimo_rank {
        0 => gated.squeeze(2)?,
        _ => gated
            .broadcast_mul(&get("mimo_o")?.transpose(0, 1)?)?
            .sum(2)?,
    };
    let o = o.reshape((b, l, di))?;
    crate::layers::ops::linear(&o, &get("out_proj.weight")?)
}

/// `forward` in f64 from parameters of any float dtype (a test's reference).
pub fn forward_f64(u: &Tensor, p: &HashMap<String, Tensor>, d: &Dims) -> Result<Tensor> {
    let p64: HashMap<String, Tensor> = p
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(DType::F64)?)))
        .collect::<Result<_>>()?;
    forward(&u.to_dtype(DType::F64)?, &p64, d)
}
