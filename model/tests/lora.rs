//! LoRA adapters: PEFT's adapters give PEFT's logits and PEFT's merged weights, and PEFT
//! loads ours with our logits (fixtures made by tests/fixtures/make_lora_fixtures.py), every target changes the loss and gets a
//! gradient (the fused CPU ops apply them), a frozen bf16 base, dropout, and save/load.

mod common;
#[path = "common/seeded.rs"]
mod seeded;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use common::*;
use mamba_model::io::peft;
use mamba_model::lora::{all_projections, Adapters, LoraConfig};
use mamba_model::rng::SplitMix64 as Rng;
use mamba_model::{Config, ForwardOptions, MambaLM};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn peft_adapters_give_peft_logits_and_merged_weights() {
    for (base, name) in [("hf_tiny", "mamba1"), ("hf_mamba2", "mamba2")] {
        let (model, _) = MambaLM::load(fixtures().join(base), &Device::Cpu).unwrap();
        let dir = fixtures().join(format!("lora_{name}"));
        let adapters = peft::load(&dir, model.config(), &Device::Cpu).unwrap();
        assert!(adapters.num_params() > 0);
        let t = candle_core::safetensors::load(
            fixtures().join(format!("lora_{name}_logits.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
        let theirs = &t["logits"];
        let scale = vec(theirs).iter().fold(0f64, |m, x| m.max(x.abs()));
        let base_logits = model.forward(&ids, None).unwrap();
        let moved = vec(&(&base_logits - theirs).unwrap())
            .iter()
            .fold(0f64, |m, x| m.max(x.abs()));
        assert!(
            moved > 0.05 * scale,
            "{name}: the adapter barely changes the logits"
        );
        let adapted = model.with_adapters(&adapters).forward(&ids, None).unwrap();
        assert_close(name, &adapted, theirs, 1e-4 * scale, 1e-4);
        let merged = model.merge_adapters(&adapters).unwrap();
        let logits = merged.forward(&ids, None).unwrap();
        assert_close(
            &format!("{name} merged"),
            &logits,
            theirs,
            1e-4 * scale,
            1e-4,
        );
        // Our merge equals PEFT's merge_and_unload, tensor by tensor.
        let peft_merged = candle_core::safetensors::load(
            fixtures().join(format!("lora_{name}_merged.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        for (n, ours) in merged.named_tensors() {
            let want = peft_merged
                .get(&n)
                .unwrap_or_else(|| panic!("{n} not in PEFT's merge"));
            assert_close(&n, &ours, want, 1e-5, 1e-5);
        }
    }
}

#[test]
fn our_adapters_load_in_peft_with_our_logits() {
    for (cfg, targets, base, name) in [
        (
            seeded::mamba1(true),
            &["in_proj", "x_proj"][..],
            "ours_tiny",
            "mamba1",
        ),
        (seeded::mamba2(), &["in_proj"][..], "ours_mamba2", "mamba2"),
    ] {
        // Saving the seeded adapter again gives the committed files PEFT read.
        let adapters = seeded::lora(&cfg, targets);
        let dir = tempfile::tempdir().unwrap();
        peft::save(dir.path(), &adapters, "base").unwrap();
        let committed = fixtures().join(format!("ours_lora_{name}"));
        for f in [peft::ADAPTER_CONFIG, peft::ADAPTER_WEIGHTS] {
            let a = std::fs::read(dir.path().join(f)).unwrap();
            let b = std::fs::read(committed.join(f)).unwrap();
            assert!(a == b, "{name}: {f} differs from the committed fixture");
        }
        let (model, _) = MambaLM::load(fixtures().join(base), &Device::Cpu).unwrap();
        let t = candle_core::safetensors::load(
            fixtures().join(format!("ours_lora_{name}_logits.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
        let theirs = &t["logits"];
        let scale = vec(theirs).iter().fold(0f64, |m, x| m.max(x.abs()));
        let ours = model.with_adapters(&adapters).forward(&ids, None).unwrap();
        assert_close(name, &ours, theirs, 1e-4 * scale, 1e-4);
    }
}

fn batch(cfg: &Config) -> (Tensor, Tensor) {
    let mut rng = Rng::new(5);
    (
        ids(&mut rng, 2, 9, cfg.vocab_size),
        ids(&mut rng, 2, 9, cfg.vocab_size),
    )
}

fn lora(cfg: &Config, rank: usize, dropout: f64) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: 2.0 * rank as f64,
        dropout,
        targets: all_projections(cfg).iter().map(|s| s.to_string()).collect(),
        rslora: false,
    }
}

fn vars(vm: &candle_nn::VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<_> = vm.data().lock().unwrap().clone().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn every_target_gets_a_gradient_and_changes_the_loss() {
    // f32: the CPU's fused ops; bf16 compute: the separate candle ops a GPU runs.
    let cases = [DType::F32, DType::BF16]
        .into_iter()
        .flat_map(|dt| [(seeded::mamba1(true), dt), (seeded::mamba2(), dt)]);
    for (cfg, compute) in cases {
        let o = ForwardOptions {
            compute,
            ..Default::default()
        };
        let (base, _) = MambaLM::init(&cfg, 3, &Device::Cpu).unwrap();
        let base = base.detach();
        let (x, y) = batch(&cfg);
        let base_loss = scalar(&base.loss_with(&x, &y, None, &o).unwrap());
        let (ad, vm) = Adapters::init(&cfg, &lora(&cfg, 2, 0.0), 9, &Device::Cpu).unwrap();
        let model = base.with_adapters(&ad);
        // B = 0: the adapted model starts as the base.
        let loss = model.loss_with(&x, &y, None, &o).unwrap();
        assert!((scalar(&loss) - base_loss).abs() < 1e-6, "{compute:?}");
        let grads = loss.backward().unwrap();
        let named = vars(&vm);
        assert_eq!(named.len(), 2 * cfg.n_layer() * all_projections(&cfg).len());
        for (n, v) in &named {
            if n.contains("lora_B") {
                let g = grads
                    .get(v)
                    .unwrap_or_else(|| panic!("no gradient for {n}"));
                let norm = scalar(&g.sqr().unwrap().sum_all().unwrap());
                assert!(norm > 0.0, "{compute:?} {n}: zero gradient");
            }
        }
        // The frozen base's large matrices get none (nothing is computed for them; the fused
        // SSM op still returns its small x_proj and dt_proj gradients).
        for (n, t) in base.named_tensors() {
            if n.contains("in_proj") || n.contains("out_proj") || n.contains("embeddings") {
                assert!(grads.get(&t).is_none(), "frozen {n} got a gradient");
            }
        }
        // Each adapter alone moves the loss.
        let mut rng = Rng::new(11);
        for (n, v) in named.iter().filter(|(n, _)| n.contains("lora_B")) {
            let zero = v.as_tensor().zeros_like().unwrap();
            // Large: dt_proj's input is small at initialisation.
            v.set(&f32(&randn(&mut rng, v.dims(), 5.0))).unwrap();
            let moved = scalar(&model.loss_with(&x, &y, None, &o).unwrap());
            let d = (moved - base_loss).abs();
            assert!(d > 1e-6, "{compute:?} {n} does not change the loss ({d})");
            v.set(&zero).unwrap();
        }
    }
}

#[test]
fn bf16_base_follows_f32_base() {
    let cfg = seeded::mamba1(true);
    let (base, _) = MambaLM::init(&cfg, 3, &Device::Cpu).unwrap();
    let (ad, vm) = Adapters::init(&cfg, &lora(&cfg, 4, 0.0), 9, &Device::Cpu).unwrap();
    let mut rng = Rng::new(2);
    for (n, v) in vars(&vm) {
        if n.contains("lora_B") {
            v.set(&f32(&randn(&mut rng, v.dims(), 0.3))).unwrap();
        }
    }
    let (x, y) = batch(&cfg);
    let f32_loss = base
        .detach()
        .with_adapters(&ad)
        .loss(&x, &y, None, None)
        .unwrap();
    let half = base.into_weight_dtype(DType::BF16).unwrap();
    let bf16_loss = half.with_adapters(&ad).loss(&x, &y, None, None).unwrap();
    let (a, b) = (scalar(&f32_loss), scalar(&bf16_loss));
    assert!(
        (a - b).abs() < 1e-2 * a.abs(),
        "f32 base {a}, bf16 base {b}"
    );
    let ga = f32_loss.backward().unwrap();
    let gb = bf16_loss.backward().unwrap();
    for (n, v) in vars(&vm) {
        let (p, q) = (ga.get(&v).unwrap(), gb.get(&v).unwrap());
        let diff = scalar(&(p - q).unwrap().abs().unwrap().max_all().unwrap());
        let size = scalar(&p.abs().unwrap().max_all().unwrap());
        assert!(
            diff <= 0.05 * size + 1e-6,
            "{n}: bf16 base gradient off by {diff} of {size}"
        );
    }
}

#[test]
fn dropout_is_seeded_and_off_outside_training() {
    let cfg = seeded::mamba2();
    let (base, _) = MambaLM::init(&cfg, 3, &Device::Cpu).unwrap();
    let (ad, vm) = Adapters::init(&cfg, &lora(&cfg, 2, 0.3), 9, &Device::Cpu).unwrap();
    let mut rng = Rng::new(4);
    for (n, v) in vars(&vm) {
        if n.contains("lora_B") {
            v.set(&f32(&randn(&mut rng, v.dims(), 0.5))).unwrap();
        }
    }
    let (x, y) = batch(&cfg);
    let model = base.detach().with_adapters(&ad);
    let loss = |seed: Option<u64>| {
        ad.set_dropout_seed(seed);
        scalar(&model.loss(&x, &y, None, None).unwrap())
    };
    let off = loss(None);
    let (a, b, c) = (loss(Some(1)), loss(Some(1)), loss(Some(2)));
    assert_eq!(a, b, "the same seed draws the same masks");
    assert_ne!(a, c, "another seed draws other masks");
    assert_ne!(a, off);
    assert_eq!(loss(None), off, "no dropout outside training");
}

#[test]
fn adapters_round_trip_through_peft_files() {
    let cfg = seeded::mamba1(false);
    let mut l = lora(&cfg, 3, 0.05);
    l.targets = vec!["in_proj".into(), "x_proj".into()];
    let (ad, vm) = Adapters::init(&cfg, &l, 1, &Device::Cpu).unwrap();
    let mut rng = Rng::new(8);
    for (_, v) in vars(&vm) {
        v.set(&f32(&randn(&mut rng, v.dims(), 0.5))).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    peft::save(dir.path(), &ad, "base").unwrap();
    let back = peft::load(dir.path(), &cfg, &Device::Cpu).unwrap();
    assert_eq!(back.cfg, ad.cfg);
    for (n, t) in ad.named() {
        assert_close(n, &back.named()[n], t, 1e-9, 0.0);
    }
    // A target the model lacks, and a PEFT option we do not compute, are refused by name.
    let bad = LoraConfig {
        targets: vec!["q_proj".into()],
        ..l.clone()
    };
    let err = match Adapters::init(&cfg, &bad, 1, &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unknown target was taken"),
    };
    assert!(err.contains("q_proj") && err.contains("in_proj"), "{err}");
    let cpath = dir.path().join(peft::ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cpath).unwrap();
    std::fs::write(
        &cpath,
        text.replace("\"use_dora\": false", "\"use_dora\": true"),
    )
    .unwrap();
    let err = peft::load(dir.path(), &cfg, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("use_dora") && err.contains("adapter_config.json"),
        "{err}"
    );
}

/// 50 AdamW steps of the adapter alone give the losses of a PEFT + PyTorch loop on the same
/// batches from the same adapter (make_lora_fixtures.py): within 1e-3 over an f32 base, within
/// 1e-2 over the base held in bf16.
#[test]
fn the_loss_curve_is_peft() {
    let curve = load_curve(&fixtures().join("lora_losses.safetensors"));
    for (dtype, tol) in [(DType::F32, 1e-3), (DType::BF16, 1e-2)] {
        let (base, _) = MambaLM::load(fixtures().join("ours_tiny"), &Device::Cpu).unwrap();
        let base = base.into_weight_dtype(dtype).unwrap();
        let loaded = peft::load(
            &fixtures().join("ours_lora_mamba1"),
            base.config(),
            &Device::Cpu,
        );
        let (adapters, varmap) = loaded.unwrap().into_vars().unwrap();
        let model = base.with_adapters(&adapters);
        let cfg = mamba_model::AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let mut opt = mamba_model::AdamW::from_varmap(&varmap, cfg).unwrap();
        assert!(opt
            .param_names()
            .iter()
            .all(|(n, decay)| n.contains("lora_") && *decay));
        follow_curve(
            &model,
            &mut opt,
            &curve,
            tol,
            &format!("PEFT's, {dtype:?} base"),
        );
    }
    let want = &curve.1;
    assert!(
        want[49] < want[0] - 0.05,
        "the run learns: {} -> {}",
        want[0],
        want[49]
    );
}
