//! The SSD layer of Mamba-2 two ways, in any float dtype and differentiable through candle's
//! autograd. Per head (scalar A) and position, with x in P channels and B, C in N:
//!
//! ```text
//! h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T        (P, N); h_{t-1} := 0 where a document starts
//! y_t = h_t C_t + D x_t
//! ```
//! [`ssd_reference`] runs the recurrence one position at a time (the definition);
//! [`ssd_scan`] runs it through Mamba-1's fused scan, channel by channel (the CPU prefill's
//! form; training on the CPU takes the SSD's own op, [`super::ssd_cpu`]);
//! [`ssd_chunked`] is the paper's block decomposition (Dao & Gu 2024, section 6): within a chunk
//! of T positions the outputs are a masked (T, T) matrix product, like attention with a decay
//! mask; each chunk's final state is another product; states pass from chunk to chunk by the
//! recurrence over chunks only. Neither materialises a (b, l, H, P, N) tensor.
//!
//! Shapes: x (b, l, H, P); dt (b, l, H), after softplus and clamping; a (H), negative; bm, cm
//! (b, l, G, N), head k reading group k / (H / G); d (H); resets (b, l), nonzero at the first
//! position of a document (mamba_ssm's `seq_idx`: documents never see each other).

use candle_core::{IndexOp, Result, Tensor, D};

use super::passing::pass_states;
use crate::kernels::scan::{selective_scan, selective_scan_with_state, ScanOptions};

/// B or C per head: (b, l, G, N) -> (b, l, H, N).
pub(crate) fn per_head(t: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, g, n) = t.dims4()?;
    t.unsqueeze(3)?
        .broadcast_as((b, l, g, heads / g, n))?
        .reshape((b, l, heads, n))
}

/// Batched matrix product over the leading dims of two (.., m, k) x (.., k, n) tensors, as one
/// 3-D product (candle's batched matmul wants plainly strided batches).
fn bmm(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let r = dims.len();
    let (m, k, n) = (dims[r - 2], dims[r - 1], y.dim(r - 1)?);
    let batch: usize = dims[..r - 2].iter().product();
    let out = x
        .contiguous()?
        .reshape((batch, m, k))?
        .matmul(&y.contiguous()?.reshape((batch, k, n))?)?;
    let mut shape = dims[..r - 2].to_vec();
    shape.extend([m, n]);
    out.reshape(shape)
}

/// Which document each position is in, (b, l) in x's dtype: 0, 0, 1, 1, 1, 2, ...
fn documents(resets: Option<&Tensor>, b: usize, l: usize, like: &Tensor) -> Result<Tensor> {
    match resets {
        Some(r) => r.ne(0f64)?.to_dtype(like.dtype())?.cumsum(1),
        None => Tensor::zeros((b, l), like.dtype(), like.device()),
    }
}

/// The recurrence, one position at a time: O(b H P N) memory per step, for checking only.
#[allow(clippy::too_many_arguments)]
pub fn ssd_reference(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    bm: &Tensor,
    cm: &Tensor,
    d: &Tensor,
    resets: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, l, hn, p) = x.dims4()?;
    let n = bm.dim(3)?;
    let (bh, ch) = (per_head(bm, hn)?, per_head(cm, hn)?);
    let keep = match resets {
        Some(r) => Some(r.ne(0f64)?.to_dtype(x.dtype())?.affine(-1.0, 1.0)?),
        None => None,
    };
    let mut state = Tensor::zeros((b, hn, p, n), x.dtype(), x.device())?;
    let mut ys = Vec::with_capacity(l);
    for t in 0..l {
        if let Some(k) = &keep {
            state = state.broadcast_mul(&k.i((.., t))?.reshape((b, 1, 1, 1))?)?;
        }
        let dt_t = dt.i((.., t))?; // (b, H)
        let x_t = x.i((.., t))?; // (b, H, P)
        let decay = dt_t.broadcast_mul(a)?.exp()?.reshape((b, hn, 1, 1))?;
        let dx = x_t.broadcast_mul(&dt_t.unsqueeze(2)?)?.unsqueeze(3)?; // (b, H, P, 1)
        let b_t = bh.i((.., t))?.unsqueeze(2)?; // (b, H, 1, N)
        state = (state.broadcast_mul(&decay)? + dx.broadcast_mul(&b_t)?)?;
        let c_t = ch.i((.., t))?.unsqueeze(2)?;
        let y = state.broadcast_mul(&c_t)?.sum(D::Minus1)?; // (b, H, P)
        ys.push((y + x_t.broadcast_mul(&d.reshape((1, hn, 1))?)?)?);
    }
    Tensor::stack(&ys, 1)
}

