//! Whole-model tests: document resets vs separate documents, step mode vs full forward,
//! save/load, initialisation, presets, AdamW training and checkpointing, bit-identical
//! training steps across thread counts.

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use mamba_model::rng::SplitMix64 as Rng;
use mamba_model::{AdamW, AdamWConfig, Config, LayerKind, MambaLM, State};

const EMB: &str = "backbone.embeddings.weight";

fn tiny() -> Config {
    Config::new(32, 2, 50)
}

#[test]
fn resets_equal_running_documents_separately() {
    let cfg = tiny();
    let (model, varmap) = MambaLM::init(&cfg, 7, &Device::Cpu).unwrap();
    let mut rng = Rng::new(3);
    // Row 0: documents of length 7, 10, 5; row 1: 1, 4, 17 (a one-token document included).
    let rows: [&[usize]; 2] = [&[7, 10, 5], &[1, 4, 17]];
    let l = 22;
    let tokens = ids(&mut rng, 2, l, cfg.vocab_size);
    let mut resets = vec![0u8; 2 * l];
    for (r, docs) in rows.iter().enumerate() {
        let mut s = 0;
        for &n in docs.iter() {
            resets[r * l + s] = 1;
            s += n;
        }
    }
    let resets = Tensor::from_vec(resets, (2, l), &Device::Cpu).unwrap();
    let packed = model.forward(&tokens, Some(&resets)).unwrap();
    let mut separate_loss = Tensor::zeros((), DType::F32, &Device::Cpu).unwrap();
    for (r, docs) in rows.iter().enumerate() {
        let mut s = 0;
        for &n in docs.iter() {
            let doc = tokens.narrow(0, r, 1).unwrap().narrow(1, s, n).unwrap();
            let alone = model.forward(&doc, None).unwrap();
            let in_pack = packed.narrow(0, r, 1).unwrap().narrow(1, s, n).unwrap();
            assert_close(&format!("row {r} doc at {s}"), &in_pack, &alone, 1e-5, 1e-4);
            separate_loss = (separate_loss + alone.sqr().unwrap().sum_all().unwrap()).unwrap();
            s += n;
        }
    }
    // Gradients agree too (the packed loss is the sum of the per-document losses).
    let packed_loss = packed.sqr().unwrap().sum_all().unwrap();
    let g1 = packed_loss.backward().unwrap();
    let g2 = separate_loss.backward().unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let a = g1.get(var.as_tensor()).unwrap();
        let b = g2.get(var.as_tensor()).unwrap();
        let scale = vec(b).iter().fold(0f64, |m, x| m.max(x.abs()));
        assert_close(&format!("grad {name}"), a, b, 1e-4 * scale.max(1e-3), 1e-3);
    }
}

#[test]
fn step_mode_matches_full_forward() {
    let cfg = tiny();
    let (model, _) = MambaLM::init(&cfg, 11, &Device::Cpu).unwrap();
    let mut rng = Rng::new(5);
    let tokens = ids(&mut rng, 3, 15, cfg.vocab_size);
    let full = model
        .forward(&tokens, None)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap();
    let rows = tokens.to_vec2::<u32>().unwrap();
    for dec in [model.decoder().unwrap(), model.candle_decoder()] {
        let firsts: Vec<&[u32]> = rows.iter().map(|r| &r[..1]).collect();
        let (mut state, mut logits): (State, _) = dec.prefill(&firsts).unwrap();
        for t in 1..=15 {
            for (i, got) in logits.iter().enumerate() {
                let want = Tensor::new(full[i][t - 1].as_slice(), &Device::Cpu).unwrap();
                let got = Tensor::new(got.as_slice(), &Device::Cpu).unwrap();
                assert_close(&format!("position {}", t - 1), &got, &want, 1e-5, 1e-4);
            }
            if t < 15 {
                let col: Vec<u32> = rows.iter().map(|r| r[t]).collect();
                logits = dec.step(&col, &mut state).unwrap();
            }
        }
    }
}

