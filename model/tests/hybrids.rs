//! The hybrid families (Bamba, Granite 4.0-H, Nemotron-H) against transformers (pure PyTorch
//! path, f32): random tiny models saved by `save_pretrained`, their logits and greedy
//! generations; fixtures and the script that made them in tests/fixtures
//! (make_hybrid_fixtures.py).

mod common;
#[path = "common/finetune.rs"]
mod finetune;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::*;
use mamba_model::{Family, LayerKind, MambaLM};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Each family's fixture name, family, and its layers' kinds.
fn families() -> Vec<(&'static str, Family, Vec<LayerKind>)> {
    use LayerKind::{Attention as A, Mamba2 as M, Mlp as F};
    vec![
        ("bamba", Family::Bamba, vec![M, F, A, F, M, F, M, F]),
        (
            "granite_h",
            Family::GraniteHybrid,
            vec![M, F, A, F, M, F, M, F],
        ),
        ("nemotron_h", Family::NemotronH, vec![M, F, A, F, M, F]),
    ]
}

fn load(name: &str) -> MambaLM {
    MambaLM::load(fixtures().join(format!("hf_{name}")), &Device::Cpu)
        .unwrap()
        .0
}

fn assert_logits(what: &str, model: &MambaLM, t: &std::collections::HashMap<String, Tensor>) {
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let ours = model.forward(&ids, None).unwrap();
    let theirs = &t["logits"];
    let scale = vec(theirs).iter().fold(0f64, |m, x| m.max(x.abs()));
    assert_close(what, &ours, theirs, 1e-4 * scale, 1e-4);
}

/// [`assert_logits`] against transformers' logits of the fixture `hf_<name>`.
fn assert_hf_logits(what: &str, name: &str, model: &MambaLM) {
    let t = tensors(&format!("hf_{name}_logits.safetensors"));
    assert_logits(what, model, &t);
}

/// The ids stored under `key`, flat.
fn ids_of(t: &std::collections::HashMap<String, Tensor>, key: &str) -> Vec<u32> {
    let ids = t[key].to_dtype(DType::U32).unwrap();
    ids.flatten_all().unwrap().to_vec1().unwrap()
}

/// A copy of the fixture `hf_<name>` (config and weights) with its config.json through `f`.
fn edited(name: &str, f: &dyn Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join(format!("hf_{name}"));
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    f(&mut v);
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    dir
}

fn tensors(file: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(file), &Device::Cpu).unwrap()
}

/// Each family loads with its layers' kinds and gives transformers' logits.
#[test]
fn every_family_gives_transformers_logits() {
    for (name, family, kinds) in families() {
        let model = load(name);
        let c = model.config();
        assert_eq!((c.family, &c.layers), (family, &kinds), "{name}");
        assert_eq!(c.padded_vocab(), 300, "{name}");
        assert_hf_logits(name, name, &model);
    }
}

