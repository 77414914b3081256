//! The recurrent form on plain `f32` slices: the CPU fast path of [`Decoder`](super::Decoder).
//! At batch 1 a step is a chain of matrix-vector products that reads every weight once
//! ([`super::matvec`]). A short prompt runs the same way, its tokens through each matrix
//! together (the weights stream once for the prompt) and through the conv and the scan one
//! after another: a general matmul packs every weight matrix per call, which costs more than
//! the whole product at a few rows. Either architecture: the layers share the norm, in_proj,
//! the conv, out_proj and the residual; the Mamba-1 selective scan is below, Mamba-2's heads in
//! [`super::mamba2`]. Same arithmetic as the mixers' candle steps, tested against them and the
//! forward.

use candle_core::{DType, Result, Tensor};

use super::matvec::{Mat, Q8};
use crate::config::{Arch, Config};
use crate::kernels::scan::cpu::{isa, Isa};
use crate::kernels::scan::{exp_sub_inplace, sigmoid, softplus_sigmoid, NoFma};
use crate::layers::block::BlockMixer;
use crate::layers::ops::read_cpu;
use crate::model::MambaLM;

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Tensors of one layer, in the order [`LayerView`] reads them: the shared ones, then the
/// architecture's own ([`MixerView`]).
const SHARED_TENSORS: usize = 6;

/// The model's weights for the step: the model's own tensors (no copy; read in place each
/// step), plus A = -exp(A_log) per layer, computed once; with 8-bit weights, an 8-bit copy of
/// every matrix, read instead.
pub(super) struct Weights {
    /// embedding, head, norm_f, then per layer: norm, in_proj, conv_w, conv_b, D, out_proj,
    /// and Mamba-1's x_proj, dt_w, dt_b or Mamba-2's dt_bias, gated norm. Contiguous f32 on
    /// the CPU.
    tensors: Vec<Tensor>,
    /// The 8-bit copies of the matrices among `tensors`, at the same index.
    q8: Vec<Option<Q8>>,
    /// The head is the embedding.
    tied: bool,
    /// Per layer, A = -exp(A_log): (di, n) for Mamba-1, (heads) for Mamba-2.
    a: Vec<Vec<f32>>,
    pub(super) cfg: Config,
    threads: usize,
    /// Prompts up to this many tokens run here ([`Weights::prefill`]); longer ones through the
    /// full forward, whose matmuls win past it.
    pub(super) short_prompt: usize,
}

/// One layer's weights, row-major as stored.
pub(super) struct LayerView<'a> {
    norm: &'a [f32],
    /// (2 di, d) for Mamba-1; (di + conv_dim + heads, d) for Mamba-2
    in_proj: Mat<'a>,
    /// (channels, k): di channels for Mamba-1, conv_dim for Mamba-2
    pub(super) conv_w: &'a [f32],
    pub(super) conv_b: &'a [f32],
    /// A = -exp(A_log)
    pub(super) a: &'a [f32],
    /// D, per channel (Mamba-1) or head (Mamba-2)
    pub(super) d_skip: &'a [f32],
    /// (d, di)
    out_proj: Mat<'a>,
    mixer: MixerView<'a>,
}

/// The weights only one architecture has.
enum MixerView<'a> {
    Mamba1(Mamba1View<'a>),
    Mamba2(super::mamba2::Mamba2View<'a>),
}

/// Mamba-1's own weights.
struct Mamba1View<'a> {
    /// (r + 2n, di)
    x_proj: Mat<'a>,
    /// (di, r)
    dt_w: Mat<'a>,
    dt_b: &'a [f32],
}

/// Buffers the mixers reuse from layer to layer within one run, a row per token: Mamba-1's
/// conv output u, x_proj's rows, dt and the layer's decays; Mamba-2's conv output. Empty where
/// the architecture has no use for them.
pub(super) struct Scratch {
    u: Vec<Vec<f32>>,
    xdbl: Vec<Vec<f32>>,
    delta: Vec<Vec<f32>>,
    decay: Vec<f32>,
    pub(super) xbc: Vec<f32>,
}

impl Scratch {
    fn new(c: &Config, tokens: usize) -> Scratch {
        let rows = |width: usize| vec![vec![0f32; width]; tokens];
        let (di, n) = (c.d_inner(), c.d_state);
        match c.arch {
            Arch::Mamba1 => Scratch {
                u: rows(di),
                xdbl: rows(c.dt_rank() + 2 * n),
                delta: rows(di),
                decay: vec![0f32; di * n],
                xbc: vec![],
            },
            Arch::Mamba2 => Scratch {
                u: vec![],
                xdbl: vec![],
                delta: vec![],
                decay: vec![],
                xbc: vec![0f32; c.conv_dim()],
            },
        }
    }
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

/// One sequence's state: per layer the conv window (channels, k - 1) and the SSM state
/// ((di, n) for Mamba-1, (heads, head_dim, n) for Mamba-2).
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

