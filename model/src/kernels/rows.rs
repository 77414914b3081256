//! What every layer kind's CPU fast step is made of (see [`crate::decode`]): a token is a row
//! of plain `f32`s, a layer's weights are read in place from its tensors (or from 8-bit copies
//! of its projections) by name, and a kind implements [`FastMixer`] over them. The elementwise
//! pieces here are branch-free (the scan's own math), so a kind's loops over its channels
//! vectorise when compiled for the CPU's widest instructions ([`isa_variants!`]).

use candle_core::{Result, Tensor};

use super::matvec::{Mat, Q8};
use super::scan::{sigmoid, softplus_sigmoid, NoFma};
use crate::layers::ops::{read_cpu, CpuRead};
use crate::layers::params::Init;

/// A layer kind's recurrent step on rows: what the decoder's CPU fast path runs per layer
/// (implemented through [`fast_mixer!`]).
pub(crate) trait FastMixer: Send + Sync {
    /// Feeds the rows `a.h` through the mixer, advancing the layer's state, into `a.out`.
    fn run(&self, a: RunArgs) -> Result<()>;
}

/// What one layer's step is given: the rows `h` (the normalised input of one sequence's
/// tokens, in order), this layer's `conv` window and `ssm` state (flat, in the shapes of the
/// kind's state; attention's keys and values, which grow) to advance, buffers that every layer of a run reuses, one output row
/// (d_model) per token to write, and the threads the projections may use.
pub(crate) struct RunArgs<'a> {
    pub h: &'a [Vec<f32>],
    pub conv: &'a mut Vec<f32>,
    pub ssm: &'a mut Vec<f32>,
    pub scratch: &'a mut Scratch,
    pub out: &'a mut [Vec<f32>],
    pub threads: usize,
}

/// Buffers of rows reused from layer to layer within one run: each layer takes the ones it
/// needs, in the widths it needs, and overwrites them.
#[derive(Default)]
pub(crate) struct Scratch {
    bufs: Vec<Vec<Vec<f32>>>,
}

impl Scratch {
    /// `N` buffers of the given (rows, width) each, contents left from earlier layers.
    pub(crate) fn take<const N: usize>(
        &mut self,
        shapes: [(usize, usize); N],
    ) -> [&mut Vec<Vec<f32>>; N] {
        if self.bufs.len() < N {
            self.bufs.resize(N, vec![]);
        }
        let mut it = self.bufs.iter_mut();
        shapes.map(|(rows, width)| {
            let buf = it.next().expect("at least N buffers, made above");
            buf.resize(rows, vec![]);
            buf.iter_mut().for_each(|r| r.resize(width, 0.0));
            buf
        })
    }
}

/// A layer's weights as its step reads them: its own tensors (contiguous f32 or bf16, read in
/// place each step) by name, and with 8-bit weights a copy of each matrix, read instead.
pub(crate) struct Weights {
    names: Vec<&'static str>,
    tensors: Vec<Tensor>,
    q8: Vec<Option<Q8>>,
}

/// The weights of [`Weights`] borrowed for one step.
pub(crate) struct Mats<'a> {
    names: &'a [&'static str],
    mats: Vec<Mat<'a>>,
}

impl Weights {
    /// The tensors of a parameter table (name, tensor, initialisation); with `int8`, 8-bit
    /// copies of its matrices.
    pub(crate) fn new(named: Vec<(&'static str, &Tensor, Init)>, int8: bool) -> Result<Weights> {
        let (mut names, mut tensors, mut q8) = (vec![], vec![], vec![]);
        for (name, t, init) in named {
            // Row-major as the step reads them (a no-op for weights as loaded or trained).
            let t = t.contiguous()?;
            q8.push(match int8 && init.is_matrix() {
                true => {
                    let (rows, cols) = t.dims2()?;
                    Some(Q8::new(Mat::of(&read_cpu(&t, "decode"))?, rows, cols))
                }
                false => None,
            });
            names.push(name);
            tensors.push(t);
        }
        Ok(Weights { names, tensors, q8 })
    }

    /// `f` with every weight borrowed as the step reads it.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Mats) -> Result<T>) -> Result<T> {
        let reads: Vec<CpuRead> = self.tensors.iter().map(|t| read_cpu(t, "decode")).collect();
        let mats = reads
            .iter()
            .zip(&self.q8)
            .map(|(r, q)| match q {
                Some(q) => Ok(Mat::Q8(q.view())),
                None => Mat::of(r),
            })
            .collect::<Result<Vec<_>>>()?;
        f(&Mats {
            names: &self.names,
            mats,
        })
    }
}