/// Greedy generation (the decoder's prefill, then one step per token with the attention
/// layers' keys and values and the Mamba layers' states) gives transformers' tokens.
#[test]
fn every_family_generates_transformers_tokens() {
    for (name, _, _) in families() {
        let model = load(name);
        let t = tensors(&format!("hf_{name}_generate.safetensors"));
        let prompt = ids_of(&t, "prompt");
        let want = ids_of(&t, "tokens");
        for (how, decoder) in [
            ("fast", model.decoder().unwrap()),
            ("candle", model.candle_decoder()),
        ] {
            let (mut state, logits) = decoder.prefill(&[&prompt]).unwrap();
            let argmax = |l: &[f32]| -> u32 {
                (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32
            };
            let mut got = prompt.clone();
            let mut next = argmax(&logits[0]);
            while got.len() < want.len() {
                got.push(next);
                let logits = decoder.step(&[next], &mut state).unwrap();
                next = argmax(&logits[0]);
            }
            assert_eq!(got, want, "{name}, {how} step");
        }
    }
}

/// Saved and read back, each family keeps its names (transformers' layout) and its config, and
/// gives the same logits.
#[test]
fn every_family_is_written_in_its_own_layout() {
    for (name, _, _) in families() {
        let model = load(name);
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let read = |d: &std::path::Path| {
            let t =
                candle_core::safetensors::load(d.join("model.safetensors"), &Device::Cpu).unwrap();
            let mut names: Vec<String> = t.into_keys().collect();
            names.sort();
            names
        };
        assert_eq!(
            read(dir.path()),
            read(&fixtures().join(format!("hf_{name}"))),
            "{name}"
        );
        let again = MambaLM::load(dir.path(), &Device::Cpu).unwrap().0;
        assert_eq!(again.config(), model.config(), "{name}");
        assert_hf_logits(name, name, &again);
    }
}

/// Documents packed in one row are computed as if each ran alone: attention is masked by
/// document and positions restart, and the Mamba layers reset, in every family.
#[test]
fn packed_documents_equal_separate_ones() {
    for (name, _, _) in families() {
        let model = load(name);
        let docs: [&[u32]; 3] = [&[5, 9, 3, 14, 2], &[7, 1], &[33, 8, 40, 12, 6, 19, 60]];
        let packed: Vec<u32> = docs.concat();
        let mut resets = vec![0u8; packed.len()];
        let mut at = 0;
        for d in docs {
            resets[at] = 1;
            at += d.len();
        }
        let ids = Tensor::from_vec(packed.clone(), (1, packed.len()), &Device::Cpu).unwrap();
        let r = Tensor::from_vec(resets, (1, packed.len()), &Device::Cpu).unwrap();
        let together = model.forward(&ids, Some(&r)).unwrap();
        let mut at = 0;
        for d in docs {
            let alone = Tensor::from_vec(d.to_vec(), (1, d.len()), &Device::Cpu).unwrap();
            let alone = model.forward(&alone, None).unwrap();
            let part = together.narrow(1, at, d.len()).unwrap();
            assert_close(&format!("{name} doc at {at}"), &part, &alone, 1e-4, 1e-4);
            at += d.len();
        }
    }
}

/// 50 AdamW steps from the Bamba fixture give the losses of a PyTorch training loop of
/// transformers' Bamba on the same batches (make_hybrid_fixtures.py), within 1e-3; the decay
/// policy is the script's (every matrix but the embedding, the head included).
#[test]
fn the_bamba_loss_curve_is_transformers() {
    let curve = load_curve(&fixtures().join("bamba_losses.safetensors"));
    let (model, varmap) = MambaLM::load(fixtures().join("hf_bamba"), &Device::Cpu).unwrap();
    let cfg = mamba_model::AdamWConfig {
        lr: 1e-3,
        ..Default::default()
    };
    let vars: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let decayed = |n: &str| n == "lm_head.weight" || mamba_model::optim::default_decay(n);
    let mut opt = mamba_model::AdamW::with_decay_policy(vars, cfg, decayed).unwrap();
    follow_curve(&model, &mut opt, &curve, 1e-3, "transformers' Bamba");
    let want = &curve.1;
    assert!(want[49] < want[0] - 0.5, "{want:?}");
}

/// Three fine-tuning steps saved: the files of the committed `ours_<name>_tuned/` (the family's
/// names and config.json), which transformers loads with the logits it gave for them.
#[test]
fn fine_tuned_hybrids_load_in_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, _, _) in families() {
        let dir = fixtures().join(format!("hf_{name}"));
        let (model, varmap) = MambaLM::load(&dir, &Device::Cpu).unwrap();
        let losses = finetune::finetune(&model, &varmap);
        assert!(losses[2] < losses[0], "{name}: {losses:?}");
        let out = tmp.path().join(name);
        model.save(&out).unwrap();
        same_files(&out, &fixtures().join(format!("ours_{name}_tuned")), &[]);
        let again = MambaLM::load(&out, &Device::Cpu).unwrap().0;
        let want = tensors(&format!("ours_{name}_tuned_logits.safetensors"));
        assert_logits(
            &format!("{name} fine-tuned, in transformers"),
            &again,
            &want,
        );
    }
}

/// The CPU fast step (attention's keys and values growing beside the Mamba states) gives the
/// forward's logits at every position, for prompts short enough to run in it and long enough
/// to run through the forward, of different lengths in one batch.
#[test]
fn the_fast_step_is_the_forward_for_every_family() {
    for (name, _, _) in families() {
        let model = load(name);
        let ids: Vec<u32> = (0..70u32).map(|i| (i * 37 + 11) % 300).collect();
        let full = model
            .forward(
                &Tensor::from_vec(ids.clone(), (1, 70), &Device::Cpu).unwrap(),
                None,
            )
            .unwrap()
            .squeeze(0)
            .unwrap();
        let at = |p: usize| full.get(p).unwrap();
        let decoder = model.decoder().unwrap();
        // 5 tokens run in the fast step, 60 through the forward.
        let (short, long) = (&ids[..5], &ids[..60]);
        let (mut state, logits) = decoder.prefill(&[short, long]).unwrap();
        let row = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        assert_close(
            &format!("{name} short prefill"),
            &row(&logits[0]),
            &at(4),
            1e-4,
            1e-4,
        );
        assert_close(
            &format!("{name} long prefill"),
            &row(&logits[1]),
            &at(59),
            1e-4,
            1e-4,
        );
        for step in 0..3 {
            let logits = decoder
                .step(&[ids[5 + step], ids[60 + step]], &mut state)
                .unwrap();
            let what = format!("{name} step {step}");
            assert_close(&what, &row(&logits[0]), &at(5 + step), 1e-4, 1e-4);
            assert_close(&what, &row(&logits[1]), &at(60 + step), 1e-4, 1e-4);
        }
    }
}

