//! The path a GPU computes (separate ops, parts of each layer recomputed in backward, the head
//! a block of positions at a time), run on the CPU with `compute_as_gpu`, against the CPU's
//! fused ops: the same loss and every gradient, for both architectures, with document resets,
//! a loss mask, a head block smaller than the batch, gradient checkpointing, and adapters on a
//! frozen base. One test: the switch is process-wide.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{assert_close, ids};
use mamba_model::lora::{Adapters, LoraConfig};
use mamba_model::rng::SplitMix64 as Rng;
use mamba_model::{Config, ForwardOptions, LayerKind, MambaLM};

/// Loss and the gradient of every parameter, by name.
fn loss_and_grads(
    model: &MambaLM,
    vars: &[(String, Var)],
    ids: &Tensor,
    resets: &Tensor,
    mask: &Tensor,
    checkpointing: bool,
) -> (f64, Vec<(String, Tensor)>) {
    let fo = ForwardOptions {
        resets: Some(resets),
        compute: DType::F32,
        checkpointing,
    };
    let (loss, grads) = match checkpointing {
        true => model.loss_and_grads(ids, ids, &fo, 1.0).unwrap(),
        false => {
            let loss = model.loss_with(ids, ids, Some(mask), &fo).unwrap();
            let g = loss.backward().unwrap();
            (loss, g)
        }
    };
    let grads = vars
        .iter()
        .map(|(n, v)| (n.clone(), grads.get(v.as_tensor()).unwrap().clone()))
        .collect();
    (loss.to_scalar::<f32>().unwrap() as f64, grads)
}

#[test]
fn the_gpu_path_on_the_cpu_equals_the_fused_ops() {
    let mut rng = Rng::new(3);
    // 3 x 1400 positions: the mixers' parts run on blocks of 2 sequences and 1, the head
    // (vocabulary 6000) on blocks of 2796 positions and the rest.
    for kind in [LayerKind::Mamba1, LayerKind::Mamba2] {
        let mut cfg = Config::of(kind, 64, 2, 6000);
        if kind == LayerKind::Mamba2 {
            cfg.head_dim = 16;
            cfg.d_state = 16;
        }
        let (model, vm) = MambaLM::init(&cfg, 7, &Device::Cpu).unwrap();
        let mut vars: Vec<(String, Var)> = vm.data().lock().unwrap().clone().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (b, l) = (3, 1400);
        let ids = ids(&mut rng, b, l, 6000);
        let mut r = vec![0u8; b * l];
        r[40] = 1;
        r[2 * l + 700] = 1;
        let resets = Tensor::from_vec(r, (b, l), &Device::Cpu).unwrap();
        let m: Vec<f32> = (0..b * l).map(|i| (i % 7 != 3) as u8 as f32).collect();
        let mask = Tensor::from_vec(m, (b, l), &Device::Cpu).unwrap();
        // Adapters on every projection, B set so they change the output; the base frozen.
        let lcfg = LoraConfig {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
            targets: match kind {
                LayerKind::Mamba1 => vec!["in_proj", "x_proj", "dt_proj", "out_proj"],
                _ => vec!["in_proj", "out_proj"],
            }
            .into_iter()
            .map(String::from)
            .collect(),
            rslora: false,
        };
        let (ad, avm) = Adapters::init(&cfg, &lcfg, 9, &Device::Cpu).unwrap();
        let mut avars: Vec<(String, Var)> =
            avm.data().lock().unwrap().clone().into_iter().collect();
        avars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut brng = Rng::new(4);
        for (n, v) in &avars {
            if n.contains("lora_B") {
                v.set(&common::f32(&common::randn(&mut brng, v.dims(), 0.3)))
                    .unwrap();
            }
        }
        let adapted = model.detach().with_adapters(&ad);
        let cases = [
            (&model, &vars, false),
            (&model, &vars, true),
            (&adapted, &avars, false),
        ];
        for (m, vars, checkpointing) in cases {
            let want = loss_and_grads(m, vars, &ids, &resets, &mask, checkpointing);
            mamba_model::kernels::compute_as_gpu(true);
            let got = loss_and_grads(m, vars, &ids, &resets, &mask, checkpointing);
            mamba_model::kernels::compute_as_gpu(false);
            let lora = if std::ptr::eq(m, &adapted) {
                " with adapters"
            } else {
                ""
            };
            let what = format!("{kind:?}{lora} checkpointing {checkpointing}");
            assert!(
                (got.0 - want.0).abs() < 1e-5 * want.0,
                "{what}: loss {} vs {}",
                got.0,
                want.0
            );
            for ((name, g), (_, w)) in got.1.iter().zip(&want.1) {
                assert_close(&format!("{what}: {name}"), g, w, 1e-6, 2e-4);
            }
        }
    }
}