/// The chunked form (see the module docs) with chunks of `chunk` positions: the outputs, equal
/// to [`ssd_reference`] up to rounding, and the state after the last position, (b, H, P, N),
/// where a recurrent step continues (mamba_ssm's `return_final_states`).
#[allow(clippy::too_many_arguments)]
pub fn ssd_chunked(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    bm: &Tensor,
    cm: &Tensor,
    d: &Tensor,
    resets: Option<&Tensor>,
    chunk: usize,
) -> Result<(Tensor, Tensor)> {
    let (b, l, hn, p) = x.dims4()?;
    let n = bm.dim(3)?;
    let t = chunk.max(1).min(l.max(1));
    let c = l.div_ceil(t);
    let pad = c * t - l;
    // Padding at the end: zero dt (no decay, no input) and its outputs cut off.
    let padded = |v: Tensor| -> Result<Tensor> {
        match pad {
            0 => Ok(v),
            _ => v.pad_with_zeros(1, 0, pad),
        }
    };
    // Padded positions continue the last document, so the final state keeps it.
    let docs = documents(resets, b, l, x)?;
    let docs = match pad {
        0 => docs,
        _ => Tensor::cat(&[&docs, &docs.narrow(1, l - 1, 1)?.repeat((1, pad))?], 1)?,
    }; // (b, L)
    let xdt = padded(x.broadcast_mul(&dt.unsqueeze(3)?)?)?; // (b, L, H, P)
    let la = padded(dt.broadcast_mul(a)?)?; // (b, L, H): log of each step's decay
    let (bh, ch) = (padded(per_head(bm, hn)?)?, padded(per_head(cm, hn)?)?);
    // To (b, H, c, T, ...): heads outermost, then chunks.
    let chunked = |v: &Tensor, w: usize| -> Result<Tensor> {
        v.reshape((b, c, t, hn, w))?
            .permute((0, 3, 1, 2, 4))?
            .contiguous()
    };
    let (xdt, bh, ch) = (chunked(&xdt, p)?, chunked(&bh, n)?, chunked(&ch, n)?);
    let cs = chunked(&la.unsqueeze(3)?, 1)?.squeeze(4)?.cumsum(3)?; // (b, H, c, T)
    let doc = docs
        .reshape((b, 1, c, t))?
        .broadcast_as((b, hn, c, t))?
        .contiguous()?;
    let neg_inf = |like: &Tensor| -> Result<Tensor> {
        Tensor::full(f64::NEG_INFINITY, like.dims(), like.device())?.to_dtype(like.dtype())
    };

    // 1. Within chunks: y_i = sum_{j <= i, same document} exp(cs_i - cs_j) (C_i . B_j) xdt_j.
    let seg = cs.unsqueeze(4)?.broadcast_sub(&cs.unsqueeze(3)?)?; // [i, j] = cs_i - cs_j
    let pos = Tensor::arange(0u32, t as u32, x.device())?;
    let causal = pos.unsqueeze(1)?.broadcast_ge(&pos.unsqueeze(0)?)?; // j <= i
    let same = doc.unsqueeze(4)?.broadcast_eq(&doc.unsqueeze(3)?)?;
    let live = same.broadcast_mul(&causal.broadcast_as(same.dims())?)?;
    let decay = live.where_cond(&seg, &neg_inf(&seg)?)?.exp()?; // (b, H, c, T, T)
    let scores = bmm(&ch, &bh.transpose(3, 4)?)?; // (b, H, c, T, T)
    let y_diag = bmm(&(scores * decay)?, &xdt)?; // (b, H, c, T, P)

    // 2. Each chunk's final state, (N, P): sum_s exp(cs_last - cs_s) B_s xdt_s^T, same document.
    let last = |v: &Tensor| v.narrow(3, t - 1, 1); // (b, H, c, 1)
    let to_end = last(&cs)?.broadcast_sub(&cs)?;
    let end_doc = last(&doc)?;
    let live = doc.broadcast_eq(&end_doc)?;
    let w = live.where_cond(&to_end, &neg_inf(&to_end)?)?.exp()?; // (b, H, c, T)
    let states = bmm(&bh.broadcast_mul(&w.unsqueeze(4)?)?.transpose(3, 4)?, &xdt)?; // (b, H, c, N, P)

    // 3. Between chunks: the state entering chunk k, carried over whole chunks while the
    // document goes on (one op, forward and backward; see `passing`). The document at the end
    // of the previous chunk (none before the first) says whether it goes on.
    let chunk_decay = last(&cs)?.squeeze(3)?.exp()?; // (b, H, c)
    let end_doc = end_doc.squeeze(3)?; // (b, H, c)
    let prev_doc = Tensor::cat(
        &[
            neg_inf(&end_doc.narrow(2, 0, 1)?)?,
            end_doc.narrow(2, 0, c - 1)?,
        ],
        2,
    )?; // (b, H, c)
    let goes_on = end_doc.eq(&prev_doc)?.to_dtype(x.dtype())?;
    let passed = pass_states(&states, &(chunk_decay * goes_on)?)?; // (b, H, c + 1, N, P)
    let entering = passed.narrow(2, 0, c)?;
    let carried = passed.i((.., .., c))?;

    // 4. The entering state's part of each output: exp(cs_i) (C_i . S), same document as the
    // previous chunk's end.
    let live = doc.broadcast_eq(&prev_doc.unsqueeze(3)?)?;
    let from_prev = live.where_cond(&cs, &neg_inf(&cs)?)?.exp()?; // (b, H, c, T)
    let y_off = bmm(&ch, &entering)?.broadcast_mul(&from_prev.unsqueeze(4)?)?;

    let y = (y_diag + y_off)?
        .permute((0, 2, 3, 1, 4))? // (b, c, T, H, P)
        .reshape((b, c * t, hn, p))?
        .narrow(1, 0, l)?;
    let y = (y + x.broadcast_mul(&d.reshape((1, 1, hn, 1))?)?)?;
    Ok((y, carried.transpose(2, 3)?))
}

