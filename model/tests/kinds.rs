//! A model whose layers are of different kinds (Mamba-1 and Mamba-2 alternating): it trains,
//! saves and reloads with its kinds, its packed documents never see each other, and its
//! prefill and recurrent steps (the CPU fast step and the candle step) equal its forward.

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use mamba_model::rng::SplitMix64 as Rng;
use mamba_model::{AdamW, AdamWConfig, Config, ForwardOptions, LayerKind, MambaLM};

/// Four layers, Mamba-1 and Mamba-2 in turn, d 64, state 32, two Mamba-2 heads of 64.
fn alternating() -> Config {
    Config {
        layers: [LayerKind::Mamba1, LayerKind::Mamba2].repeat(2),
        d_state: 32,
        ..Config::of(LayerKind::Mamba2, 64, 0, 61)
    }
}

#[test]
fn each_layer_has_its_kinds_parameters() {
    let cfg = alternating();
    let names: Vec<String> = MambaLM::shapes(&cfg).into_iter().map(|(n, _)| n).collect();
    for (i, kind) in cfg.layers.iter().enumerate() {
        let own = |p: &str| names.contains(&format!("backbone.layers.{i}.mixer.{p}"));
        // x_proj is Mamba-1's alone, dt_bias Mamba-2's alone.
        assert_eq!(
            own("x_proj.weight"),
            *kind == LayerKind::Mamba1,
            "layer {i}"
        );
        assert_eq!(own("dt_bias"), *kind == LayerKind::Mamba2, "layer {i}");
    }
    let text = mamba_model::info::breakdown(&cfg);
    assert!(
        text.starts_with("Mamba-1 + Mamba-2 language model"),
        "{text}"
    );
    assert!(
        text.contains("mamba1 layer.mixer.x_proj.weight")
            && text.contains("mamba2 layer.mixer.dt_bias")
    );
}

#[test]
fn trains_saves_and_reloads_with_its_kinds() {
    let cfg = alternating();
    let (model, varmap) = MambaLM::init(&cfg, 5, &Device::Cpu).unwrap();
    let mut opt = AdamW::from_varmap(
        &varmap,
        AdamWConfig {
            lr: 3e-3,
            ..Default::default()
        },
    )
    .unwrap();
    // One short sequence, learned by heart: the loss must fall a long way.
    let mut rng = Rng::new(9);
    let x = ids(&mut rng, 2, 33, cfg.vocab_size);
    let (input, target) = (x.narrow(1, 0, 32).unwrap(), x.narrow(1, 1, 32).unwrap());
    let first = model.loss(&input, &target, None, None).unwrap();
    let first = first.to_scalar::<f32>().unwrap();
    for _ in 0..40 {
        let loss = model.loss(&input, &target, None, None).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let last = model.loss(&input, &target, None, None).unwrap();
    let last = last.to_scalar::<f32>().unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");

    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        json["layer_types"],
        serde_json::json!(["mamba1", "mamba2", "mamba1", "mamba2"])
    );
    assert_eq!(json["model_type"], "mamba_mixed");
    let (loaded, _) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), model.config());
    assert_eq!(
        vec(&loaded.forward(&input, None).unwrap()),
        vec(&model.forward(&input, None).unwrap())
    );
}

#[test]
fn packed_documents_never_see_each_other() {
    let cfg = alternating();
    let (model, _) = MambaLM::init(&cfg, 3, &Device::Cpu).unwrap();
    let mut rng = Rng::new(4);
    let docs = [9usize, 1, 14];
    let l: usize = docs.iter().sum();
    let tokens = ids(&mut rng, 1, l, cfg.vocab_size);
    let mut resets = vec![0u8; l];
    let mut at = 0;
    for n in docs {
        resets[at] = 1;
        at += n;
    }
    let resets = Tensor::from_vec(resets, (1, l), &Device::Cpu).unwrap();
    let packed = model.forward(&tokens, Some(&resets)).unwrap();
    let mut at = 0;
    for n in docs {
        let alone = model
            .forward(&tokens.narrow(1, at, n).unwrap(), None)
            .unwrap();
        let in_pack = packed.narrow(1, at, n).unwrap();
        assert_close(&format!("document at {at}"), &in_pack, &alone, 1e-5, 1e-4);
        at += n;
    }
}

#[test]
fn prefill_and_steps_equal_the_forward() {
    let cfg = alternating();
    let (model, _) = MambaLM::init(&cfg, 8, &Device::Cpu).unwrap();
    let seq: Vec<u32> = (0..60).map(|i| (i * 17 + 3) % 61).collect();
    let x = Tensor::from_slice(&seq, (1, seq.len()), &Device::Cpu).unwrap();
    let full: Vec<Vec<f32>> = model
        .forward(&x, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    // A short prompt (the fast step's own prefill) and one longer than the fast step's short
    // prompts (through the full forward); then every later token one step at a time.
    for split in [5, 55] {
        for decoder in [model.decoder().unwrap(), model.candle_decoder()] {
            let (mut st, first) = decoder.prefill(&[&seq[..split]]).unwrap();
            let mut got = vec![first[0].clone()];
            for &id in &seq[split..seq.len() - 1] {
                got.push(decoder.step(&[id], &mut st).unwrap().remove(0));
            }
            for (t, g) in got.iter().enumerate() {
                let want = &full[split - 1 + t];
                let d = g
                    .iter()
                    .zip(want)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(d < 1e-4, "prompt {split}, position {}: {d}", split + t);
            }
        }
    }
}

#[test]
fn the_device_generic_path_computes_the_same_loss() {
    // bf16 matmuls and gradient checkpointing (the path a GPU takes) on the same model.
    let cfg = alternating();
    let (model, _) = MambaLM::init(&cfg, 2, &Device::Cpu).unwrap();
    let mut rng = Rng::new(1);
    let x = ids(&mut rng, 2, 17, cfg.vocab_size);
    let (input, target) = (x.narrow(1, 0, 16).unwrap(), x.narrow(1, 1, 16).unwrap());
    let plain = ForwardOptions::default();
    let (f32_loss, g1) = model.loss_and_grads(&input, &target, &plain, 1.0).unwrap();
    let ckpt = ForwardOptions {
        checkpointing: true,
        ..plain
    };
    let (ckpt_loss, g2) = model.loss_and_grads(&input, &target, &ckpt, 1.0).unwrap();
    assert_close("checkpointed loss", &ckpt_loss, &f32_loss, 1e-6, 1e-5);
    for (name, t) in model.named_tensors() {
        let (a, b) = (g1.get(&t).unwrap(), g2.get(&t).unwrap());
        assert_close(&format!("gradient of {name}"), b, a, 1e-6, 1e-4);
    }
    let bf16 = ForwardOptions {
        compute: DType::BF16,
        ..plain
    };
    let (bf16_loss, _) = model.loss_and_grads(&input, &target, &bf16, 1.0).unwrap();
    assert_close("bf16 loss", &bf16_loss, &f32_loss, 2e-2, 1e-2);
}
