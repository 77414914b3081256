//! The tied LM head and the cross-entropy as one autograd node on the CPU: per-position
//! -log softmax(h @ E^T)[target]. The (positions, vocab) logits are the largest tensor of a
//! training step; as separate matmul and cross-entropy nodes candle would accumulate their
//! gradient twice (zeros + add each time) and allocate it anew. Here the forward keeps the
//! logits inside the op and the backward turns them into softmax - one-hot in place, then
//! multiplies back into the hidden states and the embedding.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::scan::exp_sub_inplace;
use crate::layers::linear::{f32_weight, is_float_weight, matmul_xwt, weight_for_backward};

/// Negative log-likelihood per position, (N), of `targets` (N) u32 under logits
/// `h (N, d) @ emb (V, d)^T`, emb in f32, bf16 or f16; `None` off the CPU or for h outside f32
/// (use the logits path there).
pub(crate) fn head_nll(h: &Tensor, emb: &Tensor, targets: &Tensor) -> Result<Option<Tensor>> {
    if !(super::cpu_fused(h.device()) && h.dtype() == DType::F32 && is_float_weight(emb.dtype())) {
        return Ok(None);
    }
    let (v, d) = emb.dims2()?;
    let (n, d2) = h.dims2()?;
    let targets = targets
        .flatten_all()?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?;
    if d2 != d || targets.len() != n {
        candle_core::bail!(
            "cross_entropy: {} targets for hidden states {:?} and head {:?}",
            targets.len(),
            h.dims(),
            emb.dims()
        )
    }
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= v) {
        candle_core::bail!("cross_entropy: target {bad} out of range for {v} classes")
    }
    let op = HeadNll {
        targets,
        logits: Mutex::new(None),
    };
    Ok(Some(h.contiguous()?.apply_op2(&emb.contiguous()?, op)?))
}

struct HeadNll {
    targets: Vec<u32>,
    /// The forward's logits, taken (and overwritten) by the backward.
    logits: Mutex<Option<Vec<f32>>>,
}

/// Max and sum of exp(x - max) of one row (in f64, as the plain cross-entropy op does).
fn max_and_sum(row: &[f32], tmp: &mut Vec<f32>) -> (f32, f64) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    tmp.clear();
    tmp.extend_from_slice(row);
    exp_sub_inplace(tmp, m);
    (m, tmp.iter().map(|&x| x as f64).sum())
}

impl CustomOp2 for HeadNll {
    fn name(&self) -> &'static str {
        "lm-head-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (s2, l2) = f32_weight(s2, l2)?;
        let (logits, n, v) = matmul_xwt(s1, l1, &s2, &l2)?;
        let CpuStorage::F32(logits) = logits else {
            candle_core::bail!("cross_entropy: logits are not f32")
        };
        let t = &self.targets;
        let out: Vec<f32> = logits
            .par_chunks(v)
            .enumerate()
            .map_init(Vec::new, |tmp, (i, row)| {
                let (m, s) = max_and_sum(row, tmp);
                m + (s as f32).ln() - row[t[i] as usize]
            })
            .collect();
        if let Ok(mut slot) = self.logits.lock() {
            *slot = Some(logits);
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        h: &Tensor,
        emb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (h, (emb, trained)) = (h.detach(), weight_for_backward(emb)?);
        let (v, _) = emb.dims2()?;
        let n = h.dim(0)?;
        let stashed = self.logits.lock().ok().and_then(|mut s| s.take());
        let mut logits = match stashed {
            Some(l) => l,
            // A second backward over the same graph: compute the logits again.
            None => h.matmul(&emb.t()?)?.flatten_all()?.to_vec1::<f32>()?,
        };
        let g = grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let t = &self.targets;
        // d nll_i / d logits_i = softmax(logits_i) - onehot(t_i), scaled by the incoming g_i.
        logits
            .par_chunks_mut(v)
            .enumerate()
            .for_each_init(Vec::new, |tmp, (i, row)| {
                let (m, s) = max_and_sum(row, tmp);
                let lse = m + (s as f32).ln();
                exp_sub_inplace(row, lse);
                let gi = g[i];
                for e in row.iter_mut() {
                    *e *= gi;
                }
                row[t[i] as usize] -= gi;
            });
        let dlogits = Tensor::from_vec(logits, (n, v), h.device())?;
        let dh = dlogits.matmul(&emb)?;
        let demb = match trained {
            true => Some(dlogits.t()?.matmul(&h)?),
            false => None,
        };
        Ok((Some(dh), demb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..n)
            .map(|_| (rng.next_u64() % 2001) as f32 / 500.0 - 2.0)
            .collect()
    }

    #[test]
    fn matches_logits_then_cross_entropy() -> Result<()> {
        let dev = Device::Cpu;
        let (n, d, v) = (6, 5, 11);
        let h = Var::from_vec(rand(n * d, 1), (n, d), &dev)?;
        let emb = Var::from_vec(rand(v * d, 2), (v, d), &dev)?;
        let t = Tensor::from_vec(vec![0u32, 3, 10, 7, 7, 1], n, &dev)?;
        let fused = head_nll(&h, &emb, &t)?.expect("cpu f32 takes the fused path");
        let logits = h.matmul(&emb.t()?)?;
        let plain = crate::layers::ops::log_softmax_last(&logits)?
            .gather(&t.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .neg()?;
        let diff = (&fused - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let coef = Tensor::from_vec(rand(n, 3), n, &dev)?;
        let gf = (&fused * &coef)?.sum_all()?.backward()?;
        let gp = (plain * &coef)?.sum_all()?.backward()?;
        for x in [h.as_tensor(), emb.as_tensor()] {
            let a = gf.get(x).expect("fused gradient");
            let b = gp.get(x).expect("plain gradient");
            let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "gradient differs by {d}");
        }
        // A second backward over the same graph recomputes the logits and agrees.
        let again = (fused * &coef)?.sum_all()?.backward()?;
        let d = (again.get(&h).expect("h") - gf.get(&h).expect("h"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "second backward differs by {d}");
        Ok(())
    }

    #[test]
    fn rejects_out_of_range_targets() -> Result<()> {
        let dev = Device::Cpu;
        let h = Tensor::zeros((2, 3), DType::F32, &dev)?;
        let emb = Tensor::zeros((4, 3), DType::F32, &dev)?;
        let t = Tensor::from_vec(vec![1u32, 4], 2, &dev)?;
        assert!(head_nll(&h, &emb, &t).is_err());
        Ok(())
    }
}
