//! The recurrent form on plain `f32` slices: the CPU fast path of [`Decoder`](super::Decoder).
//! At batch 1 a step is a chain of matrix-vector products that reads every weight once
//! ([`super::matvec`]). A short prompt runs the same way, its tokens through each matrix
//! together (the weights stream once for the prompt) and through the conv and the scan one
//! after another: a general matmul packs every weight matrix per call, which costs more than
//! the whole product at a few rows. Same arithmetic as
//! [`Mixer::step`](crate::layers::mixer::Mixer::step), tested against it and the forward.

use candle_core::{DType, Result, Tensor};

use super::matvec::{Mat, Q8};
use crate::kernels::scan::cpu::{isa, Isa};
use crate::kernels::scan::{exp_sub_inplace, sigmoid, softplus_sigmoid, NoFma};
use crate::layers::block::BlockMixer;
use crate::layers::ops::read_cpu;
use crate::model::MambaLM;

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Tensors of one layer, in the order [`LayerView`] reads them.
const LAYER_TENSORS: usize = 9;

/// The model's weights for the step: the model's own tensors (no copy; read in place each
/// step), plus A = -exp(A_log) per layer, computed once; with 8-bit weights, an 8-bit copy of
/// every matrix, read instead.
pub(super) struct Weights {
    /// embedding, head, norm_f, then per layer: norm, in_proj, conv_w, conv_b, x_proj, dt_w,
    /// dt_b, D, out_proj. Contiguous f32 on the CPU.
    tensors: Vec<Tensor>,
    /// The 8-bit copies of the matrices among `tensors`, at the same index.
    q8: Vec<Option<Q8>>,
    /// The head is the embedding.
    tied: bool,
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
    /// Prompts up to this many tokens run here ([`Weights::prefill`]); longer ones through the
    /// full forward, whose matmuls win past it.
    pub(super) short_prompt: usize,
}

/// One layer's weights, row-major as stored.
struct LayerView<'a> {
    norm: &'a [f32],
    /// (2 di, d)
    in_proj: Mat<'a>,
    /// (di, k)
    conv_w: &'a [f32],
    conv_b: &'a [f32],
    /// (r + 2n, di)
    x_proj: Mat<'a>,
    /// (di, r)
    dt_w: Mat<'a>,
    dt_b: &'a [f32],
    /// A = -exp(A_log), (di, n)
    a: &'a [f32],
    d_skip: &'a [f32],
    /// (d, di)
    out_proj: Mat<'a>,
}

/// All weights of one step, borrowed.
struct View<'a> {
    /// (padded_vocab, d)
    emb: Mat<'a>,
    /// (padded_vocab, d): the embedding itself when tied.
    head: Mat<'a>,
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
        if c.arch != crate::Arch::Mamba1 {
            candle_core::bail!(
                "decode: a Mamba-1 state cannot continue in a {}",
                c.arch.name()
            )
        }
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

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

/// Branch-free (the scan's own math), so the loops over a layer's channels vectorise: as
/// library calls, exp and log1p were several percent of a step.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid::<NoFma>(x)
}

#[inline(always)]
fn softplus(x: f32) -> f32 {
    softplus_sigmoid::<NoFma>(x).0
}

