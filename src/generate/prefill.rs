//! Prefill: the prompt runs through the full-sequence forward (the fused scan, one matmul per
//! projection over all positions), and the recurrent state the step mode needs is read off the
//! same pass: per layer the last `d_conv - 1` conv inputs and the SSM state after the last
//! position, h_L = sum_t exp(A * sum_{s>t} dt_s) * dt_t * B_t * u_t (Gu & Dao 2023, eq. 2a).
//! Stepping through a long prompt token by token would cost a matrix-vector product per
//! token; this costs one pass of matrix products.

use candle_core::{DType, Result, Tensor};
use mamba_model::conv::causal_conv1d_silu;
use mamba_model::norm::rms_norm;
use mamba_model::ops::{linear, softplus};
use mamba_model::{selective_scan, MambaLM, ScanOptions, State};

/// The state after `ids` (one sequence, at least one token) and the logits of the token
/// that follows it, (padded_vocab,).
pub fn prefill(model: &MambaLM, ids: &[u32]) -> Result<(State, Tensor)> {
    if ids.is_empty() {
        candle_core::bail!("prefill: empty prompt")
    }
    let c = model.config();
    let (l, di, n, r, k) = (ids.len(), c.d_inner(), c.d_state, c.dt_rank(), c.d_conv);
    let dev = model.device();
    let mut state = model.new_state(1)?;
    let ids_t = Tensor::from_slice(ids, (1, l), dev)?;
    let mut residual = model
        .embedding
        .index_select(&ids_t.flatten_all()?, 0)?
        .reshape((1, l, c.d_model))?;
    for (i, layer) in model.layers.iter().enumerate() {
        let m = &layer.mixer;
        let h = rms_norm(&residual, &layer.norm, c.norm_eps)?;
        let xz = linear(&h, &m.in_proj)?;
        let x = xz.narrow(2, 0, di)?.contiguous()?;
        let z = xz.narrow(2, di, di)?.contiguous()?;
        state.conv[i] = conv_tail(&x, k)?;
        let u = causal_conv1d_silu(&x, &m.conv_w, &m.conv_b, None, None)?;
        let xdbl = linear(&u, &m.x_proj)?;
        let b = xdbl.narrow(2, r, n)?.contiguous()?;
        let cm = xdbl.narrow(2, r + n, n)?.contiguous()?;
        let delta = linear(&xdbl.narrow(2, 0, r)?.contiguous()?, &m.dt_proj_w)?;
        let a = m.a()?;
        let opts = ScanOptions {
            delta_bias: Some(&m.dt_proj_b),
            delta_softplus: true,
            z: Some(&z),
            resets: None,
            chunk: 0,
        };
        let y = selective_scan(&u, &delta, &a, &b, &cm, &m.d, &opts)?;
        let dt = softplus(&delta.broadcast_add(&m.dt_proj_b)?)?;
        state.ssm[i] = final_ssm_state(&u, &dt, &a, &b)?;
        residual = (residual + linear(&y, &m.out_proj)?)?;
    }
    state.pos = l;
    let last = residual.narrow(1, l - 1, 1)?.reshape((1, c.d_model))?;
    let h = rms_norm(&last, &model.norm_f, c.norm_eps)?;
    let logits = linear(&h, &model.embedding)?.reshape(c.padded_vocab())?;
    Ok((state, logits))
}

/// The conv window after the prompt: its last `k - 1` inputs as (1, di, k - 1), zeros in
/// front when the prompt is shorter (the causal conv pads with zeros too).
fn conv_tail(x: &Tensor, k: usize) -> Result<Tensor> {
    let (_, l, di) = x.dims3()?;
    let keep = (k - 1).min(l);
    let tail = x.narrow(1, l - keep, keep)?.transpose(1, 2)?; // (1, di, keep)
    if keep == k - 1 {
        return tail.contiguous();
    }
    let pad = Tensor::zeros((1, di, k - 1 - keep), DType::F32, x.device())?;
    Tensor::cat(&[&pad, &tail], 2)?.contiguous()
}

/// h_L of the recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t from h_0 = 0, as
/// (1, di, n). u, dt: (1, l, di); A: (di, n); B: (1, l, n).
fn final_ssm_state(u: &Tensor, dt: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (_, l, di) = u.dims3()?;
    let n = a.dim(1)?;
    let u = u.flatten_all()?.to_vec1::<f32>()?;
    let dt = dt.flatten_all()?.to_vec1::<f32>()?;
    let av = a.flatten_all()?.to_vec1::<f32>()?;
    let bv = b.flatten_all()?.to_vec1::<f32>()?;
    let mut hs = vec![0f32; di * n];
    // Channels are independent: split them across threads.
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = di.div_ceil(threads);
    std::thread::scope(|s| {
        for (part, hpart) in hs.chunks_mut(per * n).enumerate() {
            let (u, dt, av, bv) = (&u, &dt, &av, &bv);
            s.spawn(move || {
                let d0 = part * per;
                for t in 0..l {
                    let row = t * di;
                    let bt = &bv[t * n..(t + 1) * n];
                    for (dd, h) in hpart.chunks_exact_mut(n).enumerate() {
                        let d = d0 + dd;
                        let (dtv, du) = (dt[row + d], dt[row + d] * u[row + d]);
                        let ad = &av[d * n..(d + 1) * n];
                        for j in 0..n {
                            h[j] = (dtv * ad[j]).exp() * h[j] + du * bt[j];
                        }
                    }
                }
            });
        }
    });
    Tensor::from_vec(hs, (1, di, n), a.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use mamba_model::Config;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn prefill_then_step_matches_the_full_forward() {
        let cfg = Config::preset("tiny", 50).unwrap();
        let (model, _) = MambaLM::init(&cfg, 7, &Device::Cpu).unwrap();
        let ids: Vec<u32> = (0..12).map(|i| (i * 13 + 5) % 50).collect();
        let full = model
            .forward(
                &Tensor::from_slice(&ids, (1, 12), &Device::Cpu).unwrap(),
                None,
            )
            .unwrap()
            .squeeze(0)
            .unwrap();
        // Prompts shorter and longer than the conv window.
        for split in [1, 2, 9] {
            let (mut st, logits) = prefill(&model, &ids[..split]).unwrap();
            let want = full.get(split - 1).unwrap();
            assert!(max_diff(&logits, &want) < 1e-4, "prefill of {split}");
            for t in split..12 {
                let id = Tensor::from_slice(&ids[t..t + 1], 1, &Device::Cpu).unwrap();
                let got = model.step(&id, &mut st).unwrap().squeeze(0).unwrap();
                let want = full.get(t).unwrap();
                let d = max_diff(&got, &want);
                assert!(d < 1e-4, "prompt {split}, position {t}: {d}");
            }
            assert_eq!(st.pos, 12);
        }
        assert!(prefill(&model, &[]).is_err());
    }
}
