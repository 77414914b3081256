//! One optimizer step's gradients: the mean loss over the micro-batches of a step, its
//! gradients summed over them (each micro-batch loss scaled by 1/accum, so the result equals
//! the gradient of the whole batch), and the evaluation loss. Precision, gradient
//! checkpointing and the fp16 loss scale are applied here.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Var};
use mamba_model::{ForwardOptions, MambaLM};

use super::pack::Batch;

/// How a step computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOptions {
    pub doc_reset: bool,
    pub dtype: DType,
    pub checkpointing: bool,
    /// The loss is multiplied by this before backward and the gradients divided by it after.
    pub loss_scale: f64,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            doc_reset: true,
            dtype: DType::F32,
            checkpointing: false,
            loss_scale: 1.0,
        }
    }
}

/// (mean loss, gradients of the mean loss) over `micro`, which must hold equal-sized batches.
/// A non-finite micro-batch loss is returned as is; the caller must not apply the step.
pub fn accumulate(
    model: &MambaLM,
    vars: &[Var],
    micro: &[Batch],
    o: &StepOptions,
) -> candle_core::Result<(f64, GradStore)> {
    let dev = model.device().clone();
    let n = micro.len() as f64;
    let mut acc = GradStore::default();
    let mut total = 0.0;
    for batch in micro {
        let (ids, targets, resets) = batch.tensors(&dev, o.doc_reset)?;
        let fo = ForwardOptions {
            resets: resets.as_ref(),
            compute: o.dtype,
            checkpointing: o.checkpointing,
        };
        let (loss, mut grads) = model.loss_and_grads(&ids, &targets, &fo, o.loss_scale)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        total += value;
        if !value.is_finite() {
            return Ok((value, acc));
        }
        let unscale = 1.0 / (n * o.loss_scale);
        // Each gradient moves from `grads` to `acc` (scaled only where that changes it), so
        // a step never holds two copies of all of them.
        for v in vars {
            let Some(g) = grads.remove(v.as_tensor()) else {
                continue;
            };
            let g = match unscale == 1.0 {
                true => g,
                false => (g * unscale)?,
            };
            let sum = match acc.remove(v.as_tensor()) {
                Some(a) => (a + g)?,
                None => g,
            };
            acc.insert(v.as_tensor(), sum);
        }
    }
    Ok((total / n, acc))
}

/// Mean loss over `batches` (no gradients kept).
pub fn eval_loss(model: &MambaLM, batches: &[Batch], o: &StepOptions) -> candle_core::Result<f64> {
    let dev: &Device = model.device();
    let mut total = 0.0;
    for b in batches {
        let (ids, targets, resets) = b.tensors(dev, o.doc_reset)?;
        let fo = ForwardOptions {
            resets: resets.as_ref(),
            compute: o.dtype,
            checkpointing: false,
        };
        let loss = model.loss_with(&ids, &targets, None, &fo)?.detach();
        total += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(total / batches.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::pack::{Packer, Window};
    use candle_core::Tensor;
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

    fn fp32() -> StepOptions {
        StepOptions::default()
    }

    fn model() -> (MambaLM, Vec<Var>) {
        let cfg = Config::preset("tiny", 32).unwrap();
        let (m, vm) = MambaLM::init(&cfg, 1, &Device::Cpu).unwrap();
        let mut named: Vec<(String, Var)> = vm.data().lock().unwrap().clone().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        (m, named.into_iter().map(|(_, v)| v).collect())
    }

    /// All values of `tensors`, concatenated in order.
    fn values<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> Vec<f32> {
        tensors
            .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    fn flat(g: &GradStore, vars: &[Var]) -> Vec<f32> {
        values(vars.iter().map(|v| g.get(v.as_tensor()).unwrap()))
    }

    #[test]
    fn accumulated_gradients_equal_the_big_batch() {
        let (m, vars) = model();
        let big = batch(4, 16);
        let (l1, g1) = accumulate(&m, &vars, std::slice::from_ref(&big), &fp32()).unwrap();
        let micro = [big.rows(0, 2), big.rows(2, 4)];
        let (l2, g2) = accumulate(&m, &vars, &micro, &fp32()).unwrap();
        assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
        let (a, b) = (flat(&g1, &vars), flat(&g2, &vars));
        let scale = a.iter().fold(0f32, |s, x| s.max(x.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(worst <= 1e-5 * scale.max(1.0), "max difference {worst}");
        // A single micro-batch alone differs: the test can tell batches apart.
        let (_, g3) = accumulate(&m, &vars, &micro[..1], &fp32()).unwrap();
        assert_ne!(flat(&g3, &vars), a);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let (m, vars) = model();
        let (_, mut g) = accumulate(&m, &vars, &[batch(2, 16)], &fp32()).unwrap();
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
    fn loss_scale_and_checkpointing_leave_the_gradients() {
        let (m, vars) = model();
        let micro = [batch(2, 16), batch(2, 16)];
        let (l1, g1) = accumulate(&m, &vars, &micro, &fp32()).unwrap();
        let o = StepOptions {
            loss_scale: 1024.0,
            checkpointing: true,
            ..fp32()
        };
        let (l2, g2) = accumulate(&m, &vars, &micro, &o).unwrap();
        assert_eq!(l1, l2);
        let (a, b) = (flat(&g1, &vars), flat(&g2, &vars));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn an_fp16_overflow_is_caught_and_skipped() {
        use crate::train::scaler::LossScaler;
        let (m, vars) = model();
        let before = flat_params(&vars);
        let mut scaler = LossScaler::new(1e30, 0);
        let mut opt = mamba_model::AdamW::new(
            vars.iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v.clone()))
                .collect(),
            Default::default(),
        )
        .unwrap();
        let mut applied = 0;
        for _ in 0..3 {
            let o = StepOptions {
                dtype: DType::F16,
                loss_scale: scaler.scale,
                ..fp32()
            };
            let (loss, mut g) = accumulate(&m, &vars, &[batch(2, 16)], &o).unwrap();
            assert!(loss.is_finite());
            let norm = clip_grad_norm(&mut g, &vars, 1.0).unwrap();
            if scaler.update(norm.is_finite()) {
                opt.step(&g).unwrap();
                applied += 1;
            }
        }
        // A scale of 1e30 overflows fp16 (max 65504): nothing was applied, the scale dropped.
        assert_eq!(applied, 0);
        assert_eq!(scaler.scale, 1e30 / 8.0);
        assert_eq!(
            flat_params(&vars),
            before,
            "an overflowed step changed the weights"
        );
        // At a sane scale the same batch trains.
        let o = StepOptions {
            dtype: DType::F16,
            loss_scale: 1024.0,
            ..fp32()
        };
        let (_, mut g) = accumulate(&m, &vars, &[batch(2, 16)], &o).unwrap();
        assert!(clip_grad_norm(&mut g, &vars, 1.0).unwrap().is_finite());
    }

    fn flat_params(vars: &[Var]) -> Vec<f32> {
        values(vars.iter().map(|v| v.as_tensor()))
    }

    #[test]
    fn eval_loss_is_the_mean_batch_loss() {
        let (m, _) = model();
        let b = batch(2, 16);
        let l = eval_loss(&m, &[b.clone(), b.clone()], &fp32()).unwrap();
        let one = eval_loss(&m, &[b], &fp32()).unwrap();
        assert!((l - one).abs() < 1e-6);
        assert!(l > 0.0 && l.is_finite());
    }
}
