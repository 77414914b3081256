//! Causal depthwise conv1d written as shifted slices (candle's grouped conv1d runs one
//! convolution per channel), with document resets: the window never reaches back past the start
//! of the current document.

use candle_core::{DType, IndexOp, Result, Tensor};

use crate::layers::ops::{contiguous, read_cpu};

/// Per-shift validity masks derived from a reset mask: `masks[s - 1][b, t] = 1` when x[t - s]
/// belongs to the same document as x[t], for s = 1 .. d_conv - 1. Shape of each: (b, l, 1), f32.
struct ConvMask {
    masks: Vec<Tensor>,
}

impl ConvMask {
    /// `resets`: (b, l), nonzero at the first position of a document.
    fn new(resets: &Tensor, d_conv: usize) -> Result<Self> {
        let (b, l) = resets.dims2()?;
        let starts = document_starts(resets)?;
        let mut masks = Vec::with_capacity(d_conv.saturating_sub(1));
        for s in 1..d_conv {
            let m: Vec<f32> = (0..b * l)
                .map(|i| {
                    let t = i % l;
                    f32::from(u8::from(t >= s && t - s >= starts[i] as usize))
                })
                .collect();
            masks.push(Tensor::from_vec(m, (b, l, 1), resets.device())?);
        }
        Ok(ConvMask { masks })
    }
}

/// start[b, t]: the position of the document start at or before t, from `resets` (b, l),
/// nonzero at the first position of a document.
fn document_starts(resets: &Tensor) -> Result<Vec<u32>> {
    let (b, l) = resets.dims2()?;
    let r = resets
        .ne(0f64)?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()?;
    let mut s = vec![0u32; b * l];
    for bi in 0..b {
        let mut cur = 0u32;
        for t in 0..l {
            if r[bi * l + t] != 0 {
                cur = t as u32;
            }
            s[bi * l + t] = cur;
        }
    }
    Ok(s)
}

/// y[b, t, c] = bias[c] + sum_k w[c, 0, k] * x[b, t - (K - 1 - k), c], zero before the sequence
/// and before the start of x[b, t]'s document (`resets`: (b, l), nonzero at document starts).
/// x: (b, l, d), w: (d, 1, K), bias: (d). Built from shifted slices of basic ops: the path of
/// every device but the CPU (candle's grouped conv1d runs one convolution per channel).
pub fn causal_conv1d(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    resets: Option<&Tensor>,
) -> Result<Tensor> {
    let (_b, l, _d) = x.dims3()?;
    let k = w.dim(2)?;
    let mask = resets.map(|r| ConvMask::new(r, k)).transpose()?;
    let xpad = if k > 1 {
        x.pad_with_zeros(1, k - 1, 0)?
    } else {
        x.clone()
    };
    let mut acc = x
        .broadcast_mul(&w.i((.., 0, k - 1))?)?
        .broadcast_add(bias)?;
    for j in 0..k - 1 {
        let s = k - 1 - j;
        let mut term = xpad.narrow(1, j, l)?.broadcast_mul(&w.i((.., 0, j))?)?;
        if let Some(m) = &mask {
            term = term.broadcast_mul(&m.masks[s - 1])?;
        }
        acc = (acc + term)?;
    }
    Ok(acc)
}

/// `silu(causal_conv1d(x, w, bias, resets))` as one op with its own backward, on the CPU and on
/// NVIDIA GPUs (`conv.cu`; one pass instead of ~10 elementwise ops forward and ~25 backward);
/// other devices use the shifted-slice version above, with the same document masking.
pub fn causal_conv1d_silu(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    resets: Option<&Tensor>,
) -> Result<Tensor> {
    if !crate::kernels::has_kernels(x.device()) || x.dtype() != DType::F32 {
        return causal_conv1d(x, w, bias, resets)?.silu();
    }
    let (_b, _l, d) = x.dims3()?;
    let k = w.dim(2)?;
    if w.dims() != [d, 1, k] || bias.dims() != [d] {
        candle_core::bail!(
            "conv1d: weight {:?} / bias {:?} for {d} channels",
            w.dims(),
            bias.dims()
        )
    }
    let starts = resets
        .map(document_starts)
        .transpose()?
        .map(std::sync::Arc::new);
    let params = Tensor::cat(&[w.reshape((d, k))?, bias.unsqueeze(1)?], 1)?.contiguous()?;
    let x = x.contiguous()?;
    x.apply_op2(&params, ConvSiluOp { starts })
}

