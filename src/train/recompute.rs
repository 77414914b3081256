//! Gradient checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost"):
//! the forward keeps only each block's input, with no graph; backward then walks the blocks
//! from the top, rebuilding one block's graph at a time and backpropagating the incoming
//! gradient through it as the surrogate `sum(out * grad_out)`. Peak memory holds one block's
//! activations instead of all of them, for one extra forward per block; the gradients are
//! those of the plain backward.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use mamba_model::MambaLM;

use super::forward;

/// Adds the gradients of `vars` found in `from` (times `scale`) into `into`.
fn add_into(into: &mut GradStore, from: &GradStore, vars: &[Var], scale: f64) -> Result<()> {
    for v in vars {
        let Some(g) = from.get(v.as_tensor()) else {
            continue;
        };
        let g = if scale == 1.0 {
            g.clone()
        } else {
            (g * scale)?
        };
        let sum = match into.get(v.as_tensor()) {
            Some(a) => (a + g)?,
            None => g,
        };
        into.insert(v.as_tensor(), sum);
    }
    Ok(())
}

/// The loss and the gradients of `loss * scale` with respect to `vars`, one block at a time.
pub fn loss_and_grads(
    model: &MambaLM,
    vars: &[Var],
    ids: &Tensor,
    targets: &Tensor,
    resets: Option<&Tensor>,
    dt: DType,
    scale: f64,
) -> Result<(Tensor, GradStore)> {
    // Forward without a graph: block inputs only.
    let mut inputs = Vec::with_capacity(model.layers.len() + 1);
    inputs.push(forward::embed(model, ids)?.detach());
    for i in 0..model.layers.len() {
        let h = forward::block(model, i, &inputs[i], resets, dt)?.detach();
        inputs.push(h);
    }
    let mut acc = GradStore::default();
    // Head: its graph starts at a leaf standing for the last hidden state.
    let top = Var::from_tensor(&inputs[model.layers.len()])?;
    let loss = forward::head_loss(model, top.as_tensor(), targets, dt)?;
    let grads = (&loss * scale)?.backward()?;
    add_into(&mut acc, &grads, vars, 1.0)?;
    let mut g = grads
        .get(top.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the head input".into()))?;
    drop(grads);
    for i in (0..model.layers.len()).rev() {
        let x = Var::from_tensor(&inputs[i])?;
        let out = forward::block(model, i, x.as_tensor(), resets, dt)?;
        let grads = (out * &g)?.sum_all()?.backward()?;
        add_into(&mut acc, &grads, vars, 1.0)?;
        g = grads
            .get(x.as_tensor())
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("no gradient reached block {i}")))?;
    }
    let emb = forward::embed(model, ids)?;
    let grads = (emb * &g)?.sum_all()?.backward()?;
    add_into(&mut acc, &grads, vars, 1.0)?;
    Ok((loss.detach(), acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use mamba_model::Config;

    #[test]
    fn checkpointed_gradients_equal_the_plain_ones() {
        let cfg = Config::preset("tiny", 48).unwrap();
        let (m, vm) = MambaLM::init(&cfg, 5, &Device::Cpu).unwrap();
        let vars: Vec<Var> = vm.all_vars();
        let ids: Vec<u32> = (0..96).map(|i| (i * 13 + 1) % 48).collect();
        let ids = Tensor::from_vec(ids, (3, 32), &Device::Cpu).unwrap();
        let targets = ids.roll(-1, 1).unwrap();
        let mut r = vec![0u8; 96];
        r[7] = 1;
        r[50] = 1;
        let r = Tensor::from_vec(r, (3, 32), &Device::Cpu).unwrap();
        let plain_loss = forward::loss(&m, &ids, &targets, Some(&r), DType::F32).unwrap();
        let plain = (&plain_loss * 4.0).unwrap().backward().unwrap();
        let (loss, ck) =
            loss_and_grads(&m, &vars, &ids, &targets, Some(&r), DType::F32, 4.0).unwrap();
        assert_eq!(
            loss.to_scalar::<f32>().unwrap(),
            plain_loss.to_scalar::<f32>().unwrap()
        );
        assert_eq!(vars.len(), 2 + 10 * cfg.n_layer);
        for v in &vars {
            let a = plain.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            let b = ck.get(v.as_tensor()).unwrap().flatten_all().unwrap();
            let a = a.to_vec1::<f32>().unwrap();
            let b = b.to_vec1::<f32>().unwrap();
            let scale = a.iter().fold(1e-6f32, |s, x| s.max(x.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
            assert!(worst <= 1e-5 * scale, "{:?}: {worst} vs {scale}", v.shape());
        }
    }
}
