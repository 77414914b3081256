//! CPU kernel of the fused selective scan (forward and backward).
//!
//! Work is split into independent tasks of (batch row, group of 16 channels); rayon runs the tasks
//! in any order but every task writes only its own outputs, and the reductions over channels
//! (dB, dC) and over batch rows (dA, dD, d_bias) are done afterwards in a fixed order, so the
//! result is bit-identical at any thread count.
//!
//! Inside a task the 16 channels are processed one after the other; the SSM state of one channel
//! is a `[f32; N]` array (registers), and every per-state loop runs over fixed-size arrays that
//! the compiler vectorises. Per-time-step quantities that only depend on the channel (softplus of
//! dt, sigmoid, SiLU of z) are computed beforehand for 16 channels at once, also vectorised.
//! The kernel is compiled three times (AVX-512, AVX2+FMA, baseline) and picked at runtime.
//!
//! The forward never stores states. The backward recomputes them: per channel, a first pass
//! records the state at chunk boundaries (checkpoints every `chunk` steps), then the chunks are
//! processed last to first, recomputing the states of one chunk into a small buffer and running
//! the reverse recurrence through it.

use rayon::prelude::*;

use super::math::{exp_f, hsum, sigmoid, softplus_sigmoid, Arith, NoFma, WithFma};
use crate::kernels::simd::{isa, Isa};

pub use crate::kernels::simd::G;
type Lanes = [f32; G];

/// Shapes and flags of one scan call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub l: usize,
    pub d: usize,
    pub n: usize,
    pub softplus: bool,
    pub chunk: usize,
}

/// Inputs, all contiguous row-major: u, delta, z: (b, l, d); bc: (b, l, 2n) = [B | C];
/// params: (d, n + 2) = [A | D | delta_bias]; resets: (b, l), nonzero = reset before this step.
pub struct Inputs<'a> {
    pub u: &'a [f32],
    pub delta: &'a [f32],
    pub z: Option<&'a [f32]>,
    pub bc: &'a [f32],
    pub params: &'a [f32],
    pub resets: Option<&'a [u8]>,
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[inline(always)]
fn load_n<const N: usize>(s: &[f32], off: usize) -> [f32; N] {
    let mut a = [0f32; N];
    a.copy_from_slice(&s[off..off + N]);
    a
}

/// Loads `cnt` contiguous values into lanes (missing lanes are 0).
#[inline(always)]
fn load_lanes(s: &[f32], off: usize, cnt: usize) -> Lanes {
    let mut a = [0f32; G];
    if cnt == G {
        a.copy_from_slice(&s[off..off + G]);
    } else {
        a[..cnt].copy_from_slice(&s[off..off + cnt]);
    }
    a
}

#[inline(always)]
unsafe fn store_lanes(p: SendPtr, off: usize, cnt: usize, v: &Lanes) {
    std::ptr::copy_nonoverlapping(v.as_ptr(), p.0.add(off), cnt);
}

/// exp(dt A_k) for every k. A channel whose A is one value repeated (Mamba-2's per-head A, run
/// through this scan channel by channel) takes one exp instead of N, with the same bits.
#[inline(always)]
fn decay<M: Arith, const N: usize>(dt: f32, a: &[f32; N], scalar: bool) -> [f32; N] {
    if scalar {
        return [exp_f::<M>(dt * a[0]); N];
    }
    let mut da = [0f32; N];
    for k in 0..N {
        da[k] = exp_f::<M>(dt * a[k]);
    }
    da
}

// ---------------------------------------------------------------------------------------------
// Forward

