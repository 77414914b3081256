//! The recurrent decode step on plain `f32` slices: the CPU fast path of
//! [`Decoder`](super::Decoder). At batch 1 a step is a chain of matrix-vector products that
//! reads every weight once: memory-bound work that a general matmul serves badly (it packs the
//! whole weight matrix per call). Here each product streams the weight rows once, dot products
//! in sixteen lanes (compiled for AVX-512 or AVX2 when the CPU has them), split across
//! threads by rows. Same arithmetic as
//! [`Mixer::step`](crate::layers::mixer::Mixer::step), tested against it.

use candle_core::{Result, Tensor};

use candle_core::CpuStorage;
use half::bf16;
use rayon::prelude::*;

use crate::kernels::scan::cpu::{isa, Isa};
use crate::kernels::scan::exp_sub_inplace;
use crate::layers::block::BlockMixer;
use crate::layers::ops::{contiguous, read_cpu, CpuRead};
use crate::model::MambaLM;

/// Matrix-vector products above this many weights are split across threads.
const PARALLEL_WEIGHTS: usize = 1 << 20;

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

/// A weight element the step reads: f32, or bf16 (half the bytes per step) widened on the fly.
trait Elem: Copy + Sync {
    fn widen(self) -> f32;
}

impl Elem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// Values per block of an 8-bit matrix row (llama.cpp's q8_0 uses 32 too).
const Q8_BLOCK: usize = 32;

/// An 8-bit copy of a weight matrix: each row cut into blocks of [`Q8_BLOCK`] values (the last
/// may be shorter), each block stored as i8 times one f32 scale, max |w| / 127 (round to
/// nearest). A quarter of f32's bytes per step, plus the scales.
pub(super) struct Q8 {
    q: Vec<i8>,
    scales: Vec<f32>,
    cols: usize,
}

impl Q8 {
    fn new(m: Mat, rows: usize, cols: usize) -> Q8 {
        let blocks = cols.div_ceil(Q8_BLOCK);
        let (mut q, mut scales) = (
            Vec::with_capacity(rows * cols),
            Vec::with_capacity(rows * blocks),
        );
        for i in 0..rows {
            let (qr, sr) = quantize(&m.row(i, cols));
            q.extend(qr);
            scales.extend(sr);
        }
        Q8 { q, scales, cols }
    }
}

/// A weight matrix as stored, row-major.
#[derive(Clone, Copy)]
enum Mat<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    Q8(&'a Q8),
}

