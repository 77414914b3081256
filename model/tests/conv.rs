//! The fused CPU conv1d+SiLU op against the shifted-slice version (forward and gradients),
//! with and without document resets.

mod common;
use candle_core::{Device, Tensor, Var};
use common::*;
use mamba_model::layers::conv::{causal_conv1d, causal_conv1d_silu};
use mamba_model::rng::SplitMix64 as Rng;

#[test]
fn fused_conv_matches_slices() {
    let mut rng = Rng::new(1);
    let (b, l, d, k) = (2, 19, 70, 4);
    let x = Var::from_tensor(&f32(&randn(&mut rng, &[b, l, d], 1.0))).unwrap();
    let w = Var::from_tensor(&f32(&randn(&mut rng, &[d, 1, k], 0.5))).unwrap();
    let bias = Var::from_tensor(&f32(&randn(&mut rng, &[d], 0.5))).unwrap();
    let gw = f32(&randn(&mut rng, &[b, l, d], 1.0));
    let mut r = vec![0u8; b * l];
    r[5] = 1;
    r[6] = 1;
    r[l + 10] = 1;
    r[l + 12] = 1;
    let resets = Tensor::from_vec(r, (b, l), &Device::Cpu).unwrap();
    for rs in [None, Some(&resets)] {
        let fused = causal_conv1d_silu(&x, &w, &bias, rs).unwrap();
        let slices = causal_conv1d(&x, &w, &bias, rs).unwrap().silu().unwrap();
        assert_close("conv forward", &fused, &slices, 1e-6, 1e-5);
        let g1 = (&fused * &gw)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&slices * &gw)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("bias", &bias)] {
            assert_close(
                &format!("d{name}"),
                g1.get(v).unwrap(),
                g2.get(v).unwrap(),
                1e-5,
                1e-4,
            );
        }
    }
}

/// The shifted-slice conv (the path of every device but the CPU) keeps packed documents apart:
/// each document's outputs equal those of the document run alone.
#[test]
fn plain_conv_isolates_packed_documents() {
    let mut rng = Rng::new(2);
    let (l, d, k) = (23, 9, 4);
    let x = f32(&randn(&mut rng, &[1, l, d], 1.0));
    let w = f32(&randn(&mut rng, &[d, 1, k], 0.5));
    let bias = f32(&randn(&mut rng, &[d], 0.5));
    // Documents [0, 6), [6, 7), [7, 15), [15, 23): one shorter than the window.
    let starts = [0usize, 6, 7, 15, l];
    let mut r = vec![0u8; l];
    for &s in &starts[..4] {
        r[s] = 1;
    }
    let resets = Tensor::from_vec(r, (1, l), &Device::Cpu).unwrap();
    let packed = causal_conv1d(&x, &w, &bias, Some(&resets)).unwrap();
    let leaky = causal_conv1d(&x, &w, &bias, None).unwrap();
    for pair in starts.windows(2) {
        let (s, e) = (pair[0], pair[1]);
        let alone = causal_conv1d(&x.narrow(1, s, e - s).unwrap(), &w, &bias, None).unwrap();
        let got = packed.narrow(1, s, e - s).unwrap();
        assert_close(&format!("document at {s}"), &got, &alone, 1e-6, 1e-5);
        if s > 0 {
            let mixed = leaky.narrow(1, s, e - s).unwrap();
            let diff = (mixed - &alone).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f32>().unwrap() > 1e-3,
                "no leak to remove at {s}"
            );
        }
    }
}