#[inline(always)]
fn fwd_task<M: Arith, const N: usize>(
    dm: &Dims,
    x: &Inputs,
    out: SendPtr,
    last: Option<SendPtr>,
    bi: usize,
    g: usize,
) {
    let (l, d) = (dm.l, dm.d);
    let c0 = g * G;
    let cnt = G.min(d - c0);
    let np = N + 2;
    let mut dtb: Vec<Lanes> = vec![[0.0; G]; l];
    let mut ub: Vec<Lanes> = vec![[0.0; G]; l];
    let mut yb: Vec<Lanes> = vec![[0.0; G]; l];
    let mut bias = [0f32; G];
    for j in 0..cnt {
        bias[j] = x.params[(c0 + j) * np + N + 1];
    }
    for t in 0..l {
        let off = (bi * l + t) * d + c0;
        let dl = load_lanes(x.delta, off, cnt);
        let mut dt = [0f32; G];
        for j in 0..G {
            let v = dl[j] + bias[j];
            dt[j] = if dm.softplus {
                softplus_sigmoid::<M>(v).0
            } else {
                v
            };
        }
        dtb[t] = dt;
        ub[t] = load_lanes(x.u, off, cnt);
    }
    let resets = x.resets.map(|r| &r[bi * l..(bi + 1) * l]);
    for j in 0..cnt {
        let c = c0 + j;
        let a: [f32; N] = load_n(x.params, c * np);
        let scalar = a.iter().all(|&v| v == a[0]);
        let dskip = x.params[c * np + N];
        let mut h = [0f32; N];
        for t in 0..l {
            if let Some(r) = resets {
                if r[t] != 0 {
                    h = [0.0; N];
                }
            }
            let dt = dtb[t][j];
            let u = ub[t][j];
            let du = dt * u;
            let boff = (bi * l + t) * 2 * N;
            let bb: [f32; N] = load_n(x.bc, boff);
            let cc: [f32; N] = load_n(x.bc, boff + N);
            let mut hc = [0f32; N];
            let da = decay::<M, N>(dt, &a, scalar);
            for k in 0..N {
                h[k] = M::fma(da[k], h[k], du * bb[k]);
                hc[k] = h[k] * cc[k];
            }
            yb[t][j] = M::fma(dskip, u, hsum(hc));
        }
        if let Some(p) = last {
            // Safety: each (sequence, channel) row of the (b, d, n) state has one writer.
            unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), p.0.add((bi * d + c) * N), N) };
        }
    }
    for t in 0..l {
        let off = (bi * l + t) * d + c0;
        let mut y = yb[t];
        if let Some(z) = x.z {
            let zl = load_lanes(z, off, cnt);
            for j in 0..G {
                y[j] *= zl[j] * sigmoid::<M>(zl[j]);
            }
        }
        unsafe { store_lanes(out, off, cnt, &y) };
    }
}

// ---------------------------------------------------------------------------------------------
// Backward