/// The conv window after a sequence x (b, l, ch): its last `k - 1` inputs as (b, ch, k - 1),
/// zeros in front when the sequence is shorter (the causal conv pads with zeros too).
pub(crate) fn conv_tail(x: &Tensor, k: usize) -> Result<Tensor> {
    let (b, l, ch) = x.dims3()?;
    let keep = (k - 1).min(l);
    let tail = x.narrow(1, l - keep, keep)?.transpose(1, 2)?; // (b, ch, keep)
    if keep == k - 1 {
        return tail.contiguous();
    }
    let pad = Tensor::zeros((b, ch, k - 1 - keep), x.dtype(), x.device())?;
    Tensor::cat(&[&pad, &tail], 2)?.contiguous()
}

/// One position of [`causal_conv1d`] in recurrent form: x (b, ch) after the window `state`
/// (b, ch, k - 1) of the inputs before it -> the conv output (b, ch), before any activation;
/// `state` then holds the last k - 1 inputs, x included.
pub(crate) fn conv_step(
    state: &mut Tensor,
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
) -> Result<Tensor> {
    let window = Tensor::cat(&[&*state, &x.unsqueeze(2)?], 2)?; // (b, ch, k)
    let k = window.dim(2)?;
    *state = window.narrow(2, 1, k - 1)?.contiguous()?;
    window
        .broadcast_mul(&w.squeeze(1)?)?
        .sum(candle_core::D::Minus1)?
        .broadcast_add(bias)
}

#[derive(Clone, Debug)]
struct ConvSiluOp {
    /// Document start of each (b, t), or None for no resets.
    starts: Option<std::sync::Arc<Vec<u32>>>,
}

struct ConvSiluBwd {
    op: ConvSiluOp,
    grad: Tensor,
}

/// Channels per task.
const CBLK: usize = 64;

#[inline(always)]
fn silu_and_grad(p: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + (-p).exp());
    (p * s, s * (1.0 + p * (1.0 - s)))
}

/// The weights (and bias, last) of channels [c0, c1) from the (d, k + 1) layout into a
/// (k + 1, c1 - c0) one, so that the loops over channels run over contiguous memory.
fn tap_major(p: &[f32], c0: usize, c1: usize, k1: usize) -> Vec<f32> {
    let w = c1 - c0;
    let mut taps = vec![0f32; k1 * w];
    for (j, pj) in p[c0 * k1..c1 * k1].chunks(k1).enumerate() {
        for (kk, &v) in pj.iter().enumerate() {
            taps[kk * w + j] = v;
        }
    }
    taps
}

#[derive(Clone, Copy)]
struct Ptr(*mut f32);
unsafe impl Send for Ptr {}
unsafe impl Sync for Ptr {}

impl ConvSiluOp {
    /// The op's sizes and starts for the CUDA kernels.
    #[cfg(feature = "cuda")]
    fn cuda_dims(
        &self,
        l1: &candle_core::Layout,
        l2: &candle_core::Layout,
    ) -> Result<super::conv_cuda::Conv<'_>> {
        let (b, l, d) = l1.shape().dims3()?;
        let (_, k1) = l2.shape().dims2()?;
        Ok(super::conv_cuda::Conv {
            dims: (b, l, d, k1 - 1),
            starts: self.starts.as_deref().map(Vec::as_slice),
        })
    }

    fn valid(&self, bi: usize, l: usize, t: usize, s: usize) -> bool {
        t >= s
            && match &self.starts {
                Some(st) => t - s >= st[bi * l + t] as usize,
                None => true,
            }
    }

    /// Pre-activations of channels [c0, c1) for batch row bi, written to `pre` ((l, c1 - c0));
    /// `taps` are those channels' weights from [`tap_major`].
    #[allow(clippy::too_many_arguments)]
    fn pre(
        &self,
        x: &[f32],
        taps: &[f32],
        dims: (usize, usize, usize, usize),
        bi: usize,
        c0: usize,
        c1: usize,
        pre: &mut [f32],
    ) {
        let (_b, l, d, k) = dims;
        let w = c1 - c0;
        for t in 0..l {
            let row = &mut pre[t * w..(t + 1) * w];
            row.copy_from_slice(&taps[k * w..]);
            for kk in 0..k {
                let s = k - 1 - kk;
                if !self.valid(bi, l, t, s) {
                    continue;
                }
                let xr = &x[(bi * l + t - s) * d + c0..(bi * l + t - s) * d + c1];
                for ((r, &tap), &xv) in row.iter_mut().zip(&taps[kk * w..]).zip(xr) {
                    *r += tap * xv;
                }
            }
        }
    }
}