impl Weights {
    /// The weights of `model`; with `int8`, the step reads 8-bit copies of its matrices.
    pub(super) fn new(model: &MambaLM, int8: bool) -> Result<Weights> {
        let c = model.config();
        let mut tensors = vec![
            model.embedding.clone(),
            model.head.clone(),
            model.norm_f.clone(),
        ];
        let mut a = Vec::with_capacity(model.layers.len());
        for l in &model.layers {
            let BlockMixer::Mamba1(mixer) = &l.mixer else {
                candle_core::bail!("the CPU fast path decodes Mamba-1 only")
            };
            let [in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, _, d_skip, out_proj] =
                mixer.tensors();
            tensors.extend(
                [
                    &l.norm, in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, d_skip, out_proj,
                ]
                .map(Tensor::clone),
            );
            a.push(flat(&mixer.a()?)?);
        }
        // Row-major as the step reads them (a no-op for weights as loaded or trained).
        let tensors = tensors
            .iter()
            .map(|t| t.contiguous())
            .collect::<Result<Vec<_>>>()?;
        let tied = c.tie_embeddings;
        let q8 = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // The matrices are the 2-D tensors (conv_w is (di, 1, k)); a tied head is the
                // embedding's copy.
                if !int8 || t.rank() != 2 || (tied && i == 1) {
                    return Ok(None);
                }
                let (rows, cols) = t.dims2()?;
                let read = read_cpu(t, "decode");
                Ok(Some(Q8::new(Mat::of(&read)?, rows, cols)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Weights {
            tensors,
            q8,
            tied,
            a,
            d: c.d_model,
            di: c.d_inner(),
            n: c.d_state,
            r: c.dt_rank(),
            k: c.d_conv,
            vocab: c.padded_vocab(),
            eps: c.norm_eps as f32,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            // Measured (benches/generate.rs, 130m-shaped): the forward's matmuls catch up near
            // 48 tokens in f32, near 128 in bf16 (candle's bf16 matmul is slower).
            short_prompt: match (int8, model.embedding.dtype()) {
                (false, DType::F32) => 48,
                _ => 128,
            },
        })
    }

    /// Feeds `ids[i]` to sequence `i`; returns each sequence's next-token logits over the
    /// padded vocabulary.
    pub(super) fn step(&self, ids: &[u32], seqs: &mut [SeqState]) -> Result<Vec<Vec<f32>>> {
        self.with_view(|view| {
            ids.iter()
                .zip(seqs)
                .map(|(&id, st)| self.run(view, &[id], st))
                .collect()
        })
    }

    /// Runs each prompt (at least one token each) from an empty state; returns their states
    /// and each one's next-token logits. Equal bit for bit to stepping the prompt token by
    /// token.
    pub(super) fn prefill(&self, prompts: &[&[u32]]) -> Result<(Vec<SeqState>, Vec<Vec<f32>>)> {
        let (di, k, n) = (self.di, self.k, self.n);
        let empty = SeqState {
            conv: vec![vec![0f32; di * (k - 1)]; self.a.len()],
            ssm: vec![vec![0f32; di * n]; self.a.len()],
        };
        self.with_view(|view| {
            let mut states = vec![empty.clone(); prompts.len()];
            let logits = prompts
                .iter()
                .zip(&mut states)
                .map(|(ids, st)| self.run(view, ids, st))
                .collect();
            (states, logits)
        })
    }

    /// `f` with every weight borrowed as the step reads it.
    fn with_view<T>(&self, f: impl FnOnce(&View) -> T) -> Result<T> {
        let reads: Vec<_> = self.tensors.iter().map(|t| read_cpu(t, "decode")).collect();
        let m = reads
            .iter()
            .zip(&self.q8)
            .map(|(r, q)| match q {
                Some(q) => Ok(Mat::Q8(q.view())),
                None => Mat::of(r),
            })
            .collect::<Result<Vec<_>>>()?;
        // Vectors are always f32 (only matrices are held in bf16 or 8 bits).
        let v = |i: usize| match m[i] {
            Mat::F32(s) => Ok(s),
            _ => candle_core::bail!("decode: a vector weight is not f32"),
        };
        let layers = (0..self.a.len())
            .map(|i| {
                let o = 3 + i * LAYER_TENSORS;
                Ok(LayerView {
                    norm: v(o)?,
                    in_proj: m[o + 1],
                    conv_w: v(o + 2)?,
                    conv_b: v(o + 3)?,
                    x_proj: m[o + 4],
                    dt_w: m[o + 5],
                    dt_b: v(o + 6)?,
                    a: &self.a[i],
                    d_skip: v(o + 7)?,
                    out_proj: m[o + 8],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let view = View {
            emb: m[0],
            head: if self.tied { m[0] } else { m[1] },
            norm_f: v(2)?,
            layers,
        };
        Ok(f(&view))
    }

    /// Feeds the tokens `ids` (at least one) to one sequence; returns the logits after the
    /// last. The elementwise loops (conv, decays, state) are compiled for the widest vectors
    /// the CPU has.
    fn run(&self, w: &View, ids: &[u32], st: &mut SeqState) -> Vec<f32> {
        match isa() {
            // Safety: the CPU has the features (checked at run time by `isa`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.run_avx512(w, ids, st) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.run_avx2(w, ids, st) },
            _ => self.run_body(w, ids, st),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run_avx512(&self, w: &View, ids: &[u32], st: &mut SeqState) -> Vec<f32> {
        self.run_body(w, ids, st)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, w: &View, ids: &[u32], st: &mut SeqState) -> Vec<f32> {
        self.run_body(w, ids, st)
    }

    /// Per layer: every token through each matrix at once, then through the conv and the
    /// scan one token after another.
    #[inline(always)]
    fn run_body(&self, w: &View, ids: &[u32], st: &mut SeqState) -> Vec<f32> {
        let (d, di, n, r, k) = (self.d, self.di, self.n, self.r, self.k);
        let rows = |width: usize| vec![vec![0f32; width]; ids.len()];
        let mut res: Vec<Vec<f32>> = ids
            .iter()
            .map(|&id| w.emb.row((id as usize).min(self.vocab - 1), d))
            .collect();
        let (mut xz, mut u, mut y) = (rows(2 * di), rows(di), rows(di));
        let (mut xdbl, mut delta, mut out) = (rows(r + 2 * n), rows(di), rows(d));
        let mut decay = vec![0f32; di * n];
        for (li, l) in w.layers.iter().enumerate() {
            let h: Vec<Vec<f32>> = res.iter().map(|x| rms_norm(x, l.norm, self.eps)).collect();
            l.in_proj.matmul(&h, &mut xz, self.threads);
            for (xz, u) in xz.iter().zip(u.iter_mut()) {
                // Conv over the window [state (k-1), x], then shift x into the state.
                let cw = &mut st.conv[li];
                for c in 0..di {
                    let w = &l.conv_w[c * k..(c + 1) * k];
                    let s = &mut cw[c * (k - 1)..(c + 1) * (k - 1)];
                    let mut acc = l.conv_b[c] + w[k - 1] * xz[c];
                    for j in 0..k - 1 {
                        acc += w[j] * s[j];
                    }
                    s.copy_within(1.., 0);
                    s[k - 2] = xz[c];
                    u[c] = acc;
                }
                u.iter_mut().for_each(|v| *v = silu(*v));
            }
            l.x_proj.matmul(&u, &mut xdbl, 1);
            let dts: Vec<Vec<f32>> = xdbl.iter().map(|v| v[..r].to_vec()).collect();
            l.dt_w.matmul(&dts, &mut delta, 1);
            for t in 0..ids.len() {
                let (bm, cm) = xdbl[t][r..].split_at(n);
                let (delta, u, y) = (&mut delta[t][..], &u[t][..], &mut y[t][..]);
                // The gate silu(z), into y until the scan's output multiplies it.
                y.iter_mut()
                    .zip(&xz[t][di..])
                    .for_each(|(y, &z)| *y = silu(z));
                delta
                    .iter_mut()
                    .zip(l.dt_b)
                    .for_each(|(d, b)| *d = softplus(*d + b));
                // The layer's decays exp(dt A) in one vectorised pass (one exp per state
                // element: as a scalar loop they were a quarter of the step).
                for c in 0..di {
                    for j in 0..n {
                        decay[c * n + j] = delta[c] * l.a[c * n + j];
                    }
                }
                exp_sub_inplace(&mut decay, 0.0);
                let hs = &mut st.ssm[li];
                for c in 0..di {
                    let du = delta[c] * u[c];
                    let da = &decay[c * n..(c + 1) * n];
                    let hrow = &mut hs[c * n..(c + 1) * n];
                    let mut acc = 0f32;
                    for j in 0..n {
                        hrow[j] = da[j] * hrow[j] + du * bm[j];
                        acc += hrow[j] * cm[j];
                    }
                    y[c] *= acc + l.d_skip[c] * u[c];
                }
            }
            l.out_proj.matmul(&y, &mut out, self.threads);
            for (res, out) in res.iter_mut().zip(&out) {
                res.iter_mut().zip(out).for_each(|(a, b)| *a += b);
            }
        }
        let last = res.last().map_or(&[][..], Vec::as_slice);
        let h = rms_norm(last, w.norm_f, self.eps);
        let mut logits = vec![0f32; self.vocab];
        w.head.matvec(&h, &mut logits, self.threads);
        logits
    }
}
