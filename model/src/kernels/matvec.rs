//! Products of weight matrices with vectors for the CPU decode path: memory-bound work that a
//! general matmul serves badly (it packs the whole weight matrix per call). Each product
//! streams the weight rows once, dot products in sixteen lanes (compiled for AVX-512 or AVX2
//! when the CPU has them), split across threads by rows; several vectors (a prompt's tokens)
//! share each block of rows while it is in cache. Weights are f32, bf16 or 8-bit blocks.

use candle_core::{CpuStorage, Result};
use half::bf16;
use rayon::prelude::*;

use crate::kernels::simd::{isa, Isa};
use crate::layers::ops::{contiguous, CpuRead};

/// Matrix-vector products above this many weights are split across threads.
const PARALLEL_WEIGHTS: usize = 1 << 20;

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
pub(crate) struct Q8 {
    q: Vec<i8>,
    scales: Vec<f32>,
    cols: usize,
}

impl Q8 {
    pub(crate) fn new(m: Mat, rows: usize, cols: usize) -> Q8 {
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

    pub(crate) fn view(&self) -> Q8View<'_> {
        Q8View {
            q: &self.q,
            scales: &self.scales,
            cols: self.cols,
        }
    }
}

/// Rows of a [`Q8`] matrix, borrowed.
#[derive(Clone, Copy)]
pub(crate) struct Q8View<'a> {
    q: &'a [i8],
    scales: &'a [f32],
    cols: usize,
}

/// A weight matrix as stored, row-major.
#[derive(Clone, Copy)]
pub(crate) enum Mat<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    Q8(Q8View<'a>),
}

/// Bytes of weight rows that several vectors share while they stay in a core's cache.
const BLOCK_BYTES: usize = 128 << 10;

impl<'a> Mat<'a> {
    pub(crate) fn of(r: &'a CpuRead) -> Result<Mat<'a>> {
        let (s, l) = r.storage()?;
        Ok(match s {
            CpuStorage::BF16(_) => Mat::Bf16(contiguous::<bf16>(s, l, "decode")?),
            _ => Mat::F32(contiguous::<f32>(s, l, "decode")?),
        })
    }

    /// y = W x, split across `threads` when large.
    pub(crate) fn matvec(self, x: &[f32], y: &mut [f32], threads: usize) {
        match self {
            Mat::F32(w) => matvec(w, x, y, threads),
            Mat::Bf16(w) => matvec(w, x, y, threads),
            Mat::Q8(w) => matvec_q8(w, x, y, threads),
        }
    }

    /// ys[j] = W xs[j] for every j, each equal bit for bit to [`Mat::matvec`]'s: the rows are
    /// taken a cache-sized block at a time and every vector goes through the block before the
    /// next is read, so the matrix streams from memory once for all the vectors. Split across
    /// `threads` by rows when large.
    pub(crate) fn matmul(self, xs: &[Vec<f32>], ys: &mut [Vec<f32>], threads: usize) {
        let (Some(x0), Some(rows)) = (xs.first(), ys.first().map(Vec::len)) else {
            return;
        };
        if xs.len() == 1 {
            return self.matvec(x0, &mut ys[0], threads);
        }
        let cols = x0.len();
        let per = match threads < 2 || rows * cols < PARALLEL_WEIGHTS {
            true => rows,
            false => rows.div_ceil(threads),
        };
        let block = (BLOCK_BYTES / (cols * self.elem_bytes())).clamp(1, per);
        let part = |start: usize| {
            let end = (start + per).min(rows);
            let mut out = vec![vec![0f32; end - start]; xs.len()];
            for b in (start..end).step_by(block) {
                let b_end = (b + block).min(end);
                match self.rows(b, b_end, cols) {
                    Mat::F32(w) => rows_multi_isa(w, xs, &mut out, b - start),
                    Mat::Bf16(w) => rows_multi_isa(w, xs, &mut out, b - start),
                    w @ Mat::Q8(_) => {
                        for (x, y) in xs.iter().zip(out.iter_mut()) {
                            w.matvec(x, &mut y[b - start..b_end - start], 1);
                        }
                    }
                }
            }
            (start, out)
        };
        let parts: Vec<_> = (0..rows).step_by(per).collect();
        for (start, out) in parts.into_par_iter().map(part).collect::<Vec<_>>() {
            for (y, o) in ys.iter_mut().zip(out) {
                y[start..start + o.len()].copy_from_slice(&o);
            }
        }
    }

    /// Rows `start..end` of a matrix with `cols` columns.
    fn rows(self, start: usize, end: usize, cols: usize) -> Mat<'a> {
        match self {
            Mat::F32(w) => Mat::F32(&w[start * cols..end * cols]),
            Mat::Bf16(w) => Mat::Bf16(&w[start * cols..end * cols]),
            Mat::Q8(w) => {
                let blocks = cols.div_ceil(Q8_BLOCK);
                Mat::Q8(Q8View {
                    q: &w.q[start * cols..end * cols],
                    scales: &w.scales[start * blocks..end * blocks],
                    cols,
                })
            }
        }
    }

    /// Bytes per weight, about (an 8-bit block's scale aside).
    fn elem_bytes(self) -> usize {
        match self {
            Mat::F32(_) => 4,
            Mat::Bf16(_) => 2,
            Mat::Q8(_) => 1,
        }
    }