#[test]
fn save_load_roundtrip_and_errors() {
    let cfg = tiny();
    let (model, _) = MambaLM::init(&cfg, 1, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let (loaded, varmap) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), model.config());
    assert_eq!(
        varmap.all_vars().len(),
        mamba_model::MambaLM::shapes(&cfg).len()
    );
    let mut rng = Rng::new(2);
    let x = ids(&mut rng, 2, 9, cfg.vocab_size);
    assert_eq!(
        vec(&model.forward(&x, None).unwrap()),
        vec(&loaded.forward(&x, None).unwrap())
    );

    // `backbone.embedding.weight` and an explicit `lm_head.weight` are accepted.
    let wpath = dir.path().join("model.safetensors");
    let mut named = model.named_tensors();
    named[0].0 = "backbone.embedding.weight".into();
    named.push(("lm_head.weight".into(), model.tensor(EMB).unwrap()));
    mamba_model::io::safetensors::write_safetensors(&wpath, &named, &[]).unwrap();
    let (alt, _) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(
        vec(&alt.forward(&x, None).unwrap()),
        vec(&loaded.forward(&x, None).unwrap())
    );

    // Errors name the file and the tensor.
    let mut named = model.named_tensors();
    named.retain(|(n, _)| n != "backbone.layers.1.mixer.D");
    mamba_model::io::safetensors::write_safetensors(&wpath, &named, &[]).unwrap();
    let e = MambaLM::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("backbone.layers.1.mixer.D"),
        "{e}"
    );
    let mut named = model.named_tensors();
    named[3].1 = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
    let bad = named[3].0.clone();
    mamba_model::io::safetensors::write_safetensors(&wpath, &named, &[]).unwrap();
    let e = MambaLM::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&bad) && e.contains("shape"), "{e}");
}

#[test]
fn init_is_seeded_and_follows_mamba_ssm() {
    let cfg = Config::new(64, 4, 100);
    let (a, _) = MambaLM::init(&cfg, 9, &Device::Cpu).unwrap();
    let (b, _) = MambaLM::init(&cfg, 9, &Device::Cpu).unwrap();
    let (c, _) = MambaLM::init(&cfg, 10, &Device::Cpu).unwrap();
    for ((n, x), (_, y)) in a.named_tensors().iter().zip(b.named_tensors()) {
        assert_eq!(vec(x), vec(&y), "{n} not deterministic");
    }
    assert_ne!(vec(&a.tensor(EMB).unwrap()), vec(&c.tensor(EMB).unwrap()));
    assert_eq!(a.tensor(EMB).unwrap().dims(), &[104, 64]); // 100 padded to a multiple of 8
    let emb = vec(&a.tensor(EMB).unwrap());
    let std = (emb.iter().map(|x| x * x).sum::<f64>() / emb.len() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.002, "embedding std {std}");
    let m = |name: &str| {
        a.tensor(&format!("backbone.layers.0.mixer.{name}"))
            .unwrap()
    };
    let alog = vec(&m("A_log"));
    for (i, v) in alog.iter().enumerate() {
        assert!((v - (((i % 16) + 1) as f64).ln()).abs() < 1e-6);
    }
    assert!(vec(&m("D")).iter().all(|&x| x == 1.0));
    for bias in vec(&m("dt_proj.bias")) {
        let dt = (1.0 + bias.exp()).ln();
        assert!((1e-3 * 0.999..=0.1 * 1.001).contains(&dt), "dt {dt}");
    }
    let r = cfg.dt_rank() as f64;
    assert!(vec(&m("dt_proj.weight"))
        .iter()
        .all(|x| x.abs() <= r.powf(-0.5)));
    let bound = 1.0 / (cfg.d_inner() as f64).sqrt() / (cfg.n_layer() as f64).sqrt();
    let out = vec(&m("out_proj.weight"));
    assert!(out.iter().all(|x| x.abs() <= bound));
    assert!(out.iter().fold(0f64, |mx, x| mx.max(x.abs())) > 0.9 * bound);
    assert!(vec(&m("conv1d.weight")).iter().all(|x| x.abs() <= 0.5));
}

#[test]
fn presets_and_info() {
    let e = Config::preset("huge", 100).unwrap_err().to_string();
    assert!(
        e.contains("tiny") && e.contains("small") && e.contains("medium") && e.contains("large"),
        "{e}"
    );
    let small = Config::preset("small", 50257).unwrap();
    assert_eq!(
        (
            small.d_model,
            small.n_layer(),
            small.padded_vocab(),
            small.dt_rank()
        ),
        (512, 8, 50264, 32)
    );
    assert_eq!(Config::preset("medium", 50257).unwrap().d_model, 768);
    assert_eq!(Config::preset("large", 50257).unwrap().n_layer(), 24);
    let text = mamba_model::info::breakdown(&small);
    assert!(
        text.contains(&MambaLM::num_params(&small).to_string()),
        "{text}"
    );
    assert!(text.contains("in_proj"), "{text}");
    // config.json round trip, both architectures
    let path = std::path::Path::new("config.json");
    for cfg in [
        small,
        Config::arch_preset(LayerKind::Mamba2, "small", 50257).unwrap(),
    ] {
        let v = mamba_model::io::config::hf_config(&cfg);
        assert_eq!(
            mamba_model::io::config::config_from_hf(&v, path).unwrap(),
            cfg
        );
    }
}

