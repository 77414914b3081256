//! Cross-entropy that backpropagates (candle's softmax_last_dim has no backward). On the CPU and
//! on NVIDIA GPUs (`loss.cu`) it is one fused op (per-row log-sum-exp forward, softmax - one-hot
//! backward); elsewhere it is built from basic ops.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use crate::layers::ops::{contiguous, log_softmax_last};

/// Mean cross-entropy. `logits`: (.., V) float; `targets`: same leading shape, u32 in [0, V);
/// `mask`: optional, same shape as targets, positions with 0 are ignored (mean over the rest).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?;
    if targets.dim(0)? != logits.dim(0)? {
        candle_core::bail!(
            "cross_entropy: {} targets for {} positions",
            targets.dim(0)?,
            logits.dim(0)?
        )
    }
    let nll = per_position_nll(&logits, &targets)?;
    mean_nll(&nll, mask)
}

/// Mean of per-position `nll` (N), or its mean over the positions where `mask` is nonzero.
pub(crate) fn mean_nll(nll: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        None => nll.mean_all(),
        Some(m) => {
            let m = m.flatten_all()?.to_dtype(nll.dtype())?;
            let denom = m
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?
                .max(1.0);
            (nll * m)?.sum_all()? / denom
        }
    }
}

/// -log softmax(logits)[target] per row; logits (N, V), targets (N) u32.
pub fn per_position_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if crate::kernels::has_kernels(logits.device()) && logits.dtype() == DType::F32 {
        return logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, CrossEntropyOp);
    }
    let logp = log_softmax_last(logits)?;
    logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
}

struct CrossEntropyOp;

fn slices<'a>(
    s1: &'a CpuStorage,
    l1: &Layout,
    s2: &'a CpuStorage,
    l2: &Layout,
) -> Result<(&'a [f32], &'a [u32], usize, usize)> {
    let (n, v) = l1.shape().dims2()?;
    let x = contiguous::<f32>(s1, l1, "cross_entropy: logits")?;
    let t = contiguous::<u32>(s2, l2, "cross_entropy: targets")?;
    if t.len() != n {
        candle_core::bail!("cross_entropy: {} targets for {n} rows", t.len())
    }
    if let Some(bad) = t.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross_entropy: target {bad} out of range for {v} classes")
    }
    Ok((x, t, n, v))
}

/// log-sum-exp of one row, using `tmp` as scratch.
fn lse(row: &[f32], tmp: &mut Vec<f32>) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    tmp.clear();
    tmp.extend_from_slice(row);
    crate::kernels::scan::exp_sub_inplace(tmp, m);
    let s: f64 = tmp.iter().map(|&x| x as f64).sum();
    m + (s as f32).ln()
}

impl CustomOp2 for CrossEntropyOp {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, t, n, v) = slices(s1, l1, s2, l2)?;
        let out: Vec<f32> = (0..n)
            .into_par_iter()
            .map_init(Vec::new, |tmp, i| {
                let row = &x[i * v..(i + 1) * v];
                lse(row, tmp) - row[t[i] as usize]
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::loss_cuda::forward((s1, l1), (s2, l2))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = CrossEntropyBwd {
            grad: grad.contiguous()?,
        };
        Ok((Some(logits.apply_op2_no_bwd(targets, &op)?), None))
    }
}

struct CrossEntropyBwd {
    grad: Tensor,
}

impl CustomOp2 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "cross-entropy-bwd"
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.grad.to_dtype(DType::F32)?.contiguous()?;
        crate::kernels::nvrtc::on_gpu(&g, "cross_entropy: the gradient", |gs, gl| {
            crate::loss_cuda::backward((s1, l1), (s2, l2), (gs, gl))
        })
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, t, n, v) = slices(s1, l1, s2, l2)?;
        let g = self.grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut out = vec![0f32; n * v];
        out.par_chunks_mut(v)
            .enumerate()
            .for_each_init(Vec::new, |tmp, (i, o)| {
                let row = &x[i * v..(i + 1) * v];
                let l = lse(row, tmp);
                o.copy_from_slice(row);
                crate::kernels::scan::exp_sub_inplace(o, l);
                let gi = g[i];
                for e in o.iter_mut() {
                    *e *= gi;
                }
                o[t[i] as usize] -= gi;
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}