    /// Row `i` of a matrix with `cols` columns, as f32.
    pub(crate) fn row(self, i: usize, cols: usize) -> Vec<f32> {
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
#[inline(always)]
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

/// [`quantize`] compiled for AVX-512, where the rounding is a vector instruction (else a
/// library call per value: a few percent of an 8-bit step).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn quantize_avx512(x: &[f32]) -> (Vec<i8>, Vec<f32>) {
    quantize(x)
}

/// y = W x for an 8-bit W, split across `threads` when large (as [`matvec`]). With AVX-512
/// VNNI, x is quantized too and each full block is one integer dot product; else W is widened
/// to f32 block by block.
fn matvec_q8(w: Q8View, x: &[f32], y: &mut [f32], threads: usize) {
    let cols = w.cols;
    let blocks = cols.div_ceil(Q8_BLOCK);
    let isa = isa();
    let xq = match vnni() {
        // Safety: VNNI implies AVX-512 (checked by `vnni`).
        #[cfg(target_arch = "x86_64")]
        true => Some(unsafe { quantize_avx512(x) }),
        _ => None,
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
        return body(w.q, w.scales, y);
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
    let tail = tail_dot(ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i].widen() * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn tail_dot<T: Elem>(a: &[T], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x.widen() * y).sum()
}

/// The dot products of `a` with four vectors, each summed exactly as [`dot`] sums it: `a` is
/// loaded once for the four, and their independent sums keep the core's multipliers busy
/// where one sum waits on itself.
#[inline(always)]
fn dot4<T: Elem>(a: &[T], b: [&[f32]; 4]) -> [f32; 4] {
    // Four named sums: as one array indexed later, they stay in memory, not registers.
    let (mut s0, mut s1, mut s2, mut s3) = ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
    let ac = a.chunks_exact(16);
    let [b0, b1, b2, b3] = b.map(|b| b.chunks_exact(16));
    let tails = b.map(|b| tail_dot(ac.remainder(), &b[a.len() / 16 * 16..]));
    for ((((x, y0), y1), y2), y3) in ac.zip(b0).zip(b1).zip(b2).zip(b3) {
        for i in 0..16 {
            let w = x[i].widen();
            s0[i] += w * y0[i];
            s1[i] += w * y1[i];
            s2[i] += w * y2[i];
            s3[i] += w * y3[i];
        }
    }
    let sum = |s: [f32; 16]| s.iter().sum::<f32>();
    [
        sum(s0) + tails[0],
        sum(s1) + tails[1],
        sum(s2) + tails[2],
        sum(s3) + tails[3],
    ]
}

/// Vectors that share each load of a weight row in [`Mat::matmul`] ([`dot4`]).
const GROUP: usize = 4;

/// `out[j][at + i] = <row i of w, xs[j]>` for every row of `w`, each sum equal to [`dot`]'s:
/// four vectors at a time (they stay in the core's first cache) over all the rows (which stay
/// in the second).
#[inline(always)]
fn rows_multi<T: Elem>(w: &[T], xs: &[Vec<f32>], out: &mut [Vec<f32>], at: usize) {
    let cols = xs[0].len();
    for (x, out) in xs.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
        for (i, row) in w.chunks_exact(cols).enumerate() {
            match x {
                [x0, x1, x2, x3] => {
                    let d = dot4(row, [x0, x1, x2, x3]);
                    out.iter_mut().zip(d).for_each(|(o, d)| o[at + i] = d);
                }
                _ => out
                    .iter_mut()
                    .zip(x)
                    .for_each(|(o, x)| o[at + i] = dot(row, x)),
            }
        }
    }
}

/// [`rows_multi`] compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_multi_avx512<T: Elem>(w: &[T], xs: &[Vec<f32>], out: &mut [Vec<f32>], at: usize) {
    rows_multi(w, xs, out, at)
}

/// [`rows_multi`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_multi_avx2<T: Elem>(w: &[T], xs: &[Vec<f32>], out: &mut [Vec<f32>], at: usize) {
    rows_multi(w, xs, out, at)
}

/// [`rows_multi`] for the widest vectors the CPU has.
fn rows_multi_isa<T: Elem>(w: &[T], xs: &[Vec<f32>], out: &mut [Vec<f32>], at: usize) {
    match isa() {
        // Safety: the CPU has the features (checked at run time by `isa`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { rows_multi_avx512(w, xs, out, at) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { rows_multi_avx2(w, xs, out, at) },
        _ => rows_multi(w, xs, out, at),
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

    /// Several vectors at once, each result equal bit for bit to its own matrix-vector
    /// product, whatever the weight format, the split across threads, the groups of four and
    /// a row length that is no multiple of sixteen.
    #[test]
    fn matmul_equals_matvec_per_vector() {
        let (rows, cols) = (1400, 777);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 31 % 101) as f32 - 50.0) / 60.0)
            .collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let q = Q8::new(Mat::F32(&w), rows, cols);
        let xs: Vec<Vec<f32>> = (0..7)
            .map(|j| {
                (0..cols)
                    .map(|i| ((i * 7 + j) % 13) as f32 / 9.0 - 0.6)
                    .collect()
            })
            .collect();
        for m in [Mat::F32(&w), Mat::Bf16(&wb), Mat::Q8(q.view())] {
            for threads in [1, 2] {
                let mut ys = vec![vec![0f32; rows]; xs.len()];
                m.matmul(&xs, &mut ys, threads);
                for (x, y) in xs.iter().zip(&ys) {
                    let mut want = vec![0f32; rows];
                    m.matvec(x, &mut want, 1);
                    assert_eq!(y, &want);
                }
            }
        }
    }
}
