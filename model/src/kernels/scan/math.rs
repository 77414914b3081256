//! Scalar math of the CPU scan kernels, written branch-free over fixed-size arrays so the
//! compiler vectorises the loops that call it: exp, softplus, sigmoid, a deterministic
//! horizontal sum, and a vectorised in-place exp shared with the cross-entropy op.

use crate::kernels::simd::{isa, Isa, G};

/// Arithmetic: `WithFma` uses fused multiply-add (only in functions compiled with the fma
/// feature).
pub(crate) trait Arith {
    fn fma(a: f32, b: f32, c: f32) -> f32;
}
pub(super) struct WithFma;
pub(crate) struct NoFma;
impl Arith for WithFma {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}
impl Arith for NoFma {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// exp(x) for x <= 88 (Cephes polynomial, ~1 ulp); inputs below -87 give ~1e-38 instead of 0.
/// Branch-free so that loops over arrays vectorise.
#[inline(always)]
pub(crate) fn exp_f<M: Arith>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12582912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let tm = M::fma(x, LOG2E, MAGIC);
    let n = tm - MAGIC;
    let r = M::fma(n, -0.693_359_4, x);
    let r = M::fma(n, 2.121_944_4e-4, r);
    let r2 = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = M::fma(p, r, 1.398_199_9e-3);
    p = M::fma(p, r, 8.333_452e-3);
    p = M::fma(p, r, 4.166_579_6e-2);
    p = M::fma(p, r, 1.666_666_5e-1);
    p = M::fma(p, r, 5.000_000_1e-1);
    let e = M::fma(p, r2, r) + 1.0;
    let ni = (tm.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    e * scale
}

/// log(1 + e) for e in [0, 1], accurate also for tiny e: 2 atanh(s), s = e / (2 + e) <= 1/3.
#[inline(always)]
pub(crate) fn log1p_unit<M: Arith>(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let s2 = s * s;
    let mut p = 1.0f32 / 15.0;
    p = M::fma(p, s2, 1.0 / 13.0);
    p = M::fma(p, s2, 1.0 / 11.0);
    p = M::fma(p, s2, 1.0 / 9.0);
    p = M::fma(p, s2, 1.0 / 7.0);
    p = M::fma(p, s2, 1.0 / 5.0);
    p = M::fma(p, s2, 1.0 / 3.0);
    p = M::fma(p, s2, 1.0);
    2.0 * s * p
}

/// (softplus(x), sigmoid(x)) computed stably.
#[inline(always)]
pub(crate) fn softplus_sigmoid<M: Arith>(x: f32) -> (f32, f32) {
    let e = exp_f::<M>(-x.abs());
    let sp = x.max(0.0) + log1p_unit::<M>(e);
    let num = if x >= 0.0 { 1.0 } else { e };
    (sp, num / (1.0 + e))
}

#[inline(always)]
pub(crate) fn sigmoid<M: Arith>(x: f32) -> f32 {
    let e = exp_f::<M>(-x.abs());
    let num = if x >= 0.0 { 1.0 } else { e };
    num / (1.0 + e)
}

/// Sum with a fixed pairwise order (vectorisable, deterministic).
#[inline(always)]
pub(super) fn hsum<const N: usize>(v: [f32; N]) -> f32 {
    let mut w = v;
    let mut len = N;
    while len > 1 {
        let h = len / 2;
        for i in 0..h {
            w[i] += w[i + h];
        }
        len = h;
    }
    w[0]
}

#[inline(always)]
fn exp_sub_body<M: Arith>(v: &mut [f32], sub: f32) {
    let mut chunks = v.chunks_exact_mut(G);
    for c in &mut chunks {
        let mut a = [0f32; G];
        a.copy_from_slice(c);
        for x in a.iter_mut() {
            *x = exp_f::<M>(*x - sub);
        }
        c.copy_from_slice(&a);
    }
    for x in chunks.into_remainder() {
        *x = exp_f::<M>(*x - sub);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_sub_avx512(v: &mut [f32], sub: f32) {
    exp_sub_body::<WithFma>(v, sub)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_avx2(v: &mut [f32], sub: f32) {
    exp_sub_body::<WithFma>(v, sub)
}

/// v[i] = exp(v[i] - sub), vectorised (same accuracy as the scan's exp: ~1 ulp).
pub fn exp_sub_inplace(v: &mut [f32], sub: f32) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { exp_sub_avx512(v, sub) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { exp_sub_avx2(v, sub) },
        _ => exp_sub_body::<NoFma>(v, sub),
    }
}
