//! The training forward pass in pieces (embedding, one block, head + loss) with mixed
//! precision: parameters stay f32 `Var`s and each matmul runs on bf16/fp16 casts of its
//! inputs and weights (the casts are differentiable, so gradients arrive in f32), while the
//! norms, the causal conv, the selective scan and the loss stay in f32, as mamba_ssm keeps
//! its scan in f32 under autocast. In fp32 the pieces are exactly the model's own forward.
//!
//! Split into pieces so that [`super::recompute`] can rerun one block at a time.

use candle_core::{DType, Result, Tensor};
use mamba_model::conv::causal_conv1d_silu;
use mamba_model::norm::rms_norm;
use mamba_model::ops::linear;
use mamba_model::{cross_entropy, selective_scan, MambaLM, ScanOptions};

/// Compute dtype of `--precision`.
pub fn dtype(precision: &str) -> DType {
    match precision {
        "bf16" => DType::BF16,
        "fp16" => DType::F16,
        _ => DType::F32,
    }
}

/// x @ w^T computed in `dt`, returned in f32.
fn lin(x: &Tensor, w: &Tensor, dt: DType) -> Result<Tensor> {
    if dt == DType::F32 {
        return linear(x, w);
    }
    linear(&x.to_dtype(dt)?, &w.to_dtype(dt)?)?.to_dtype(DType::F32)
}

/// Token embeddings (b, l, d_model) of `ids` (b, l).
pub fn embed(model: &MambaLM, ids: &Tensor) -> Result<Tensor> {
    let (b, l) = ids.dims2()?;
    let d = model.config().d_model;
    model
        .embedding
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, l, d))
}

/// Residual block `i`: h + mixer(rms_norm(h)). `resets`: (b, l) u8 document starts.
pub fn block(
    model: &MambaLM,
    i: usize,
    h: &Tensor,
    resets: Option<&Tensor>,
    dt: DType,
) -> Result<Tensor> {
    let cfg = model.config();
    let layer = &model.layers[i];
    let x = rms_norm(h, &layer.norm, cfg.norm_eps)?;
    let out = if dt == DType::F32 {
        layer.mixer.forward(&x, resets, None)?
    } else {
        let m = &layer.mixer;
        let (di, n, r) = (cfg.d_inner(), cfg.d_state, cfg.dt_rank());
        let xi = lin(&x, &m.in_proj.narrow(0, 0, di)?, dt)?;
        let z = lin(&x, &m.in_proj.narrow(0, di, di)?, dt)?;
        let u = causal_conv1d_silu(&xi, &m.conv_w, &m.conv_b, resets, None)?;
        let xdbl = lin(&u, &m.x_proj, dt)?;
        let delta = lin(&xdbl.narrow(2, 0, r)?, &m.dt_proj_w, dt)?;
        let opts = ScanOptions {
            delta_bias: Some(&m.dt_proj_b),
            delta_softplus: true,
            z: Some(&z),
            resets,
            chunk: 0,
        };
        let b = xdbl.narrow(2, r, n)?;
        let c = xdbl.narrow(2, r + n, n)?;
        let y = selective_scan(&u, &delta, &m.a()?, &b, &c, &m.d, &opts)?;
        lin(&y, &m.out_proj, dt)?
    };
    h + out
}

/// Final norm, tied LM head and mean cross-entropy against `targets` (b, l).
pub fn head_loss(model: &MambaLM, h: &Tensor, targets: &Tensor, dt: DType) -> Result<Tensor> {
    let x = rms_norm(h, &model.norm_f, model.config().norm_eps)?;
    let logits = lin(&x, &model.embedding, dt)?;
    cross_entropy(&logits, targets, None)
}

/// The whole forward: mean next-token loss.
pub fn loss(
    model: &MambaLM,
    ids: &Tensor,
    targets: &Tensor,
    resets: Option<&Tensor>,
    dt: DType,
) -> Result<Tensor> {
    let mut h = embed(model, ids)?;
    for i in 0..model.layers.len() {
        h = block(model, i, &h, resets, dt)?;
    }
    head_loss(model, &h, targets, dt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use mamba_model::Config;

    fn inputs() -> (MambaLM, Tensor, Tensor, Tensor) {
        let cfg = Config::preset("tiny", 40).unwrap();
        let (m, _) = MambaLM::init(&cfg, 3, &Device::Cpu).unwrap();
        let ids: Vec<u32> = (0..64).map(|i| (i * 11 + 5) % 40).collect();
        let ids = Tensor::from_vec(ids, (2, 32), &Device::Cpu).unwrap();
        let targets = ids.clone();
        let mut r = vec![0u8; 64];
        r[10] = 1;
        r[40] = 1;
        let resets = Tensor::from_vec(r, (2, 32), &Device::Cpu).unwrap();
        (m, ids, targets, resets)
    }

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn fp32_pieces_are_the_model_forward() {
        let (m, ids, t, r) = inputs();
        let ours = scalar(&loss(&m, &ids, &t, Some(&r), DType::F32).unwrap());
        let theirs = scalar(&m.loss(&ids, &t, Some(&r), None).unwrap());
        assert_eq!(ours, theirs);
        let no_reset = scalar(&loss(&m, &ids, &t, None, DType::F32).unwrap());
        assert_ne!(ours, no_reset, "resets changed nothing");
    }

    #[test]
    fn half_precision_stays_close_and_gives_f32_gradients() {
        let (m, ids, t, r) = inputs();
        let full = scalar(&loss(&m, &ids, &t, Some(&r), DType::F32).unwrap());
        for dt in [DType::BF16, DType::F16] {
            let l = loss(&m, &ids, &t, Some(&r), dt).unwrap();
            let half = scalar(&l);
            assert!(
                (half - full).abs() < 0.02 * full,
                "{dt:?}: {half} vs {full}"
            );
            assert_ne!(half, full, "{dt:?} computed in f32");
            let grads = l.backward().unwrap();
            let g = grads.get(&m.layers[0].mixer.in_proj).unwrap();
            assert_eq!(g.dtype(), DType::F32);
        }
    }
}
