//! Mamba-3's step-by-step definition (`mixers::mamba3::reference`, f64) against mamba_ssm's
//! `Mamba3` module run on the CPU with the pure-PyTorch references of its tests in place of its
//! GPU kernels (fixtures and the script that made them: tests/fixtures/make_mamba3_fixtures.py):
//! the output and the gradients of the input and of every parameter, SISO and MIMO, with and
//! without the output norm, with the heavy-tail and the softplus A.

mod common;
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use mamba_model::mixers::mamba3::reference::{forward_f64, Dims};

fn fixture(case: &str) -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/mamba3_{case}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// The layer of each case (make_mamba3_fixtures.py): d_model 32, d_state 16, 4 heads of 16.
fn dims(mimo_rank: usize, groups: usize, rope_fraction: f64, outproj_norm: bool) -> Dims {
    Dims {
        d_model: 32,
        heads: 4,
        head_dim: 16,
        d_state: 16,
        groups,
        mimo_rank,
        rope_fraction,
        outproj_norm,
        a_floor: 1e-4,
        heavy_tail: true,
    }
}

fn cases() -> Vec<(&'static str, Dims)> {
    vec![
        ("siso", dims(0, 1, 0.5, false)),
        ("siso_norm", dims(0, 2, 1.0, true)),
        (
            "siso_softplus",
            Dims {
                heavy_tail: false,
                ..dims(0, 1, 0.5, false)
            },
        ),
        ("mimo", dims(2, 1, 0.5, false)),
        ("mimo_norm", dims(2, 2, 1.0, true)),
    ]
}

/// The max-abs scale of `t`, for tolerances relative to it.
fn scale(t: &Tensor) -> f64 {
    vec(t).iter().fold(0f64, |m, x| m.max(x.abs()))
}

#[test]
fn the_reference_is_mamba_ssm_in_value_and_every_gradient() {
    for (case, d) in cases() {
        let t = fixture(case);
        assert_eq!(
            t["in_proj.weight"].dims(),
            [d.in_proj_rows(), d.d_model],
            "{case}"
        );
        let names: Vec<String> = t
            .keys()
            .filter(|k| !k.starts_with("grad.") && !["u", "out", "dout"].contains(&k.as_str()))
            .cloned()
            .collect();
        let vars: HashMap<String, Var> = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    Var::from_tensor(&t[n].to_dtype(DType::F64).unwrap()).unwrap(),
                )
            })
            .collect();
        let params: HashMap<String, Tensor> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let u = Var::from_tensor(&t["u"].to_dtype(DType::F64).unwrap()).unwrap();
        let out = forward_f64(u.as_tensor(), &params, &d).unwrap();
        let theirs = &t["out"];
        assert_close(case, &out, theirs, 1e-4 * scale(theirs), 1e-4);
        let dout = t["dout"].to_dtype(DType::F64).unwrap();
        let grads = (out * dout).unwrap().sum_all().unwrap().backward().unwrap();
        let mut checked = vec![("u".to_string(), u.as_tensor().clone())];
        checked.extend(vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())));
        for (name, x) in checked {
            let want = &t[&format!("grad.{name}")];
            let got = grads
                .get(&x)
                .unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            let what = format!("{case}: gradient of {name}");
            assert_close(&what, got, want, 1e-4 * scale(want), 1e-4);
        }
    }
}