/// The SSD through the fused selective scan of Mamba-1 (CPU, f32): each of the H P channels is
/// a scalar-input SSM, h_t = exp(dt_t a) h_{t-1} + dt_t x_t B_t, y_t = <h_t, C_t> + D x_t,
/// with its head's dt, a and D and its group's B and C, which is the recurrence above channel
/// by channel. On a CPU the recurrence is the fast form: it costs 4 P N per head and position
/// against the chunked form's 2 T (N + P) + 4 P N, whose matrix products pay off on tensor
/// cores, not here; the scan is one fused op with its own backward that never holds a
/// (b, l, H, P, N) tensor and gives the same bits at any thread count, but computes the decay
/// per state, so training takes [`super::ssd_cpu`] (one decay per head). With `last_state`,
/// also the state after the last position, (b, H, P, N), and then no gradient (the prefill's
/// form). Resets as in [`ssd_chunked`].
#[allow(clippy::too_many_arguments)]
pub fn ssd_scan(
    x: &Tensor,
    dt: &Tensor,
    a: &Tensor,
    bm: &Tensor,
    cm: &Tensor,
    d: &Tensor,
    resets: Option<&Tensor>,
    last_state: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (b, l, hn, p) = x.dims4()?;
    let (g, n) = (bm.dim(2)?, bm.dim(3)?);
    let per = hn / g;
    // Per channel: dt (b, l, H, P), a (H, P, N), D (H, P).
    let dt = dt.unsqueeze(3)?.broadcast_as((b, l, hn, p))?;
    let a = a.reshape((hn, 1, 1))?.broadcast_as((hn, p, n))?;
    let d = d.reshape((hn, 1))?.broadcast_as((hn, p))?;
    let opts = ScanOptions {
        delta_bias: None,
        delta_softplus: false,
        z: None,
        resets,
        chunk: 0,
    };
    let (mut ys, mut states) = (Vec::with_capacity(g), Vec::with_capacity(g));
    for k in 0..g {
        // The heads reading group k, as per * P channels.
        let channels = |t: &Tensor, dim: usize, shape: &[usize]| -> Result<Tensor> {
            t.narrow(dim, k * per, per)?.reshape(shape)?.contiguous()
        };
        let u = channels(x, 2, &[b, l, per * p])?;
        let delta = channels(&dt, 2, &[b, l, per * p])?;
        let a = channels(&a, 0, &[per * p, n])?;
        let d = channels(&d, 0, &[per * p])?;
        let group = |t: &Tensor| t.narrow(2, k, 1)?.reshape((b, l, n))?.contiguous();
        let (bk, ck) = (group(bm)?, group(cm)?);
        if last_state {
            let (y, h) = selective_scan_with_state(&u, &delta, &a, &bk, &ck, &d, &opts)?;
            ys.push(y);
            states.push(h.reshape((b, per, p, n))?);
        } else {
            ys.push(selective_scan(&u, &delta, &a, &bk, &ck, &d, &opts)?);
        }
    }
    let y = Tensor::cat(&ys, 2)?.reshape((b, l, hn, p))?;
    let state = match last_state {
        true => Some(Tensor::cat(&states, 1)?),
        false => None,
    };
    Ok((y, state))
}