#[test]
fn adamw_trains_and_checkpoints() {
    let cfg = tiny();
    let mut rng = Rng::new(4);
    let x = ids(&mut rng, 2, 16, cfg.vocab_size);
    let y = ids(&mut rng, 2, 16, cfg.vocab_size);
    let opt_cfg = AdamWConfig {
        lr: 3e-3,
        ..Default::default()
    };
    let (model, varmap) = MambaLM::init(&cfg, 3, &Device::Cpu).unwrap();
    let mut opt = AdamW::from_varmap(&varmap, opt_cfg.clone()).unwrap();
    let names = opt.param_names();
    assert!(names
        .iter()
        .any(|(n, d)| n.ends_with("in_proj.weight") && *d));
    assert!(names.iter().any(|(n, d)| n.ends_with("A_log") && !*d));
    assert!(names
        .iter()
        .any(|(n, d)| n.ends_with("embeddings.weight") && !*d));
    let first = model
        .loss(&x, &y, None, None)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    for _ in 0..5 {
        let loss = model.loss(&x, &y, None, None).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let after = model
        .loss(&x, &y, None, None)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(after < first - 0.05, "loss {first} -> {after}");

    // Checkpoint model + optimizer, continue both copies: identical trajectories.
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    opt.save(dir.path().join("optim.safetensors")).unwrap();
    let (model2, varmap2) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    let mut opt2 = AdamW::from_varmap(&varmap2, AdamWConfig::default()).unwrap();
    opt2.load(dir.path().join("optim.safetensors")).unwrap();
    assert_eq!(opt2.step_count(), 5);
    assert_eq!(opt2.config(), opt.config());
    for (m, o) in [(&model, &mut opt), (&model2, &mut opt2)] {
        o.set_lr(1e-3);
        let loss = m.loss(&x, &y, None, None).unwrap();
        o.backward_step(&loss).unwrap();
    }
    for name in [EMB, "backbone.layers.1.mixer.in_proj.weight"] {
        let (a, b) = (model.tensor(name).unwrap(), model2.tensor(name).unwrap());
        assert_eq!(vec(&a), vec(&b), "{name}");
    }
}

#[test]
fn loss_mask_and_cross_entropy() {
    // Uniform logits give log(V); masked positions are ignored.
    let logits = Tensor::zeros((1, 3, 8), DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    let l = mamba_model::cross_entropy(&logits, &t, None)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((l - 8f32.ln()).abs() < 1e-6);
    let mut v = vec![0f32; 24];
    v[3] = 5.0; // position 0 strongly predicts token 3 (target is 1)
    let logits = Tensor::from_vec(v, (1, 3, 8), &Device::Cpu).unwrap();
    let m = Tensor::new(&[[0f32, 1.0, 1.0]], &Device::Cpu).unwrap();
    let l = mamba_model::cross_entropy(&logits, &t, Some(&m))
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((l - 8f32.ln()).abs() < 1e-6);
}

#[test]
fn fused_cross_entropy_matches_log_softmax() {
    let mut rng = Rng::new(8);
    let logits = Var::from_tensor(&f32(&randn(&mut rng, &[7, 37], 3.0))).unwrap();
    let t = ids(&mut rng, 1, 7, 37).flatten_all().unwrap();
    let fused = mamba_model::loss::per_position_nll(&logits, &t).unwrap();
    let lsm = mamba_model::layers::ops::log_softmax_last(&logits).unwrap();
    let plain = lsm
        .gather(&t.unsqueeze(1).unwrap(), 1)
        .unwrap()
        .squeeze(1)
        .unwrap()
        .neg()
        .unwrap();
    assert_close("nll", &fused, &plain, 1e-6, 1e-5);
    let w = f32(&randn(&mut rng, &[7], 1.0));
    let g1 = (&fused * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (&plain * &w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(
        "dlogits",
        g1.get(&logits).unwrap(),
        g2.get(&logits).unwrap(),
        1e-6,
        1e-5,
    );
}

#[test]
fn fused_rms_norm_matches_ops() {
    let mut rng = Rng::new(12);
    let x = Var::from_tensor(&f32(&randn(&mut rng, &[3, 37, 40], 2.0))).unwrap();
    let w = Var::from_tensor(&f32(&randn(&mut rng, &[40], 1.0))).unwrap();
    let gw = f32(&randn(&mut rng, &[3, 37, 40], 1.0));
    let a = mamba_model::layers::norm::rms_norm(&x, &w, 1e-5).unwrap();
    let b = mamba_model::layers::norm::rms_norm_ops(&x, &w, 1e-5).unwrap();
    assert_close("rms forward", &a, &b, 1e-6, 1e-5);
    let g1 = (&a * &gw).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (&b * &gw).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close("dx", g1.get(&x).unwrap(), g2.get(&x).unwrap(), 1e-5, 1e-4);
    assert_close("dw", g1.get(&w).unwrap(), g2.get(&w).unwrap(), 1e-4, 1e-4);
}

/// Loss and every parameter gradient of one training step of `arch`, computed inside a rayon
/// pool of `threads` threads.
fn step_grads(threads: usize, arch: LayerKind) -> (f32, Vec<Vec<f32>>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let cfg = Config::of(arch, 64, 2, 300);
        let mut rng = Rng::new(9);
        let (b, l) = (3, 70);
        let x = ids(&mut rng, b, l, cfg.vocab_size);
        let y = ids(&mut rng, b, l, cfg.vocab_size);
        let resets: Vec<u8> = (0..b * l).map(|i| (i % l % 23 == 0) as u8).collect();
        let resets = Tensor::from_vec(resets, (b, l), &Device::Cpu).unwrap();
        let (model, _vars) = MambaLM::init(&cfg, 5, &Device::Cpu).unwrap();
        let loss = model.loss(&x, &y, Some(&resets), None).unwrap();
        let grads = loss.backward().unwrap();
        let g = model
            .named_tensors()
            .iter()
            .map(|(name, t)| {
                let g = grads
                    .get(t)
                    .unwrap_or_else(|| panic!("no gradient for {name}"));
                g.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect();
        (loss.to_scalar::<f32>().unwrap(), g)
    })
}

#[test]
fn training_step_is_bit_identical_across_thread_counts() {
    for arch in LayerKind::ALL {
        let (l1, g1) = step_grads(1, arch);
        let (l3, g3) = step_grads(3, arch);
        assert_eq!(l1.to_bits(), l3.to_bits(), "{arch:?}: loss {l1} vs {l3}");
        for (i, (a, b)) in g1.iter().zip(&g3).enumerate() {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{arch:?}: gradient {i} differs between 1 and 3 threads"
            );
        }
    }
}

/// Matmuls in bf16/fp16 stay close to f32 and still give f32 gradients; gradient
/// checkpointing gives the plain backward's gradients, with document resets.
#[test]
fn precision_and_checkpointing_options() {
    use mamba_model::ForwardOptions;
    let cfg = Config::preset("tiny", 48).unwrap();
    let (m, _) = MambaLM::init(&cfg, 5, &Device::Cpu).unwrap();
    let mut rng = Rng::new(3);
    let x = ids(&mut rng, 3, 32, 48);
    let y = x.roll(-1, 1).unwrap();
    let mut r = vec![0u8; 96];
    (r[7], r[50]) = (1, 1);
    let r = Tensor::from_vec(r, (3, 32), &Device::Cpu).unwrap();
    let o = ForwardOptions {
        resets: Some(&r),
        ..Default::default()
    };
    let scalar = |t: &Tensor| t.to_scalar::<f32>().unwrap();
    let full = scalar(&m.loss_with(&x, &y, None, &o).unwrap());
    assert_eq!(full, scalar(&m.loss(&x, &y, Some(&r), None).unwrap()));
    assert_ne!(
        full,
        scalar(&m.loss(&x, &y, None, None).unwrap()),
        "resets ignored"
    );
    let in_proj = m.tensor("backbone.layers.0.mixer.in_proj.weight").unwrap();
    for compute in [DType::BF16, DType::F16] {
        let (loss, grads) = m
            .loss_and_grads(&x, &y, &ForwardOptions { compute, ..o }, 1.0)
            .unwrap();
        let half = scalar(&loss);
        assert!(
            (half - full).abs() < 0.02 * full,
            "{compute:?}: {half} vs {full}"
        );
        assert_ne!(half, full, "{compute:?} computed in f32");
        assert_eq!(grads.get(&in_proj).unwrap().dtype(), DType::F32);
    }
    let (l1, plain) = m.loss_and_grads(&x, &y, &o, 4.0).unwrap();
    let ck = ForwardOptions {
        checkpointing: true,
        ..o
    };
    let (l2, rebuilt) = m.loss_and_grads(&x, &y, &ck, 4.0).unwrap();
    assert_eq!(scalar(&l1), scalar(&l2));
    for (name, t) in m.named_tensors() {
        let (a, b) = (plain.get(&t).unwrap(), rebuilt.get(&t).unwrap());
        let scale = vec(a).iter().fold(1e-6f64, |s, v| s.max(v.abs()));
        assert_close(&name, b, a, 1e-5 * scale, 0.0);
    }
}
