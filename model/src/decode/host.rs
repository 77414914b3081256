//! The recurrent decode step on plain `f32` slices: the CPU fast path of
//! [`Decoder`](super::Decoder). At batch 1 a step is a chain of matrix-vector products that
//! reads every weight once: memory-bound work that a general matmul serves badly (it packs the
//! whole weight matrix per call). Here each product streams the weight rows once, dot products
//! in eight lanes, split across threads by rows. Same arithmetic as
//! [`Mixer::step`](crate::layers::mixer::Mixer::step), tested against it.

use candle_core::{Result, Tensor};

use crate::layers::ops::read_cpu;
use crate::model::MambaLM;

/// Matrix-vector products above this many weights are split across threads.
const PARALLEL_WEIGHTS: usize = 1 << 20;

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Tensors of one layer, in the order [`LayerView`] reads them.
const LAYER_TENSORS: usize = 9;

/// The model's weights for the step: the model's own tensors (no copy; read in place each
/// step), plus A = -exp(A_log) per layer, computed once.
pub(super) struct Weights {
    /// embedding, head, norm_f, then per layer: norm, in_proj, conv_w, conv_b, x_proj, dt_w,
    /// dt_b, D, out_proj. Contiguous f32 on the CPU.
    tensors: Vec<Tensor>,
    /// Per layer, A = -exp(A_log), (di, n).
    a: Vec<Vec<f32>>,
    d: usize,
    di: usize,
    n: usize,
    r: usize,
    k: usize,
    vocab: usize,
    eps: f32,
    threads: usize,
}

/// One layer's weights, row-major as stored.
struct LayerView<'a> {
    norm: &'a [f32],
    /// (2 di, d)
    in_proj: &'a [f32],
    /// (di, k)
    conv_w: &'a [f32],
    conv_b: &'a [f32],
    /// (r + 2n, di)
    x_proj: &'a [f32],
    /// (di, r)
    dt_w: &'a [f32],
    dt_b: &'a [f32],
    /// A = -exp(A_log), (di, n)
    a: &'a [f32],
    d_skip: &'a [f32],
    /// (d, di)
    out_proj: &'a [f32],
}

/// All weights of one step, borrowed.
struct View<'a> {
    /// (padded_vocab, d)
    emb: &'a [f32],
    /// (padded_vocab, d): the embedding itself when tied.
    head: &'a [f32],
    norm_f: &'a [f32],
    layers: Vec<LayerView<'a>>,
}

/// One sequence's state: per layer the conv window (di, k - 1) and the SSM state (di, n).
#[derive(Clone, Debug)]
pub(super) struct SeqState {
    conv: Vec<Vec<f32>>,
    ssm: Vec<Vec<f32>>,
}

impl SeqState {
    /// Per-layer (conv, ssm) tensors of a batch as one state per sequence.
    pub(super) fn from_tensors(layers: &[(Tensor, Tensor)]) -> Result<Vec<SeqState>> {
        let b = layers.first().map_or(0, |(c, _)| c.dims()[0]);
        let rows =
            |t: &Tensor| -> Result<Vec<Vec<f32>>> { (0..b).map(|i| flat(&t.get(i)?)).collect() };
        let mut seqs = vec![
            SeqState {
                conv: vec![],
                ssm: vec![]
            };
            b
        ];
        for (c, s) in layers {
            for (seq, (c, s)) in seqs.iter_mut().zip(rows(c)?.into_iter().zip(rows(s)?)) {
                seq.conv.push(c);
                seq.ssm.push(s);
            }
        }
        Ok(seqs)
    }

    /// The inverse of [`SeqState::from_tensors`], on the model's device.
    pub(super) fn to_tensors(seqs: &[SeqState], model: &MambaLM) -> Result<Vec<(Tensor, Tensor)>> {
        let c = model.config();
        let (b, di, dev) = (seqs.len(), c.d_inner(), model.device());
        let stack = |f: &dyn Fn(&SeqState) -> &Vec<f32>, w: usize| -> Result<Tensor> {
            let v: Vec<f32> = seqs.iter().flat_map(|s| f(s).iter().copied()).collect();
            Tensor::from_vec(v, (b, di, w), dev)
        };
        (0..c.n_layer)
            .map(|i| {
                Ok((
                    stack(&|s| &s.conv[i], c.d_conv - 1)?,
                    stack(&|s| &s.ssm[i], c.d_state)?,
                ))
            })
            .collect()
    }
}

/// y = W x for W (rows, cols) row-major.
fn matvec(w: &[f32], x: &[f32], y: &mut [f32], threads: usize) {
    let cols = x.len();
    let rows = y.len();
    let body = |w: &[f32], y: &mut [f32]| {
        for (o, row) in y.iter_mut().zip(w.chunks_exact(cols)) {
            *o = dot(row, x);
        }
    };
    if threads < 2 || rows * cols < PARALLEL_WEIGHTS {
        return body(w, y);
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|s| {
        for (wc, yc) in w.chunks(per * cols).zip(y.chunks_mut(per)) {
            s.spawn(move || body(wc, yc));
        }
    });
}