impl<'a> Mats<'a> {
    /// The matrix `name`.
    pub(crate) fn mat(&self, name: &str) -> Result<Mat<'a>> {
        match self.names.iter().position(|n| *n == name) {
            Some(i) => Ok(self.mats[i]),
            None => candle_core::bail!("decode: no weight `{name}`"),
        }
    }

    /// The vector `name` (vectors are always f32: only matrices are held in bf16 or 8 bits).
    pub(crate) fn vec(&self, name: &str) -> Result<&'a [f32]> {
        match self.mat(name)? {
            Mat::F32(s) => Ok(s),
            _ => candle_core::bail!("decode: the vector weight `{name}` is not f32"),
        }
    }
}

pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

/// Branch-free (the scan's own math), so the loops over a layer's channels vectorise: as
/// library calls, exp and log1p were several percent of a step.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x * sigmoid::<NoFma>(x)
}

#[inline(always)]
pub(crate) fn softplus(x: f32) -> f32 {
    softplus_sigmoid::<NoFma>(x).0
}

/// The depthwise causal conv (weights (channels, k), bias) over the window [state (k - 1), x],
/// then SiLU, into `out`; shifts x into the state. As many channels as `x` has.
#[inline(always)]
pub(crate) fn conv_silu(w: &[f32], b: &[f32], x: &[f32], window: &mut [f32], out: &mut [f32]) {
    let k = w.len() / x.len().max(1);
    for (ch, (&xc, o)) in x.iter().zip(out.iter_mut()).enumerate() {
        let w = &w[ch * k..(ch + 1) * k];
        let s = &mut window[ch * (k - 1)..(ch + 1) * (k - 1)];
        let mut acc = b[ch] + w[k - 1] * xc;
        for j in 0..k - 1 {
            acc += w[j] * s[j];
        }
        s.copy_within(1.., 0);
        s[k - 2] = xc;
        *o = silu(acc);
    }
}

/// Implements [`FastMixer`] for `$step`, whose `#[inline(always)]` method `run_body` (the
/// trait's `run`) is compiled for the widest vector instructions the CPU has (AVX-512,
/// AVX2+FMA, or the baseline), so that the elementwise loops inlined into it vectorise.
macro_rules! fast_mixer {
    ($step:ty) => {
        impl $step {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn run_avx512(
                &self,
                a: $crate::kernels::rows::RunArgs,
            ) -> candle_core::Result<()> {
                self.run_body(a)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn run_avx2(
                &self,
                a: $crate::kernels::rows::RunArgs,
            ) -> candle_core::Result<()> {
                self.run_body(a)
            }
        }

        impl $crate::kernels::rows::FastMixer for $step {
            fn run(&self, a: $crate::kernels::rows::RunArgs) -> candle_core::Result<()> {
                match $crate::kernels::simd::isa() {
                    // Safety: the CPU has the features (checked at run time by `isa`).
                    #[cfg(target_arch = "x86_64")]
                    $crate::kernels::simd::Isa::Avx512 => unsafe { self.run_avx512(a) },
                    #[cfg(target_arch = "x86_64")]
                    $crate::kernels::simd::Isa::Avx2 => unsafe { self.run_avx2(a) },
                    _ => self.run_body(a),
                }
            }
        }
    };
}
pub(crate) use fast_mixer;