impl<'a> Mat<'a> {
    fn of(r: &'a CpuRead) -> Result<Mat<'a>> {
        let (s, l) = r.storage()?;
        Ok(match s {
            CpuStorage::BF16(_) => Mat::Bf16(contiguous::<bf16>(s, l, "decode")?),
            _ => Mat::F32(contiguous::<f32>(s, l, "decode")?),
        })
    }

    /// y = W x, split across `threads` when large.
    fn matvec(self, x: &[f32], y: &mut [f32], threads: usize) {
        match self {
            Mat::F32(w) => matvec(w, x, y, threads),
            Mat::Bf16(w) => matvec(w, x, y, threads),
            Mat::Q8(w) => matvec_q8(w, x, y, threads),
        }
    }

    /// Row `i` of a matrix with `cols` columns, as f32.
    fn row(self, i: usize, cols: usize) -> Vec<f32> {
        match self {
            Mat::F32(w) => w[i * cols..(i + 1) * cols].to_vec(),
            Mat::Bf16(w) => w[i * cols..(i + 1) * cols]
                .iter()
                .map(|v| v.widen())
                .collect(),
            Mat::Q8(w) => {
                let blocks = cols.div_ceil(Q8_BLOCK);
                let q = &w.q[i * cols..(i + 1) * cols];
                let s = &w.scales[i * blocks..(i + 1) * blocks];
                q.chunks(Q8_BLOCK)
                    .zip(s)
                    .flat_map(|(b, &s)| b.iter().map(move |&v| v as f32 * s))
                    .collect()
            }
        }
    }
}

/// Whether the CPU has 8-bit integer dot products on 256-bit vectors (AVX-512 VNNI).
fn vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    #[cfg(target_arch = "x86_64")]
    return *VNNI.get_or_init(|| {
        isa() == Isa::Avx512
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    });
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x` (a weight row, or the vector of a product) cut into blocks of [`Q8_BLOCK`], each block as
/// i8 times a scale, max |x| / 127, rounded to nearest: llama.cpp's q8_0.
fn quantize(x: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(x.len());
    let mut s = Vec::with_capacity(x.len().div_ceil(Q8_BLOCK));
    for block in x.chunks(Q8_BLOCK) {
        let max = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
        q.extend(block.iter().map(|v| (v * inv).round() as i8));
        s.push(max / 127.0);
    }
    (q, s)
}

/// y = W x for an 8-bit W, split across `threads` when large (as [`matvec`]). With AVX-512
/// VNNI, x is quantized too and each full block is one integer dot product; else W is widened
/// to f32 block by block.
fn matvec_q8(w: &Q8, x: &[f32], y: &mut [f32], threads: usize) {
    let cols = w.cols;
    let blocks = cols.div_ceil(Q8_BLOCK);
    let isa = isa();
    let xq = match vnni() {
        true => Some(quantize(x)),
        false => None,
    };
    let body = |q: &[i8], s: &[f32], y: &mut [f32]| match (isa, &xq) {
        // Safety: the CPU has the features (checked at run time by `isa` and `vnni`).
        #[cfg(target_arch = "x86_64")]
        (_, Some((xq, xs))) => unsafe { rows_q8_vnni(q, s, xq, xs, x, y) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, _) => unsafe { rows_q8_avx512(q, s, x, y) },
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, _) => unsafe { rows_q8_avx2(q, s, x, y) },
        _ => rows_q8(q, s, x, y),
    };
    if threads < 2 || y.len() * cols < PARALLEL_WEIGHTS {
        return body(&w.q, &w.scales, y);
    }
    let per = y.len().div_ceil(threads);
    w.q.par_chunks(per * cols)
        .zip(w.scales.par_chunks(per * blocks))
        .zip(y.par_chunks_mut(per))
        .for_each(|((q, s), y)| body(q, s, y));
}

/// y[i] = <row i of the 8-bit matrix (q, s), x>: per block, the scale times the block's x
/// folded into sixteen lanes.
#[inline(always)]
fn rows_q8(q: &[i8], s: &[f32], x: &[f32], y: &mut [f32]) {
    let cols = x.len();
    let blocks = cols.div_ceil(Q8_BLOCK);
    let full = cols / Q8_BLOCK;
    for (i, o) in y.iter_mut().enumerate() {
        let row = &q[i * cols..(i + 1) * cols];
        let scales = &s[i * blocks..(i + 1) * blocks];
        let mut acc = [0f32; 16];
        for (bi, &sc) in scales[..full].iter().enumerate() {
            // Fixed-length blocks, so the widening and the products vectorise.
            let off = bi * Q8_BLOCK;
            let qb = &row[off..off + Q8_BLOCK];
            let xb = &x[off..off + Q8_BLOCK];
            for j in 0..16 {
                acc[j] += sc * (qb[j] as f32 * xb[j] + qb[j + 16] as f32 * xb[j + 16]);
            }
        }
        *o = acc.iter().sum::<f32>() + q8_tail(row, scales, x, full);
    }
}

/// The product of a row's last block when it is shorter than [`Q8_BLOCK`] (0 when none is).
#[inline(always)]
fn q8_tail(row: &[i8], scales: &[f32], x: &[f32], full: usize) -> f32 {
    let off = full * Q8_BLOCK;
    match scales.get(full) {
        Some(&sc) => {
            sc * row[off..]
                .iter()
                .zip(&x[off..])
                .map(|(&a, b)| a as f32 * b)
                .sum::<f32>()
        }
        None => 0.0,
    }
}

/// [`rows_q8`] with x quantized too (`xq`, `xs` from [`quantize`]): per full block, one
/// 8-bit dot product (|w| times x with w's sign, as unsigned by signed bytes) scaled by both
/// blocks' scales; a shorter last block in f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512vnni,avx512vl,avx512f,avx2,fma")]
unsafe fn rows_q8_vnni(q: &[i8], s: &[f32], xq: &[i8], xs: &[f32], x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = x.len();
    let (blocks, full) = (cols.div_ceil(Q8_BLOCK), cols / Q8_BLOCK);
    for (i, o) in y.iter_mut().enumerate() {
        let row = &q[i * cols..(i + 1) * cols];
        let sc = &s[i * blocks..(i + 1) * blocks];
        let mut acc = _mm256_setzero_ps();
        for b in 0..full {
            // Safety: block b < full lies within the row and within xq.
            let w = _mm256_loadu_si256(row.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
            let v = _mm256_loadu_si256(xq.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
            let abs_w = _mm256_sign_epi8(w, w);
            let signed_v = _mm256_sign_epi8(v, w);
            let dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, signed_v);
            let scale = _mm256_set1_ps(sc[b] * xs[b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        *o = lanes.iter().sum::<f32>() + q8_tail(row, sc, x, full);
    }
}

/// [`rows_q8`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_q8_avx512(q: &[i8], s: &[f32], x: &[f32], y: &mut [f32]) {
    rows_q8(q, s, x, y)
}

/// [`rows_q8`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_q8_avx2(q: &[i8], s: &[f32], x: &[f32], y: &mut [f32]) {
    rows_q8(q, s, x, y)
}

/// y = W x for W (rows, cols) row-major.
fn matvec<T: Elem>(w: &[T], x: &[f32], y: &mut [f32], threads: usize) {
    let cols = x.len();
    let isa = isa();
    let body = |w: &[T], y: &mut [f32]| match isa {
        // Safety: the CPU has the features (checked at run time by `isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { rows_avx512(w, x, y) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { rows_avx2(w, x, y) },
        _ => rows(w, x, y),
    };
    if threads < 2 || y.len() * cols < PARALLEL_WEIGHTS {
        return body(w, y);
    }
    // On rayon's pool: spawning threads per product cost ~150 spawns per token.
    let per = y.len().div_ceil(threads);
    w.par_chunks(per * cols)
        .zip(y.par_chunks_mut(per))
        .for_each(|(wc, yc)| body(wc, yc));
}

