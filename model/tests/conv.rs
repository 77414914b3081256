//! The fused CPU conv1d+SiLU op against the shifted-slice version (forward and gradients),
//! with and without document resets.

mod common;
use candle_core::{Device, Tensor, Var};
use common::*;
use mamba_model::conv::{causal_conv1d, causal_conv1d_silu, ConvMask};
use mamba_model::init::Rng;

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
    let mask = ConvMask::new(&resets, k).unwrap();
    for with_resets in [false, true] {
        let (rs, m) = if with_resets {
            (Some(&resets), Some(&mask))
        } else {
            (None, None)
        };
        let fused = causal_conv1d_silu(&x, &w, &bias, rs, m).unwrap();
        let slices = causal_conv1d(&x, &w, &bias, m).unwrap().silu().unwrap();
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