/// What is not computed here is refused by name, with the file and what does load: MoE
/// layers (Granite 4.0-H tiny/small, Nemotron-H MoE), Falcon-H1, Zamba2, other RoPE types.
#[test]
fn what_is_not_computed_is_refused_by_name() {
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Value)| -> String {
        let dir = edited(name, f);
        let e = MambaLM::load(dir.path(), &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("config.json"), "{e}");
        e
    };
    let e = edit("granite_h", &|v| v["num_local_experts"] = 62.into());
    assert!(
        e.contains("mixture-of-experts") && e.contains("-h-micro"),
        "{e}"
    );
    let e = edit("nemotron_h", &|v| {
        v["layers_block_type"] = serde_json::json!(["linear_attention", "moe"])
    });
    assert!(e.contains("layer 1") && e.contains("moe"), "{e}");
    let e = edit("nemotron_h", &|v| {
        v.as_object_mut().unwrap().remove("layers_block_type");
        v["hybrid_override_pattern"] = "M*E".into();
    });
    assert!(e.contains("layer 2") && e.contains("moe"), "{e}");
    for (mt, why) in [
        ("falcon_h1", "side by side"),
        ("zamba2", "shares one attention"),
    ] {
        let e = edit("bamba", &|v| v["model_type"] = mt.into());
        assert!(
            e.contains(mt) && e.contains(why) && e.contains("Bamba"),
            "{e}"
        );
    }
    let e = edit("bamba", &|v| {
        v["rope_parameters"]["rope_type"] = "yarn".into()
    });
    assert!(e.contains("rope_type `yarn`"), "{e}");
    let e = edit("nemotron_h", &|v| v["mlp_hidden_act"] = "gelu".into());
    assert!(e.contains("mlp_hidden_act") && e.contains("relu2"), "{e}");
}

/// A Nemotron-H config as the released checkpoints write it (`hybrid_override_pattern`, no
/// `layers_block_type`) and Granite's legacy layer names read as transformers 5 writes them.
#[test]
fn released_config_spellings_load() {
    let load_with = |name: &str, f: &dyn Fn(&mut serde_json::Value)| -> MambaLM {
        let dir = edited(name, f);
        MambaLM::load(dir.path(), &Device::Cpu).unwrap().0
    };
    let nemotron = load_with("nemotron_h", &|v| {
        v.as_object_mut().unwrap().remove("layers_block_type");
        v["hybrid_override_pattern"] = "M-*-M-".into();
    });
    assert_eq!(nemotron.config().layers, load("nemotron_h").config().layers);
    // Nemotron-H's Mamba width is heads x head_dim whatever `expand` says (Nano-v2's is no
    // multiple of hidden_size).
    let wide = load_with("nemotron_h", &|v| v["expand"] = 3.into());
    assert_eq!(wide.config().d_inner(), 64);
    assert_hf_logits("expand 3", "nemotron_h", &wide);
    let granite = load_with("granite_h", &|v| {
        v["layer_types"] = serde_json::json!(["mamba", "attention", "mamba", "mamba"])
    });
    assert_eq!(granite.config().layers, load("granite_h").config().layers);
    assert_eq!(
        granite.config().arch_name(),
        "Granite 4.0-H (Mamba-2 + MLP + attention)"
    );
}

/// A PEFT adapter over Bamba (its Mamba, attention and MLP projections) gives PEFT's logits,
/// applied and merged; saved again, it has PEFT's names in Bamba's layout.
#[test]
fn peft_adapters_on_a_hybrid_give_peft_logits() {
    use mamba_model::io::peft;
    let model = load("bamba");
    let dir = fixtures().join("lora_bamba");
    let adapters = peft::load(&dir, model.config(), &Device::Cpu).unwrap();
    let t = tensors("lora_bamba_logits.safetensors");
    let theirs = &t["logits"];
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let base = model.forward(&ids, None).unwrap();
    let moved = vec(&(&base - theirs).unwrap())
        .iter()
        .fold(0f64, |m, x| m.max(x.abs()));
    assert!(
        moved > 0.1,
        "the adapter barely changes the logits ({moved})"
    );
    assert_logits("adapted", &model.with_adapters(&adapters), &t);
    assert_logits("merged", &model.merge_adapters(&adapters).unwrap(), &t);
    let out = tempfile::tempdir().unwrap();
    peft::save(out.path(), &adapters, "hf_bamba").unwrap();
    let names = |d: &std::path::Path| {
        let t = candle_core::safetensors::load(d.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
        let mut n: Vec<String> = t.into_keys().collect();
        n.sort();
        n
    };
    assert_eq!(names(out.path()), names(&dir));
}

/// llama.cpp export refuses a hybrid by its family's name.
#[test]
fn export_refuses_hybrids_by_name() {
    let model = load("granite_h");
    let e = mamba_model::io::gguf::Gguf::of_model(&model, mamba_model::io::gguf::GgufType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("Granite 4.0-H") && e.contains("not supported"),
        "{e}"
    );
}