/// Output pointers of one backward task. `dbc` is this task's private (l, 2n) partial of dB|dC;
/// `dparams` is this task's private (cnt, n + 2) partial of dA|dD|d_bias.
struct BwdOut {
    du: SendPtr,
    ddelta: SendPtr,
    dz: Option<SendPtr>,
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bwd_task<M: Arith, const N: usize>(
    dm: &Dims,
    x: &Inputs,
    dout: &[f32],
    o: &BwdOut,
    dbc: &mut [f32],
    dparams: &mut [f32],
    bi: usize,
    g: usize,
) {
    let (l, d) = (dm.l, dm.d);
    let c0 = g * G;
    let cnt = G.min(d - c0);
    let np = N + 2;
    let kc = dm.chunk.max(1).min(l.max(1));
    let nchunks = l.div_ceil(kc);
    let mut dtb: Vec<Lanes> = vec![[0.0; G]; l];
    let mut sigb: Vec<Lanes> = vec![[0.0; G]; l];
    let mut ub: Vec<Lanes> = vec![[0.0; G]; l];
    let mut dyb: Vec<Lanes> = vec![[0.0; G]; l];
    let mut yb: Vec<Lanes> = vec![[0.0; G]; l];
    let mut dub: Vec<Lanes> = vec![[0.0; G]; l];
    let mut ddb: Vec<Lanes> = vec![[0.0; G]; l];
    let mut hbuf: Vec<[f32; N]> = vec![[0.0; N]; kc];
    let mut dabuf: Vec<[f32; N]> = vec![[0.0; N]; kc];
    let mut ckpt: Vec<[f32; N]> = vec![[0.0; N]; nchunks];
    let mut bias = [0f32; G];
    for j in 0..cnt {
        bias[j] = x.params[(c0 + j) * np + N + 1];
    }
    for t in 0..l {
        let off = (bi * l + t) * d + c0;
        let dl = load_lanes(x.delta, off, cnt);
        let mut dt = [0f32; G];
        let mut sg = [1f32; G];
        for j in 0..G {
            let v = dl[j] + bias[j];
            if dm.softplus {
                let (a, b) = softplus_sigmoid::<M>(v);
                dt[j] = a;
                sg[j] = b;
            } else {
                dt[j] = v;
            }
        }
        dtb[t] = dt;
        sigb[t] = sg;
        ub[t] = load_lanes(x.u, off, cnt);
        let g_out = load_lanes(dout, off, cnt);
        dyb[t] = match x.z {
            Some(z) => {
                let zl = load_lanes(z, off, cnt);
                let mut v = [0f32; G];
                for j in 0..G {
                    v[j] = g_out[j] * zl[j] * sigmoid::<M>(zl[j]);
                }
                v
            }
            None => g_out,
        };
    }
    let resets = x.resets.map(|r| &r[bi * l..(bi + 1) * l]);
    let is_reset = |t: usize| resets.is_some_and(|r| r[t] != 0);
    for j in 0..cnt {
        let c = c0 + j;
        let a: [f32; N] = load_n(x.params, c * np);
        let scalar = a.iter().all(|&v| v == a[0]);
        let dskip = x.params[c * np + N];
        // Pass 1: checkpoints (state at the end of each chunk but the last).
        if nchunks > 1 {
            let mut h = [0f32; N];
            for t in 0..(nchunks - 1) * kc {
                if is_reset(t) {
                    h = [0.0; N];
                }
                let dt = dtb[t][j];
                let du = dt * ub[t][j];
                let bb: [f32; N] = load_n(x.bc, (bi * l + t) * 2 * N);
                let da = decay::<M, N>(dt, &a, scalar);
                for k in 0..N {
                    h[k] = M::fma(da[k], h[k], du * bb[k]);
                }
                if (t + 1) % kc == 0 {
                    ckpt[t / kc] = h;
                }
            }
        }
        let mut dh = [0f32; N];
        let mut da_acc = [0f32; N];
        let mut dd_acc = 0f32;
        let mut dbias_acc = 0f32;
        for ci in (0..nchunks).rev() {
            let t0 = ci * kc;
            let t1 = (t0 + kc).min(l);
            let h_start = if ci == 0 { [0f32; N] } else { ckpt[ci - 1] };
            // Recompute this chunk's states.
            let mut h = h_start;
            for t in t0..t1 {
                if is_reset(t) {
                    h = [0.0; N];
                }
                let dt = dtb[t][j];
                let u = ub[t][j];
                let du = dt * u;
                let boff = (bi * l + t) * 2 * N;
                let bb: [f32; N] = load_n(x.bc, boff);
                let cc: [f32; N] = load_n(x.bc, boff + N);
                let da = decay::<M, N>(dt, &a, scalar);
                let mut hc = [0f32; N];
                for k in 0..N {
                    h[k] = M::fma(da[k], h[k], du * bb[k]);
                    hc[k] = h[k] * cc[k];
                }
                hbuf[t - t0] = h;
                dabuf[t - t0] = da;
                if x.z.is_some() {
                    yb[t][j] = M::fma(dskip, u, hsum(hc));
                }
            }
            // Reverse recurrence through the chunk.
            for t in (t0..t1).rev() {
                let i = t - t0;
                let dy = dyb[t][j];
                let dt = dtb[t][j];
                let u = ub[t][j];
                let boff = (bi * l + t) * 2 * N;
                let bb: [f32; N] = load_n(x.bc, boff);
                let cc: [f32; N] = load_n(x.bc, boff + N);
                let reset = is_reset(t);
                let h_prev = if reset {
                    [0f32; N]
                } else if i > 0 {
                    hbuf[i - 1]
                } else {
                    h_start
                };
                let ht = hbuf[i];
                let da = dabuf[i];
                let dtu = dt * u;
                let mut hb = [0f32; N];
                let mut hda = [0f32; N];
                {
                    let pdb = &mut dbc[t * 2 * N..t * 2 * N + 2 * N];
                    let (pb, pc) = pdb.split_at_mut(N);
                    for k in 0..N {
                        dh[k] = M::fma(dy, cc[k], dh[k]);
                        pc[k] = M::fma(dy, ht[k], pc[k]);
                        pb[k] = M::fma(dh[k], dtu, pb[k]);
                        hb[k] = dh[k] * bb[k];
                        let dda = dh[k] * h_prev[k] * da[k];
                        da_acc[k] = M::fma(dda, dt, da_acc[k]);
                        hda[k] = dda * a[k];
                        dh[k] *= da[k];
                    }
                }
                if reset {
                    dh = [0.0; N];
                }
                let s_hb = hsum(hb);
                let s_hda = hsum(hda);
                dd_acc = M::fma(dy, u, dd_acc);
                dub[t][j] = M::fma(dt, s_hb, dy * dskip);
                let ddt = M::fma(u, s_hb, s_hda);
                let dd = ddt * sigb[t][j];
                ddb[t][j] = dd;
                dbias_acc += dd;
            }
        }
        let pp = &mut dparams[j * np..(j + 1) * np];
        pp[..N].copy_from_slice(&da_acc);
        pp[N] = dd_acc;
        pp[N + 1] = dbias_acc;
    }
    for t in 0..l {
        let off = (bi * l + t) * d + c0;
        unsafe {
            store_lanes(o.du, off, cnt, &dub[t]);
            store_lanes(o.ddelta, off, cnt, &ddb[t]);
        }
        if let (Some(z), Some(dzp)) = (x.z, o.dz) {
            let zl = load_lanes(z, off, cnt);
            let g_out = load_lanes(dout, off, cnt);
            let y = yb[t];
            let mut v = [0f32; G];
            for j in 0..G {
                let s = sigmoid::<M>(zl[j]);
                v[j] = g_out[j] * y[j] * s * (1.0 + zl[j] * (1.0 - s));
            }
            unsafe { store_lanes(dzp, off, cnt, &v) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: pick the instruction set once, then run the tasks.

macro_rules! variants {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        mod $name {
            use super::*;
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            pub unsafe fn avx512<const N: usize>($($arg: $ty),*) { $body::<WithFma, N>($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn avx2<const N: usize>($($arg: $ty),*) { $body::<WithFma, N>($($arg),*) }
            pub fn base<const N: usize>($($arg: $ty),*) { $body::<NoFma, N>($($arg),*) }
        }
    };
}

variants!(fwdv, fwd_task, (dm: &Dims, x: &Inputs, out: SendPtr, last: Option<SendPtr>, bi: usize, g: usize));
variants!(bwdv, bwd_task, (dm: &Dims, x: &Inputs, dout: &[f32], o: &BwdOut, dbc: &mut [f32], dparams: &mut [f32], bi: usize, g: usize));

fn run_fwd<const N: usize>(
    dm: &Dims,
    x: &Inputs,
    out: SendPtr,
    last: Option<SendPtr>,
    bi: usize,
    g: usize,
    isa: Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { fwdv::avx512::<N>(dm, x, out, last, bi, g) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { fwdv::avx2::<N>(dm, x, out, last, bi, g) },
        _ => fwdv::base::<N>(dm, x, out, last, bi, g),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_bwd<const N: usize>(
    dm: &Dims,
    x: &Inputs,
    dout: &[f32],
    o: &BwdOut,
    dbc: &mut [f32],
    dparams: &mut [f32],
    bi: usize,
    g: usize,
    isa: Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { bwdv::avx512::<N>(dm, x, dout, o, dbc, dparams, bi, g) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { bwdv::avx2::<N>(dm, x, dout, o, dbc, dparams, bi, g) },
        _ => bwdv::base::<N>(dm, x, dout, o, dbc, dparams, bi, g),
    }
}

fn fwd_n<const N: usize>(dm: &Dims, x: &Inputs, last: Option<&mut [f32]>) -> Vec<f32> {
    let mut y = vec![0f32; dm.b * dm.l * dm.d];
    let out = SendPtr(y.as_mut_ptr());
    let last = last.map(|s| {
        assert_eq!(s.len(), dm.b * dm.d * N, "scan: last-state buffer size");
        SendPtr(s.as_mut_ptr())
    });
    let ng = dm.d.div_ceil(G);
    let isa = isa();
    (0..dm.b * ng).into_par_iter().for_each(|task| {
        let (out, last) = (out, last);
        run_fwd::<N>(dm, x, out, last, task / ng, task % ng, isa);
    });
    y
}

/// Forward: returns y (b, l, d) (already gated by SiLU(z) when z is given). With `last`
/// ((b, d, n)), also writes each channel's state after the last position there (mamba_ssm's
/// `return_last_state`), from which a recurrent step continues.
pub fn forward(dm: &Dims, x: &Inputs, last: Option<&mut [f32]>) -> Vec<f32> {
    match dm.n {
        4 => fwd_n::<4>(dm, x, last),
        8 => fwd_n::<8>(dm, x, last),
        16 => fwd_n::<16>(dm, x, last),
        32 => fwd_n::<32>(dm, x, last),
        64 => fwd_n::<64>(dm, x, last),
        128 => fwd_n::<128>(dm, x, last),
        256 => fwd_n::<256>(dm, x, last),
        n => panic!("unsupported d_state {n}"),
    }
}

fn bwd_n<const N: usize>(dm: &Dims, x: &Inputs, dout: &[f32]) -> Vec<f32> {
    let (b, l, d) = (dm.b, dm.l, dm.d);
    let bld = b * l * d;
    let s = if x.z.is_some() { 3 } else { 2 };
    let np = N + 2;
    let ng = d.div_ceil(G);
    // Flat result: [du | ddelta | dz?] [dB|dC (b, l, 2n)] [dA|dD|dbias (d, n+2)].
    let mut res = vec![0f32; s * bld + b * l * 2 * N + d * np];
    let mut dbc_part = vec![0f32; b * ng * l * 2 * N];
    let mut dpar_part = vec![0f32; b * d * np];
    let base = res.as_mut_ptr();
    let o = BwdOut {
        du: SendPtr(base),
        ddelta: SendPtr(unsafe { base.add(bld) }),
        dz: if s == 3 {
            Some(SendPtr(unsafe { base.add(2 * bld) }))
        } else {
            None
        },
    };
    let isa = isa();
    // dpar_part is (b, d, np); a task owns rows [bi, g*G .. g*G+cnt). Split it per task.
    let mut par_slices: Vec<&mut [f32]> = Vec::with_capacity(b * ng);
    for row in dpar_part.chunks_mut(d * np) {
        let mut rest = row;
        for g in 0..ng {
            let cnt = G.min(d - g * G);
            let (a, r) = rest.split_at_mut(cnt * np);
            par_slices.push(a);
            rest = r;
        }
    }
    dbc_part
        .par_chunks_mut(l * 2 * N)
        .zip(par_slices.into_par_iter())
        .enumerate()
        .for_each(|(task, (dbc, dpar))| {
            run_bwd::<N>(dm, x, dout, &o, dbc, dpar, task / ng, task % ng, isa);
        });
    // Fixed-order reductions.
    let (_, rest) = res.split_at_mut(s * bld);
    let (dbc_out, dpar_out) = rest.split_at_mut(b * l * 2 * N);
    dbc_out
        .par_chunks_mut(l * 2 * N)
        .enumerate()
        .for_each(|(bi, dst)| {
            for g in 0..ng {
                let src = &dbc_part[(bi * ng + g) * l * 2 * N..(bi * ng + g + 1) * l * 2 * N];
                for (a, s) in dst.iter_mut().zip(src) {
                    *a += *s;
                }
            }
        });
    for bi in 0..b {
        let src = &dpar_part[bi * d * np..(bi + 1) * d * np];
        for (a, s) in dpar_out.iter_mut().zip(src) {
            *a += *s;
        }
    }
    res
}

/// Backward: returns the flat concatenation [du | ddelta | dz (if z)] (each (b, l, d)),
/// [dB | dC] as (b, l, 2n), and [dA | dD | d_bias] as (d, n + 2).
pub fn backward(dm: &Dims, x: &Inputs, dout: &[f32]) -> Vec<f32> {
    match dm.n {
        4 => bwd_n::<4>(dm, x, dout),
        8 => bwd_n::<8>(dm, x, dout),
        16 => bwd_n::<16>(dm, x, dout),
        32 => bwd_n::<32>(dm, x, dout),
        64 => bwd_n::<64>(dm, x, dout),
        128 => bwd_n::<128>(dm, x, dout),
        256 => bwd_n::<256>(dm, x, dout),
        n => panic!("unsupported d_state {n}"),
    }
}