impl candle_core::CustomOp2 for ConvSiluOp {
    fn name(&self) -> &'static str {
        "causal-conv1d-silu"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (b, l, d) = l1.shape().dims3()?;
        let (_, k1) = l2.shape().dims2()?;
        let x = contiguous::<f32>(s1, l1, "conv1d: input")?;
        let p = contiguous::<f32>(s2, l2, "conv1d: weights")?;
        let dims = (b, l, d, k1 - 1);
        let mut out = vec![0f32; b * l * d];
        let op = Ptr(out.as_mut_ptr());
        let nblk = d.div_ceil(CBLK);
        (0..b * nblk).into_par_iter().for_each(|task| {
            let op = op;
            let (bi, blk) = (task / nblk, task % nblk);
            let (c0, c1) = (blk * CBLK, ((blk + 1) * CBLK).min(d));
            let w = c1 - c0;
            let mut pre = vec![0f32; l * w];
            let taps = tap_major(p, c0, c1, k1);
            self.pre(x, &taps, dims, bi, c0, c1, &mut pre);
            for t in 0..l {
                for j in 0..w {
                    let v = silu_and_grad(pre[t * w + j]).0;
                    unsafe { *op.0.add((bi * l + t) * d + c0 + j) = v };
                }
            }
        });
        Ok((candle_core::CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        super::conv_cuda::forward(&self.cuda_dims(l1, l2)?, (s1, l1), (s2, l2))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let bwd = ConvSiluBwd {
            op: self.clone(),
            grad: grad.contiguous()?,
        };
        let flat = x.apply_op2_no_bwd(params, &bwd)?;
        let n1 = x.elem_count();
        let gx = flat.narrow(0, 0, n1)?.reshape(x.shape())?;
        let gp = flat
            .narrow(0, n1, params.elem_count())?
            .reshape(params.shape())?;
        Ok((Some(gx), Some(gp)))
    }
}

impl candle_core::CustomOp2 for ConvSiluBwd {
    fn name(&self) -> &'static str {
        "causal-conv1d-silu-bwd"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        let dims = self.op.cuda_dims(l1, l2)?;
        crate::kernels::nvrtc::on_gpu(&self.grad, "conv1d: the output gradient", |g, gl| {
            super::conv_cuda::backward(&dims, (s1, l1), (s2, l2), (g, gl))
        })
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (b, l, d) = l1.shape().dims3()?;
        let (_, k1) = l2.shape().dims2()?;
        let k = k1 - 1;
        let x = contiguous::<f32>(s1, l1, "conv1d: input")?;
        let p = contiguous::<f32>(s2, l2, "conv1d: weights")?;
        let grad = read_cpu(&self.grad, "conv1d: output gradient");
        let g = grad.f32s()?;
        let dims = (b, l, d, k);
        let mut out = vec![0f32; b * l * d + d * k1];
        let (gx, gp) = out.split_at_mut(b * l * d);
        let gxp = Ptr(gx.as_mut_ptr());
        // Tasks own channel blocks across all batch rows: dW and d_bias are summed in a fixed
        // order, dx is written to disjoint columns.
        gp.par_chunks_mut(CBLK * k1)
            .enumerate()
            .for_each(|(blk, gpb)| {
                let gxp = gxp;
                let (c0, c1) = (blk * CBLK, ((blk + 1) * CBLK).min(d));
                let w = c1 - c0;
                let mut pre = vec![0f32; l * w];
                let taps = tap_major(p, c0, c1, k1);
                let mut gtaps = vec![0f32; k1 * w];
                for bi in 0..b {
                    self.op.pre(x, &taps, dims, bi, c0, c1, &mut pre);
                    // pre <- d pre = g * silu'(pre)
                    for t in 0..l {
                        let gr = &g[(bi * l + t) * d + c0..(bi * l + t) * d + c1];
                        for (pv, &gv) in pre[t * w..(t + 1) * w].iter_mut().zip(gr) {
                            *pv = gv * silu_and_grad(*pv).1;
                        }
                    }
                    for t in 0..l {
                        let dp = &pre[t * w..(t + 1) * w];
                        for (a, &v) in gtaps[k * w..].iter_mut().zip(dp) {
                            *a += v;
                        }
                        for kk in 0..k {
                            let s = k - 1 - kk;
                            if !self.op.valid(bi, l, t, s) {
                                continue;
                            }
                            let src = (bi * l + t - s) * d + c0;
                            let xr = &x[src..src + w];
                            let gt = &mut gtaps[kk * w..(kk + 1) * w];
                            let tp = &taps[kk * w..(kk + 1) * w];
                            // Safety: this task alone writes columns [c0, c1) of dx.
                            let gxr = unsafe { std::slice::from_raw_parts_mut(gxp.0.add(src), w) };
                            for j in 0..w {
                                gt[j] += dp[j] * xr[j];
                                gxr[j] += tp[j] * dp[j];
                            }
                        }
                    }
                }
                for j in 0..w {
                    for kk in 0..k1 {
                        gpb[j * k1 + kk] = gtaps[kk * w + j];
                    }
                }
            });
        let len = out.len();
        Ok((
            candle_core::CpuStorage::F32(out),
            candle_core::Shape::from(len),
        ))
    }
}
