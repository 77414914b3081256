//! RMSNorm that backpropagates (candle_nn::RmsNorm does not): one fused op with its own
//! backward on the CPU and on NVIDIA GPUs (`norm.cu`), basic tensor ops elsewhere.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

use crate::layers::ops::{contiguous, read_cpu};
use rayon::prelude::*;

/// x / sqrt(mean(x^2, last dim) + eps) * weight, in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if crate::kernels::has_kernels(x.device())
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
    {
        let d = x.dim(D::Minus1)?;
        if weight.dims() != [d] {
            candle_core::bail!("rms_norm: weight {:?} for last dim {d}", weight.dims())
        }
        return x
            .contiguous()?
            .apply_op2(&weight.contiguous()?, RmsNormOp { eps });
    }
    rms_norm_ops(x, weight, eps)
}

/// The same from basic ops (any device and dtype; the definition the fused op is tested against).
pub fn rms_norm_ops(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

#[derive(Clone, Copy)]
struct RmsNormOp {
    eps: f64,
}

/// Rows per backward task (fixed, so the dW reduction order does not depend on threads).
const ROWS: usize = 32;

#[inline]
fn inv_rms(row: &[f32], eps: f64) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps as f32).sqrt()
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, "rms_norm: input")?;
        let w = contiguous::<f32>(s2, l2, "rms_norm: weight")?;
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d * ROWS)
            .zip(x.par_chunks(d * ROWS))
            .for_each(|(o, xi)| {
                for (orow, xrow) in o.chunks_mut(d).zip(xi.chunks(d)) {
                    let r = inv_rms(xrow, self.eps);
                    for j in 0..d {
                        orow[j] = xrow[j] * r * w[j];
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::norm_cuda::forward((s1, l1), (s2, l2), self.eps as f32)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = RmsNormBwd {
            eps: self.eps,
            grad: grad.contiguous()?,
        };
        let flat = x.apply_op2_no_bwd(w, &op)?;
        let n = x.elem_count();
        let dx = flat.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = flat.narrow(0, n, w.elem_count())?;
        Ok((Some(dx), Some(dw)))
    }
}

struct RmsNormBwd {
    eps: f64,
    grad: Tensor,
}

impl CustomOp2 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "rms-norm-bwd"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::kernels::nvrtc::on_gpu(&self.grad, "rms_norm: the output gradient", |g, gl| {
            super::norm_cuda::backward((s1, l1), (s2, l2), (g, gl), self.eps as f32)
        })
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(s1, l1, "rms_norm: input")?;
        let w = contiguous::<f32>(s2, l2, "rms_norm: weight")?;
        let grad = read_cpu(&self.grad, "rms_norm: output gradient");
        let g = grad.f32s()?;
        let d = w.len();
        let n = x.len();
        let nchunks = n.div_ceil(d * ROWS);
        let mut out = vec![0f32; n + d];
        let mut partial = vec![0f32; nchunks * d];
        let (dx, dw) = out.split_at_mut(n);
        dx.par_chunks_mut(d * ROWS)
            .zip(partial.par_chunks_mut(d))
            .enumerate()
            .for_each(|(c, (dxc, pw))| {
                let base = c * d * ROWS;
                for (i, dxrow) in dxc.chunks_mut(d).enumerate() {
                    let xrow = &x[base + i * d..base + (i + 1) * d];
                    let grow = &g[base + i * d..base + (i + 1) * d];
                    let r = inv_rms(xrow, self.eps);
                    let mut dot = 0f32;
                    for j in 0..d {
                        dot += grow[j] * w[j] * xrow[j];
                        pw[j] += grow[j] * xrow[j] * r;
                    }
                    let k = r * r * r * dot / d as f32;
                    for j in 0..d {
                        dxrow[j] = r * grow[j] * w[j] - xrow[j] * k;
                    }
                }
            });
        for pw in partial.chunks(d) {
            for j in 0..d {
                dw[j] += pw[j];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + d)))
    }
}
