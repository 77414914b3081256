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

    /// (heads, head_dim, d_state, groups, ranks, angles).
    pub fn sizes(&self) -> (usize, usize, usize, usize, usize, usize) {
        let (h, p, n, g) = (self.heads, self.head_dim, self.d_state, self.groups);
        (h, p, n, g, self.rank(), self.angles())
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

impl Dims {
    /// The sizes of a Mamba-3 layer of `c`.
    pub fn of(c: &crate::config::Config) -> Dims {
        Dims {
            d_model: c.d_model,
            heads: c.n_heads(),
            head_dim: c.head_dim,
            d_state: c.d_state,
            groups: c.n_groups,
            mimo_rank: c.mimo_rank,
            rope_fraction: c.rope_fraction,
            outproj_norm: c.outproj_norm,
            a_floor: c.a_floor,
            heavy_tail: c.heavy_tail,
        }
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
pub(crate) fn rotate(x: &Tensor, phi: &Tensor, pairwise: bool) -> Result<Tensor> {
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

/// A layer's input projected and made ready for the recurrence: everything per position.
pub struct Prepared {
    /// The gate (b, l, H, P) and the input x (b, l, H, P).
    pub z: Tensor,
    pub x: Tensor,
    /// v per rank (b, l, R, H, P); q and k per rank and head, normed and biased, not yet
    /// rotated (b, l, R, H, N).
    pub v: Tensor,
    pub q: Tensor,
    pub k: Tensor,
    /// The phase each position adds, per head (b, l, 1, H, S).
    pub turn: Tensor,
    /// alpha, beta, gamma of each position and head (b, l, H).
    pub alpha: Tensor,
    pub beta: Tensor,
    pub gamma: Tensor,
    /// Rotation of pairs (2i, 2i + 1) (SISO), not (i, i + N/2) (MIMO).
    pub pairwise: bool,
}

/// What one position leaves the next: the phases (b, 1, H, S), the state (b, H, P, N), and
/// its rotated k (b, R, H, N) and v (b, R, H, P).
pub struct Carry {
    pub phi: Tensor,
    pub state: Tensor,
    pub k: Tensor,
    pub v: Tensor,
}

/// in_proj's output `proj` (b, l, rows) made ready; `get` gives a parameter by name.
pub fn prepare(proj: &Tensor, get: &dyn Fn(&str) -> Result<Tensor>, d: &Dims) -> Result<Prepared> {
    let (b, l, _) = proj.dims3()?;
    let (h, hp, n, g, r, s) = d.sizes();
    let di = d.d_inner();
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
    let a = f.neg()?.minimum(-d.a_floor)?;
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
        m.broadcast_add(&get(bias)?.transpose(0, 1)?)
    };
    let turn = theta
        .tanh()?
        .affine(PI, 0.0)?
        .unsqueeze(2)?
        .broadcast_mul(&dt.unsqueeze(3)?)?
        .unsqueeze(2)?;
    let v = match d.mimo_rank {
        0 => x.unsqueeze(2)?,
        _ => x
            .unsqueeze(2)?
            .broadcast_mul(&get("mimo_x")?.transpose(0, 1)?)?,
    };
    Ok(Prepared {
        k: per_head(&bm, "B_norm.weight", "B_bias")?,
        q: per_head(&cm, "C_norm.weight", "C_bias")?,
        z,
        x,
        v,
        turn,
        alpha,
        beta,
        gamma,
        pairwise: d.mimo_rank == 0,
    })
}

/// The recurrence one position at a time from `carry` (none: the start of a document), a
/// document starting where `resets` (b x l) says; y (b, l, R, H, P) without the D skip, and
/// what the last position leaves.
pub fn recurrence(
    p: &Prepared,
    carry: Option<Carry>,
    resets: Option<&[u8]>,
) -> Result<(Tensor, Carry)> {
    let (b, l, r, h, hp) = p.v.dims5()?;
    let (n, s) = (p.k.dim(4)?, p.turn.dim(4)?);
    let (dev, dt) = (p.v.device(), p.v.dtype());
    let zeros = |shape: &[usize]| Tensor::zeros(shape, dt, dev);
    let mut c = match carry {
        Some(c) => c,
        None => Carry {
            phi: zeros(&[b, 1, h, s])?,
            state: zeros(&[b, h, hp, n])?,
            k: zeros(&[b, r, h, n])?,
            v: zeros(&[b, r, h, hp])?,
        },
    };
    let mut ys = Vec::with_capacity(l);
    for t in 0..l {
        let at = |m: &Tensor| m.narrow(1, t, 1)?.squeeze(1);
        let coef = |m: &Tensor| at(m)?.reshape((b, h, 1, 1));
        // Where a document starts, nothing of the one before: no state, phase or last k, v.
        let keep: Vec<f32> = (0..b)
            .map(
                |bi| match resets.is_some_and(|r| t > 0 && r[bi * l + t] != 0) {
                    true => 0.0,
                    false => 1.0,
                },
            )
            .collect();
        let keep = Tensor::from_vec(keep, b, dev)?.to_dtype(dt)?;
        let kept = |x: &Tensor| -> Result<Tensor> {
            let mut shape = vec![b];
            shape.resize(x.rank(), 1);
            x.broadcast_mul(&keep.reshape(shape)?)
        };
        c.phi = (kept(&c.phi)? + at(&p.turn)?)?;
        let kt = rotate(&at(&p.k)?, &c.phi, p.pairwise)?; // (b, r, h, n)
        let qt = rotate(&at(&p.q)?, &c.phi, p.pairwise)?;
        let vt = at(&p.v)?; // (b, r, h, p)
                            // sum_r v k^T: (b, h, p, n)
        let vk = |v: &Tensor, k: &Tensor| -> Result<Tensor> {
            v.unsqueeze(4)?.broadcast_mul(&k.unsqueeze(3)?)?.sum(1)
        };
        let before = kept(&vk(&c.v, &c.k)?)?;
        c.state = (kept(&c.state)?.broadcast_mul(&coef(&p.alpha)?)?
            + before.broadcast_mul(&coef(&p.beta)?)?
            + vk(&vt, &kt)?.broadcast_mul(&coef(&p.gamma)?)?)?;
        // y_r = h q_r: (b, r, h, p)
        ys.push(
            c.state
                .unsqueeze(1)?
                .broadcast_mul(&qt.unsqueeze(3)?)?
                .sum(D::Minus1)?,
        );
        (c.k, c.v) = (kt, vt);
    }
    Ok((Tensor::stack(&ys, 1)?, c))
}

/// y (b, l, R, H, P) of the recurrence through the D skip, the gate (and the norm before it)
/// and MIMO's output projection: (b, l, d_inner), out_proj's input.
pub fn finish(
    y: &Tensor,
    p: &Prepared,
    get: &dyn Fn(&str) -> Result<Tensor>,
    d: &Dims,
) -> Result<Tensor> {
    let (b, l, _, h, hp) = y.dims5()?;
    let y = (y + p.v.broadcast_mul(&get("D")?.reshape((1, 1, 1, h, 1))?)?)?;
    let zr = match d.mimo_rank {
        0 => p.z.unsqueeze(2)?,
        _ => {
            p.z.unsqueeze(2)?
                .broadcast_mul(&get("mimo_z")?.transpose(0, 1)?)?
        }
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
    o.reshape((b, l, h * hp))
}

/// The layer on `u` (b, l, d_model) with the parameters `p` under mamba_ssm's names, in `u`'s
/// dtype, one position at a time; (b, l, d_model).
pub fn forward(u: &Tensor, p: &HashMap<String, Tensor>, d: &Dims) -> Result<Tensor> {
    let get = |name: &str| -> Result<Tensor> {
        match p.get(name) {
            Some(t) => t.to_dtype(u.dtype()),
            None => candle_core::bail!("mamba3 reference: no parameter {name}"),
        }
    };
    let proj = crate::layers::ops::linear(u, &get("in_proj.weight")?)?;
    let prep = prepare(&proj, &get, d)?;
    let (y, _) = recurrence(&prep, None, None)?;
    let o = finish(&y, &prep, &get, d)?;
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