    /// An empty state (before the first token) of a model of `c`.
    fn empty(c: &Config) -> SeqState {
        let (conv, ssm) = state_shapes(c);
        let size = |s: &[usize]| s.iter().product::<usize>();
        SeqState {
            conv: vec![vec![0f32; size(&conv)]; c.n_layer],
            ssm: vec![vec![0f32; size(&ssm)]; c.n_layer],
        }
    }

    /// The inverse of [`SeqState::from_tensors`], on the model's device.
    pub(super) fn to_tensors(seqs: &[SeqState], model: &MambaLM) -> Result<Vec<(Tensor, Tensor)>> {
        let c = model.config();
        let (conv, ssm) = state_shapes(c);
        let stack = |f: &dyn Fn(&SeqState) -> &Vec<f32>, shape: &[usize]| -> Result<Tensor> {
            let v: Vec<f32> = seqs.iter().flat_map(|s| f(s).iter().copied()).collect();
            let mut dims = vec![seqs.len()];
            dims.extend(shape);
            Tensor::from_vec(v, dims, model.device())
        };
        (0..c.n_layer)
            .map(|i| Ok((stack(&|s| &s.conv[i], &conv)?, stack(&|s| &s.ssm[i], &ssm)?)))
            .collect()
    }
}

/// One sequence's per-layer conv window and SSM state shapes, as the candle step holds them.
fn state_shapes(c: &Config) -> (Vec<usize>, Vec<usize>) {
    let k = c.d_conv - 1;
    match c.arch {
        Arch::Mamba1 => (vec![c.d_inner(), k], vec![c.d_inner(), c.d_state]),
        Arch::Mamba2 => (
            vec![c.conv_dim(), k],
            vec![c.n_heads(), c.head_dim, c.d_state],
        ),
    }
}

pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

/// Branch-free (the scan's own math), so the loops over a layer's channels vectorise: as
/// library calls, exp and log1p were several percent of a step.
#[inline(always)]
pub(super) fn silu(x: f32) -> f32 {
    x * sigmoid::<NoFma>(x)
}

