//! One Mamba-3 SISO layer's training forward and backward on the CPU, this project's (the
//! fused recurrence between candle ops) against mamba-rs's (`mamba3_siso::cpu`), at one shape
//! both run: d_model 256, d_state 64, heads of 32 (16 heads, expand 2; mamba-rs takes heads of at most 32), one group, rope 0.5, one
//! sequence of 256 tokens; each layer with its pre-norm and residual add; median of 11 runs of
//! each after a warm-up, alternated; the threads each library uses by default.
//!
//! ```sh
//! cargo run --release --ignore-rust-version --manifest-path benches/mamba_rs/Cargo.toml
//! ```

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use mamba_model::{Config, LayerKind, MambaLM};
use mamba_rs::mamba3_siso::config::Mamba3Config;
use mamba_rs::mamba3_siso::cpu::backward::backward_mamba3_layer_batched;
use mamba_rs::mamba3_siso::cpu::dims::Mamba3Dims;
use mamba_rs::mamba3_siso::cpu::flat::Mamba3LayerFlat;
use mamba_rs::mamba3_siso::cpu::forward::{forward_mamba3_layer_batched, Mamba3LayerStateMut};
use mamba_rs::mamba3_siso::cpu::scratch::Mamba3Scratch;
use mamba_rs::mamba3_siso::cpu::weights::TrainMamba3LayerWeights;

const D_MODEL: usize = 256;
const D_STATE: usize = 64;
const HEAD_DIM: usize = 32;
const SEQ: usize = 256;
const RUNS: usize = 11;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// mamba-rs: (seconds of one forward + backward).
fn theirs() -> impl FnMut() -> f64 {
    let cfg = Mamba3Config {
        d_model: D_MODEL,
        d_state: D_STATE,
        expand: 2,
        headdim: HEAD_DIM,
        ngroups: 1,
        n_layers: 1,
        rope_fraction: 0.5,
        a_floor: 1e-4,
        is_outproj_norm: false,
        ..Mamba3Config::default()
    };
    let dims = Mamba3Dims::from_config(&cfg, SEQ);
    let mut w = TrainMamba3LayerWeights::zeros(&dims);
    w.norm_weight.fill(1.0);
    w.d_param.fill(1.0);
    w.b_norm_weight.fill(1.0);
    w.c_norm_weight.fill(1.0);
    for (i, v) in w.in_proj_w.iter_mut().enumerate() {
        *v = ((i * 7919 % 13) as f32 - 6.0) * 0.01;
    }
    for (i, v) in w.out_proj_w.iter_mut().enumerate() {
        *v = ((i * 104729 % 11) as f32 - 5.0) * 0.01;
    }
    let mut acts = Mamba3LayerFlat::zeros(dims);
    let mut scratch = Mamba3Scratch::zeros(&dims);
    let (nh, hd, ds, na) = (
        dims.nheads,
        dims.headdim,
        dims.d_state,
        dims.num_rope_angles.max(1),
    );
    move || {
        let (mut ssm, mut k, mut v, mut a) = (
            vec![0.0; nh * hd * ds],
            vec![0.0; nh * ds],
            vec![0.0; nh * hd],
            vec![0.0; nh * na],
        );
        let mut x: Vec<f32> = (0..SEQ * D_MODEL)
            .map(|i| ((i % 17) as f32 - 8.0) * 0.05)
            .collect();
        let mut dx = vec![1.0f32; SEQ * D_MODEL];
        let mut dw = TrainMamba3LayerWeights::zeros(&dims);
        let t = Instant::now();
        let state = Mamba3LayerStateMut {
            ssm: &mut ssm,
            k: &mut k,
            v: &mut v,
            angle: &mut a,
        };
        forward_mamba3_layer_batched(&mut x, &mut acts, &w, state, &mut scratch, &dims);
        backward_mamba3_layer_batched(&mut dx, &acts, &w, &mut dw, &mut scratch, &dims, None);
        t.elapsed().as_secs_f64()
    }
}

/// This project's layer (pre-norm, mixer, residual): seconds of one forward + backward.
fn ours() -> impl FnMut() -> f64 {
    let cfg = Config {
        d_state: D_STATE,
        head_dim: HEAD_DIM,
        ..Config::of(LayerKind::Mamba3, D_MODEL, 1, 64)
    };
    let (model, _) = MambaLM::init(&cfg, 0, &Device::Cpu).expect("init");
    let x: Vec<f32> = (0..SEQ * D_MODEL)
        .map(|i| ((i % 17) as f32 - 8.0) * 0.05)
        .collect();
    let x = Tensor::from_vec(x, (1, SEQ, D_MODEL), &Device::Cpu).expect("input");
    move || {
        let v = Var::from_tensor(&x).expect("var");
        let t = Instant::now();
        let y = model.layer_forward(0, v.as_tensor()).expect("forward");
        let _ = y.sum_all().and_then(|s| s.backward()).expect("backward");
        t.elapsed().as_secs_f64()
    }
}

fn main() {
    let (mut a, mut b) = (theirs(), ours());
    let (mut ta, mut tb) = (vec![], vec![]);
    a();
    b();
    for _ in 0..RUNS {
        ta.push(a());
        tb.push(b());
    }
    let (ma, mb) = (median(&mut ta), median(&mut tb));
    println!(
        "Mamba-3 SISO layer, d_model {D_MODEL}, d_state {D_STATE}, head_dim {HEAD_DIM}, {SEQ} tokens, forward + backward (median of {RUNS}):"
    );
    println!("  mamba-rs 0.7.3  {:.2} ms", ma * 1e3);
    println!("  mamba (this)    {:.2} ms", mb * 1e3);
    println!("  ours / theirs   {:.2}", mb / ma);
}
