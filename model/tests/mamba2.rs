//! Mamba-2 against transformers' `Mamba2ForCausalLM` (pure PyTorch path, f32): the fixture and
//! the script that made it are in tests/fixtures (make_mamba2_fixtures.py).

mod common;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::*;
use mamba_model::mamba2::{ssd_reference, Mamba2LM};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn loads_transformers_mamba2_and_matches_its_logits() {
    let model = Mamba2LM::load(fixtures().join("hf_mamba2"), &Device::Cpu).unwrap();
    let c = model.config();
    assert_eq!(
        (c.n_heads(), c.head_dim, c.n_groups, c.d_state),
        (4, 16, 2, 16)
    );
    assert_eq!(c.dt_limit, (0.0, f64::INFINITY));
    let t = candle_core::safetensors::load(
        fixtures().join("hf_mamba2_logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let ours = model.forward(&ids).unwrap();
    let theirs = &t["logits"];
    let scale = vec(theirs).iter().fold(0f64, |m, x| m.max(x.abs()));
    assert_close("mamba2 logits", &ours, theirs, 1e-4 * scale, 1e-4);
}

/// The recurrence in f32 equals itself in f64 (the reference is dtype-generic), and a
/// sequence split in two gives the first half's outputs unchanged (causality).
#[test]
fn the_ssd_reference_is_causal_and_dtype_generic() {
    let mut rng = mamba_model::rng::SplitMix64::new(4);
    let (b, l, h, p, g, n) = (2, 9, 4, 3, 2, 5);
    let x = f32(&randn(&mut rng, &[b, l, h, p], 1.0));
    let dt = f32(&randn(&mut rng, &[b, l, h], 0.5)).abs().unwrap();
    let a = f32(&randn(&mut rng, &[h], 1.0))
        .abs()
        .unwrap()
        .neg()
        .unwrap();
    let bm = f32(&randn(&mut rng, &[b, l, g, n], 1.0));
    let cm = f32(&randn(&mut rng, &[b, l, g, n], 1.0));
    let d = f32(&randn(&mut rng, &[h], 1.0));
    let y = ssd_reference(&x, &dt, &a, &bm, &cm, &d).unwrap();
    let f64s: Vec<Tensor> = [&x, &dt, &a, &bm, &cm, &d]
        .iter()
        .map(|t| t.to_dtype(DType::F64).unwrap())
        .collect();
    let y64 = ssd_reference(&f64s[0], &f64s[1], &f64s[2], &f64s[3], &f64s[4], &f64s[5]).unwrap();
    assert_close(
        "f32 vs f64",
        &y,
        &y64.to_dtype(DType::F32).unwrap(),
        1e-5,
        1e-4,
    );
    let half = |t: &Tensor| t.narrow(1, 0, 4).unwrap();
    let y4 = ssd_reference(&half(&x), &half(&dt), &a, &half(&bm), &half(&cm), &d).unwrap();
    assert_close("causal", &y4, &half(&y), 1e-7, 1e-6);
}
