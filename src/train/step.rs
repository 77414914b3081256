//! One optimizer step's gradients: the mean loss over the micro-batches of a step, its
//! gradients summed over them (each micro-batch loss scaled by 1/accum, so the result equals
//! the gradient of the whole batch), and the evaluation loss.

use candle_core::backprop::GradStore;
use candle_core::{Device, Var};
use mamba_model::MambaLM;

use super::pack::Batch;

/// (mean loss, gradients of the mean loss) over `micro`, which must hold equal-sized batches.
/// A non-finite micro-batch loss is returned as is; the caller must not apply the step.
pub fn accumulate(
    model: &MambaLM,
    vars: &[Var],
    micro: &[Batch],
    doc_reset: bool,
) -> candle_core::Result<(f64, GradStore)> {
    let dev = model.device().clone();
    let n = micro.len() as f64;
    let mut acc = GradStore::default();
    let mut total = 0.0;
    for batch in micro {
        let (ids, targets, resets) = batch.tensors(&dev, doc_reset)?;
        let loss = model.loss(&ids, &targets, resets.as_ref(), None)?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        total += value;
        if !value.is_finite() {
            return Ok((value, acc));
        }
        let grads = (loss / n)?.backward()?;
        for v in vars {
            let Some(g) = grads.get(v.as_tensor()) else {
                continue;
            };
            let sum = match acc.get(v.as_tensor()) {
                Some(a) => (a + g)?,
                None => g.clone(),
            };
            acc.insert(v.as_tensor(), sum);
        }
    }
    Ok((total / n, acc))
}

/// Mean loss over `batches` (no gradients kept).
pub fn eval_loss(model: &MambaLM, batches: &[Batch], doc_reset: bool) -> candle_core::Result<f64> {
    let dev: &Device = model.device();
    let mut total = 0.0;
    for b in batches {
        let (ids, targets, resets) = b.tensors(dev, doc_reset)?;
        let loss = model.loss(&ids, &targets, resets.as_ref(), None)?.detach();
        total += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(total / batches.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::pack::{Packer, Window};
    use mamba_model::{clip_grad_norm, Config};

    fn batch(n: usize, seq: usize) -> Batch {
        let row: Vec<u32> = (0..(n * seq + 1) as u32)
            .map(|i| (i * 7 + 3) % 31 + 1)
            .collect();
        let mut p = Packer::new(seq, 0);
        p.begin_row(1);
        let mut tok = 0;
        let w: Vec<Window> = std::iter::from_fn(|| p.next_window(&row, &mut tok)).collect();
        Batch::from_windows(&w[..n], seq)
    }

    fn model() -> (MambaLM, Vec<Var>) {
        let cfg = Config::preset("tiny", 32).unwrap();
        let (m, vm) = MambaLM::init(&cfg, 1, &Device::Cpu).unwrap();
        let mut named: Vec<(String, Var)> = vm.data().lock().unwrap().clone().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        (m, named.into_iter().map(|(_, v)| v).collect())
    }

    fn flat(g: &GradStore, vars: &[Var]) -> Vec<f32> {
        vars.iter()
            .flat_map(|v| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn accumulated_gradients_equal_the_big_batch() {
        let (m, vars) = model();
        let big = batch(4, 16);
        let (l1, g1) = accumulate(&m, &vars, std::slice::from_ref(&big), true).unwrap();
        let micro = [big.rows(0, 2), big.rows(2, 4)];
        let (l2, g2) = accumulate(&m, &vars, &micro, true).unwrap();
        assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
        let (a, b) = (flat(&g1, &vars), flat(&g2, &vars));
        let scale = a.iter().fold(0f32, |s, x| s.max(x.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(worst <= 1e-5 * scale.max(1.0), "max difference {worst}");
        // A single micro-batch alone differs: the test can tell batches apart.
        let (_, g3) = accumulate(&m, &vars, &micro[..1], true).unwrap();
        assert_ne!(flat(&g3, &vars), a);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let (m, vars) = model();
        let (_, mut g) = accumulate(&m, &vars, &[batch(2, 16)], true).unwrap();
        let before: f64 = flat(&g, &vars)
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let max = before / 4.0;
        let reported = clip_grad_norm(&mut g, &vars, max).unwrap();
        assert!((reported - before).abs() < 1e-4 * before);
        let after: f64 = flat(&g, &vars)
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((after - max).abs() < 1e-4 * max, "{after} vs {max}");
    }

    #[test]
    fn eval_loss_is_the_mean_batch_loss() {
        let (m, _) = model();
        let b = batch(2, 16);
        let l = eval_loss(&m, &[b.clone(), b.clone()], true).unwrap();
        let one = eval_loss(&m, &[b], true).unwrap();
        assert!((l - one).abs() < 1e-6);
        assert!(l > 0.0 && l.is_finite());
    }
}