#[inline(always)]
pub(super) fn softplus(x: f32) -> f32 {
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
            tensors.push(l.norm.clone());
            match &l.mixer {
                BlockMixer::Mamba1(m) => {
                    let [in_proj, conv_w, conv_b, x_proj, dt_w, dt_b, _, d_skip, out_proj] =
                        m.tensors();
                    let own = [
                        in_proj, conv_w, conv_b, d_skip, out_proj, x_proj, dt_w, dt_b,
                    ];
                    tensors.extend(own.map(Tensor::clone));
                    a.push(flat(&m.a()?)?);
                }
                BlockMixer::Mamba2(m) => {
                    let [in_proj, conv_w, conv_b, dt_bias, a_log, d_skip, norm, out_proj] =
                        m.tensors();
                    let own = [in_proj, conv_w, conv_b, d_skip, out_proj, dt_bias, norm];
                    tensors.extend(own.map(Tensor::clone));
                    a.push(flat(&a_log.exp()?.neg()?)?);
                }
            }
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
            cfg: c.clone(),
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
        let empty = SeqState::empty(&self.cfg);
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
        let own = match self.cfg.arch {
            Arch::Mamba1 => 3,
            Arch::Mamba2 => 2,
        };
        let layers = (0..self.a.len())
            .map(|i| {
                let o = 3 + i * (SHARED_TENSORS + own);
                let e = o + SHARED_TENSORS;
                Ok(LayerView {
                    norm: v(o)?,
                    in_proj: m[o + 1],
                    conv_w: v(o + 2)?,
                    conv_b: v(o + 3)?,
                    a: &self.a[i],
                    d_skip: v(o + 4)?,
                    out_proj: m[o + 5],
                    mixer: match self.cfg.arch {
                        Arch::Mamba1 => MixerView::Mamba1(Mamba1View {
                            x_proj: m[e],
                            dt_w: m[e + 1],
                            dt_b: v(e + 2)?,
                        }),
                        Arch::Mamba2 => MixerView::Mamba2(super::mamba2::Mamba2View {
                            dt_bias: v(e)?,
                            norm: v(e + 1)?,
                        }),
                    },
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
    /// SSM one token after another.
    #[inline(always)]
    fn run_body(&self, w: &View, ids: &[u32], st: &mut SeqState) -> Vec<f32> {
        let c = &self.cfg;
        let (d, vocab, eps) = (c.d_model, c.padded_vocab(), c.norm_eps as f32);
        let rows = |width: usize| vec![vec![0f32; width]; ids.len()];
        let mut res: Vec<Vec<f32>> = ids
            .iter()
            .map(|&id| w.emb.row((id as usize).min(vocab - 1), d))
            .collect();
        let mut proj = rows(match c.arch {
            Arch::Mamba1 => 2 * c.d_inner(),
            Arch::Mamba2 => c.d_inner() + c.conv_dim() + c.n_heads(),
        });
        let (mut y, mut out) = (rows(c.d_inner()), rows(d));
        let mut scratch = Scratch::new(c, ids.len());
        for (li, l) in w.layers.iter().enumerate() {
            let h: Vec<Vec<f32>> = res.iter().map(|x| rms_norm(x, l.norm, eps)).collect();
            l.in_proj.matmul(&h, &mut proj, self.threads);
            let (conv, ssm) = (&mut st.conv[li], &mut st.ssm[li]);
            let sc = &mut scratch;
            match &l.mixer {
                MixerView::Mamba1(m) => self.mamba1(l, m, &proj, conv, ssm, sc, &mut y),
                MixerView::Mamba2(m) => self.mamba2(l, m, &proj, conv, ssm, sc, &mut y),
            }
            l.out_proj.matmul(&y, &mut out, self.threads);
            for (res, out) in res.iter_mut().zip(&out) {
                res.iter_mut().zip(out).for_each(|(a, b)| *a += b);
            }
        }
        let last = res.last().map_or(&[][..], Vec::as_slice);
        let h = rms_norm(last, w.norm_f, eps);
        let mut logits = vec![0f32; vocab];
        w.head.matvec(&h, &mut logits, self.threads);
        logits
    }

    /// Mamba-1's mixer from in_proj's rows [x | z] (one per token) to y (di each): conv + SiLU,
    /// x_proj, dt_proj, then the selective scan gated by silu(z).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn mamba1(
        &self,
        l: &LayerView,
        e: &Mamba1View,
        xz: &[Vec<f32>],
        conv: &mut [f32],
        ssm: &mut [f32],
        sc: &mut Scratch,
        y: &mut [Vec<f32>],
    ) {
        let c = &self.cfg;
        let (di, n, r) = (c.d_inner(), c.d_state, c.dt_rank());
        let Scratch {
            u,
            xdbl,
            delta,
            decay,
            ..
        } = sc;
        for (xz, u) in xz.iter().zip(u.iter_mut()) {
            conv_silu(l, &xz[..di], conv, u);
        }
        e.x_proj.matmul(u, xdbl, 1);
        let dts: Vec<Vec<f32>> = xdbl.iter().map(|v| v[..r].to_vec()).collect();
        e.dt_w.matmul(&dts, delta, 1);
        for t in 0..xz.len() {
            let (bm, cm) = xdbl[t][r..].split_at(n);
            let (delta, u, y) = (&mut delta[t][..], &u[t][..], &mut y[t][..]);
            // The gate silu(z), into y until the scan's output multiplies it.
            y.iter_mut()
                .zip(&xz[t][di..])
                .for_each(|(y, &z)| *y = silu(z));
            delta
                .iter_mut()
                .zip(e.dt_b)
                .for_each(|(d, b)| *d = softplus(*d + b));
            // The layer's decays exp(dt A) in one vectorised pass (one exp per state
            // element: as a scalar loop they were a quarter of the step).
            for ch in 0..di {
                for j in 0..n {
                    decay[ch * n + j] = delta[ch] * l.a[ch * n + j];
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
                y[ch] *= acc + l.d_skip[ch] * u[ch];
            }
        }
    }
}

/// The depthwise causal conv over the window [state (k - 1), x] then SiLU, into `out`; shifts x
/// into the state. As many channels as `x` has.
#[inline(always)]
pub(super) fn conv_silu(l: &LayerView, x: &[f32], window: &mut [f32], out: &mut [f32]) {
    let k = l.conv_w.len() / x.len().max(1);
    for (ch, (&xc, o)) in x.iter().zip(out.iter_mut()).enumerate() {
        let w = &l.conv_w[ch * k..(ch + 1) * k];
        let s = &mut window[ch * (k - 1)..(ch + 1) * (k - 1)];
        let mut acc = l.conv_b[ch] + w[k - 1] * xc;
        for j in 0..k - 1 {
            acc += w[j] * s[j];
        }
        s.copy_within(1.., 0);
        s[k - 2] = xc;
        *o = silu(acc);
    }
}