/// y[i] = <row i of w, x>.
#[inline(always)]
fn rows<T: Elem>(w: &[T], x: &[f32], y: &mut [f32]) {
    for (o, row) in y.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot(row, x);
    }
}

/// [`rows`] compiled for AVX-512 (the default target has only SSE2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512<T: Elem>(w: &[T], x: &[f32], y: &mut [f32]) {
    rows(w, x, y)
}

/// [`rows`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<T: Elem>(w: &[T], x: &[f32], y: &mut [f32]) {
    rows(w, x, y)
}

/// Dot product in sixteen independent lanes (so the compiler vectorises it).
#[inline(always)]
fn dot<T: Elem>(a: &[T], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x.widen() * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i].widen() * y[i];
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
        })
    }

    /// Feeds `ids[i]` to sequence `i`; returns each sequence's next-token logits over the
    /// padded vocabulary.
    pub(super) fn step(&self, ids: &[u32], seqs: &mut [SeqState]) -> Result<Vec<Vec<f32>>> {
        let reads: Vec<_> = self.tensors.iter().map(|t| read_cpu(t, "decode")).collect();
        let m = reads
            .iter()
            .zip(&self.q8)
            .map(|(r, q)| match q {
                Some(q) => Ok(Mat::Q8(q)),
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
        Ok(ids
            .iter()
            .zip(seqs)
            .map(|(&id, st)| self.step_one(&view, id, &mut st.conv, &mut st.ssm))
            .collect())
    }

    /// One step of one sequence, its elementwise loops (conv, decays, state) compiled for the
    /// widest vectors the CPU has.
    fn step_one(&self, w: &View, id: u32, conv: &mut [Vec<f32>], ssm: &mut [Vec<f32>]) -> Vec<f32> {
        match isa() {
            // Safety: the CPU has the features (checked at run time by `isa`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.step_one_avx512(w, id, conv, ssm) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.step_one_avx2(w, id, conv, ssm) },
            _ => self.step_body(w, id, conv, ssm),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn step_one_avx512(
        &self,
        w: &View,
        id: u32,
        conv: &mut [Vec<f32>],
        ssm: &mut [Vec<f32>],
    ) -> Vec<f32> {
        self.step_body(w, id, conv, ssm)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn step_one_avx2(
        &self,
        w: &View,
        id: u32,
        conv: &mut [Vec<f32>],
        ssm: &mut [Vec<f32>],
    ) -> Vec<f32> {
        self.step_body(w, id, conv, ssm)
    }

    #[inline(always)]
    fn step_body(
        &self,
        w: &View,
        id: u32,
        conv: &mut [Vec<f32>],
        ssm: &mut [Vec<f32>],
    ) -> Vec<f32> {
        let (d, di, n, r, k) = (self.d, self.di, self.n, self.r, self.k);
        let id = (id as usize).min(self.vocab - 1);
        let mut res = w.emb.row(id, d);
        let mut xz = vec![0f32; 2 * di];
        let mut xdbl = vec![0f32; r + 2 * n];
        let mut delta = vec![0f32; di];
        let mut out = vec![0f32; d];
        let mut u = vec![0f32; di];
        let mut decay = vec![0f32; di * n];
        for (li, l) in w.layers.iter().enumerate() {
            let h = rms_norm(&res, l.norm, self.eps);
            l.in_proj.matvec(&h, &mut xz, self.threads);
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
            l.x_proj.matvec(&u, &mut xdbl, 1);
            let (dt, bc) = xdbl.split_at(r);
            let (bm, cm) = bc.split_at(n);
            l.dt_w.matvec(dt, &mut delta, 1);
            // The layer's decays exp(dt A) in one vectorised pass (one exp per state element:
            // as a scalar loop they were a quarter of the step).
            for c in 0..di {
                delta[c] = softplus(delta[c] + l.dt_b[c]);
                for j in 0..n {
                    decay[c * n + j] = delta[c] * l.a[c * n + j];
                }
            }
            exp_sub_inplace(&mut decay, 0.0);
            let hs = &mut ssm[li];
            let mut y = vec![0f32; di];
            for c in 0..di {
                let du = delta[c] * u[c];
                let da = &decay[c * n..(c + 1) * n];
                let hrow = &mut hs[c * n..(c + 1) * n];
                let mut acc = 0f32;
                for j in 0..n {
                    hrow[j] = da[j] * hrow[j] + du * bm[j];
                    acc += hrow[j] * cm[j];
                }
                y[c] = (acc + l.d_skip[c] * u[c]) * silu(z[c]);
            }
            l.out_proj.matvec(&y, &mut out, self.threads);
            for (a, b) in res.iter_mut().zip(&out) {
                *a += b;
            }
        }
        let h = rms_norm(&res, w.norm_f, self.eps);
        let mut logits = vec![0f32; self.vocab];
        w.head.matvec(&h, &mut logits, self.threads);
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