/// Dot product in eight independent lanes (so the compiler vectorises it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl Weights {
    pub(super) fn new(model: &MambaLM) -> Result<Weights> {
        let c = model.config();
        let mut tensors = vec![
            model.embedding.clone(),
            model.head.clone(),
            model.norm_f.clone(),
        ];
        let mut a = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            let [in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, _, d_skip, out_proj] =
                l.mixer.tensors();
            tensors.extend(
                [
                    &l.norm, in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, d_skip, out_proj,
                ]
                .map(Tensor::clone),
            );
            a.push(flat(&l.mixer.a()?)?);
        }
        // Row-major as the step reads them (a no-op for weights as loaded or trained).
        let tensors = tensors
            .iter()
            .map(|t| t.to_dtype(candle_core::DType::F32)?.contiguous())
            .collect::<Result<Vec<_>>>()?;
        Ok(Weights {
            tensors,
            a,
            d: c.d_model,
            di: c.d_inner(),
            n: c.d_state,
            r: c.dt_rank(),
            k: c.d_conv,
            vocab: c.padded_vocab(),
            eps: c.norm_eps as f32,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// Feeds `ids[i]` to sequence `i`; returns each sequence's next-token logits over the
    /// padded vocabulary.
    pub(super) fn step(&self, ids: &[u32], seqs: &mut [SeqState]) -> Result<Vec<Vec<f32>>> {
        let reads: Vec<_> = self.tensors.iter().map(|t| read_cpu(t, "decode")).collect();
        let s = reads.iter().map(|r| r.f32s()).collect::<Result<Vec<_>>>()?;
        let layers = s[3..]
            .chunks_exact(LAYER_TENSORS)
            .zip(&self.a)
            .map(|(l, a)| LayerView {
                norm: l[0],
                in_proj: l[1],
                conv_w: l[2],
                conv_b: l[3],
                x_proj: l[4],
                dt_w: l[5],
                dt_b: l[6],
                a,
                d_skip: l[7],
                out_proj: l[8],
            })
            .collect();
        let view = View {
            emb: s[0],
            head: s[1],
            norm_f: s[2],
            layers,
        };
        Ok(ids
            .iter()
            .zip(seqs)
            .map(|(&id, st)| self.step_one(&view, id, &mut st.conv, &mut st.ssm))
            .collect())
    }

    fn step_one(&self, w: &View, id: u32, conv: &mut [Vec<f32>], ssm: &mut [Vec<f32>]) -> Vec<f32> {
        let (d, di, n, r, k) = (self.d, self.di, self.n, self.r, self.k);
        let id = (id as usize).min(self.vocab - 1);
        let mut res = w.emb[id * d..(id + 1) * d].to_vec();
        let mut xz = vec![0f32; 2 * di];
        let mut xdbl = vec![0f32; r + 2 * n];
        let mut delta = vec![0f32; di];
        let mut out = vec![0f32; d];
        let mut u = vec![0f32; di];
        for (li, l) in w.layers.iter().enumerate() {
            let h = rms_norm(&res, l.norm, self.eps);
            matvec(l.in_proj, &h, &mut xz, self.threads);
            let (x, z) = xz.split_at(di);
            // Conv over the window [state (k-1), x], then shift x into the state.
            let cw = &mut conv[li];
            for c in 0..di {
                let w = &l.conv_w[c * k..(c + 1) * k];
                let s = &mut cw[c * (k - 1)..(c + 1) * (k - 1)];
                let mut acc = l.conv_b[c] + w[k - 1] * x[c];
                for j in 0..k - 1 {
                    acc += w[j] * s[j];
                }
                s.copy_within(1.., 0);
                s[k - 2] = x[c];
                u[c] = silu(acc);
            }
            matvec(l.x_proj, &u, &mut xdbl, 1);
            let (dt, bc) = xdbl.split_at(r);
            let (bm, cm) = bc.split_at(n);
            matvec(l.dt_w, dt, &mut delta, 1);
            let hs = &mut ssm[li];
            let mut y = vec![0f32; di];
            for c in 0..di {
                let dtc = softplus(delta[c] + l.dt_b[c]);
                let du = dtc * u[c];
                let a = &l.a[c * n..(c + 1) * n];
                let hrow = &mut hs[c * n..(c + 1) * n];
                let mut acc = 0f32;
                for j in 0..n {
                    hrow[j] = (dtc * a[j]).exp() * hrow[j] + du * bm[j];
                    acc += hrow[j] * cm[j];
                }
                y[c] = (acc + l.d_skip[c] * u[c]) * silu(z[c]);
            }
            matvec(l.out_proj, &y, &mut out, self.threads);
            for (a, b) in res.iter_mut().zip(&out) {
                *a += b;
            }
        }
        let h = rms_norm(&res, w.norm_f, self.eps);
        let mut logits = vec![0f32; self.vocab];
        matvec(w.head, &h, &mut logits, self.threads);
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threaded_matvec_equals_the_plain_one() {
        let (rows, cols) = (1500, 1000);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 / 7.0).collect();
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        matvec(&w, &x, &mut a, 1);
        matvec(&w, &x, &mut b, 3);
        assert_eq!(a, b);
        let naive: f32 = w[..cols].iter().zip(&x).map(|(p, q)| p * q).sum();
        assert!((a[0] - naive).abs() < 1e-3 * naive.abs().max(1.0));
    }
}
