//! Mamba-2 against transformers' `Mamba2ForCausalLM` (pure PyTorch path, f32): the fixture and
//! the script that made it are in tests/fixtures (make_mamba2_fixtures.py).

mod common;
#[path = "common/seeded.rs"]
mod seeded;
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use common::*;
use mamba_model::mixers::mamba2::{pass_states, ssd_chunked, ssd_cpu, ssd_reference, ssd_scan};
use mamba_model::{LayerKind, MambaLM};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// transformers 4.x writes Mamba-2's time-step limit with Python's bare `Infinity` (not JSON):
/// such a config.json loads, with the limit it says; the word inside a string stays text.
#[test]
fn a_config_with_python_infinity_loads() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("hf_mamba2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let compact: String = text.split_whitespace().collect();
    let limit = "\"time_step_limit\":[0.0,{\"__float__\":\"Infinity\"}]";
    assert!(compact.contains(limit), "{compact}");
    let python = compact.replace(
        limit,
        "\"time_step_limit\":[0.001,Infinity],\"note\":\"Infinity \\\"NaN\\\"\"",
    );
    std::fs::write(dir.path().join("config.json"), python).unwrap();
    let (model, _) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(model.config().dt_limit, (0.001, f64::INFINITY));
    // A config that is not JSON even so is refused by name.
    std::fs::write(dir.path().join("config.json"), "{\"vocab_size\": Infinit}").unwrap();
    let e = MambaLM::load(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
}

/// transformers' random Mamba2ForCausalLM, saved by save_pretrained and in mamba_ssm's layout
/// (config.json with ssm_cfg.layer = Mamba2, pytorch_model.bin), gives transformers' logits.
#[test]
fn loads_transformers_mamba2_and_matches_its_logits() {
    let t = candle_core::safetensors::load(
        fixtures().join("hf_mamba2_logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for dir in ["hf_mamba2", "mamba_ssm_mamba2"] {
        let (model, _) = MambaLM::load(fixtures().join(dir), &Device::Cpu).unwrap();
        let c = model.config();
        assert_eq!(c.kind(), Some(LayerKind::Mamba2));
        assert_eq!(
            (
                c.n_heads(),
                c.head_dim,
                c.n_groups,
                c.d_state,
                c.tie_embeddings
            ),
            (4, 16, 2, 16, false),
            "{dir}"
        );
        assert_eq!(c.dt_limit, (0.0, f64::INFINITY));
        let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
        let ours = model.forward(&ids, None).unwrap();
        let theirs = &t["logits"];
        let scale = vec(theirs).iter().fold(0f64, |m, x| m.max(x.abs()));
        assert_close(dir, &ours, theirs, 1e-4 * scale, 1e-4);
    }
}

/// Random SSD inputs: x, dt, a, B, C, D (f64), 4 heads in 2 groups, state 5.
fn inputs(rng: &mut mamba_model::rng::SplitMix64, b: usize, l: usize) -> Vec<Tensor> {
    inputs_n(rng, b, l, 5)
}

/// [`inputs`] with a state of `n`.
fn inputs_n(rng: &mut mamba_model::rng::SplitMix64, b: usize, l: usize, n: usize) -> Vec<Tensor> {
    let (h, p, g) = (4, 3, 2);
    vec![
        randn(rng, &[b, l, h, p], 1.0),
        randn(rng, &[b, l, h], 0.5).abs().unwrap(),
        randn(rng, &[h], 1.0).abs().unwrap().neg().unwrap(),
        randn(rng, &[b, l, g, n], 1.0),
        randn(rng, &[b, l, g, n], 1.0),
        randn(rng, &[h], 1.0),
    ]
}

fn resets(b: usize, l: usize, at: &[usize]) -> Tensor {
    let mut r = vec![0u8; b * l];
    for &i in at {
        r[i] = 1;
    }
    Tensor::from_vec(r, (b, l), &Device::Cpu).unwrap()
}

/// The chunked SSD equals the recurrence, in value and in every gradient (f64), at chunk
/// sizes that divide the length and that do not, with and without documents packed inside.
#[test]
fn chunked_ssd_equals_the_recurrence_with_gradients() {
    let mut rng = mamba_model::rng::SplitMix64::new(4);
    let (b, l) = (2, 11);
    let inputs = inputs(&mut rng, b, l);
    let coef = randn(&mut rng, &[b, l, 4, 3], 1.0);
    // Documents start at 0, 3, 4 (one position long), 9; and at 0, 5 in the second row.
    let docs = resets(b, l, &[3, 4, 9, l + 5]);
    for r in [None, Some(&docs)] {
        let (want, _, gw) = run_with_grads(&inputs, &coef, DType::F64, |v| {
            (
                ssd_reference(v[0], v[1], v[2], v[3], v[4], v[5], r).unwrap(),
                None,
            )
        });
        for chunk in [1, 3, 4, 11, 16] {
            let (got, _, gg) = run_with_grads(&inputs, &coef, DType::F64, |v| {
                let (y, _) = ssd_chunked(v[0], v[1], v[2], v[3], v[4], v[5], r, chunk).unwrap();
                (y, None)
            });
            let what = format!("chunk {chunk}, resets {}", r.is_some());
            assert_close(&what, &got, &want, 1e-10, 1e-9);
            for (i, (a, e)) in gg.iter().zip(&gw).enumerate() {
                assert_close(&format!("{what}: gradient {i}"), a, e, 1e-9, 1e-8);
            }
        }
    }
}

/// The state-passing op (the chunked SSD's step between chunks) equals its definition as a
/// loop of candle ops, in value and in both gradients (f64), with zero decays (a document
/// starting inside a chunk) among them; in f32 too.
#[test]
fn state_passing_equals_its_loop_with_gradients() {
    let mut rng = mamba_model::rng::SplitMix64::new(9);
    let (b, h, c, n, p) = (2, 3, 5, 4, 3);
    let states = randn(&mut rng, &[b, h, c, n, p], 1.0);
    let keep = Tensor::from_vec(
        (0..b * h * c).map(|i| (i % 7 != 2) as u8 as f64).collect(),
        (b, h, c),
        &Device::Cpu,
    );
    let decay = (rand_in(&mut rng, &[b, h, c], 0.0, 1.0) * keep.unwrap()).unwrap();
    let coef = randn(&mut rng, &[b, h, c + 1, n, p], 1.0);
    let definition = |v: &[&Tensor]| {
        let mut e = v[0].i((.., .., 0)).unwrap().zeros_like().unwrap();
        let mut all = vec![e.clone()];
        for k in 0..c {
            let g = v[1].i((.., .., k)).unwrap().reshape((b, h, 1, 1)).unwrap();
            e = (e.broadcast_mul(&g).unwrap() + v[0].i((.., .., k)).unwrap()).unwrap();
            all.push(e.clone());
        }
        (Tensor::stack(&all, 2).unwrap(), None)
    };
    let op = |v: &[&Tensor]| (pass_states(v[0], v[1]).unwrap(), None);
    let inputs = [states, decay];
    let (want, _, gw) = run_with_grads(&inputs, &coef, DType::F64, definition);
    let (got, _, gg) = run_with_grads(&inputs, &coef, DType::F64, op);
    assert_close("states", &got, &want, 1e-12, 1e-12);
    for (i, (a, e)) in gg.iter().zip(&gw).enumerate() {
        assert_close(&format!("gradient {i}"), a, e, 1e-12, 1e-12);
    }
    let (got, _, gg) = run_with_grads(&inputs, &coef, DType::F32, op);
    assert_f32_close(
        "f32",
        &[&[got], &gg[..]].concat(),
        &[&[want], &gw[..]].concat(),
    );
    let bad = pass_states(&inputs[0], &inputs[1].narrow(2, 0, c - 1).unwrap());
    assert!(bad.unwrap_err().to_string().contains("disagree"));
}

/// `run` on `inputs` cast to `dtype`, as variables: its output and its state if it gives one,
/// and the gradient of sum(y * coef) with respect to each input, all in f64.
fn run_with_grads(
    inputs: &[Tensor],
    coef: &Tensor,
    dtype: DType,
    run: impl Fn(&[&Tensor]) -> (Tensor, Option<Tensor>),
) -> (Tensor, Option<Tensor>, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap())
        .collect();
    let v: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let (y, state) = run(&v);
    let f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let g = (f64(&y) * coef)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gs: Vec<Tensor> = vars.iter().map(|v| f64(g.get(v).unwrap())).collect();
    (f64(&y), state.as_ref().map(f64), gs)
}

/// `got` (f32 run) against `want` (f64): each within 1e-5 of `want`'s largest magnitude.
fn assert_f32_close(what: &str, got: &[Tensor], want: &[Tensor]) {
    let rel = |t: &Tensor| 1e-5 * vec(t).iter().fold(1f64, |m, x| m.max(x.abs()));
    for (i, (a, e)) in got.iter().zip(want).enumerate() {
        assert_close(&format!("{what}: tensor {i}"), a, e, rel(e), 1e-4);
    }
}

/// The SSD through the fused scan (the CPU prefill's form, f32) equals the f64 recurrence in
/// value, in every gradient and in the final state, with documents packed inside, for
/// Mamba-2's state of 128 and the 256 of some hybrids too.
#[test]
fn scan_ssd_equals_the_recurrence_with_gradients() {
    let mut rng = mamba_model::rng::SplitMix64::new(6);
    let (b, l) = (2, 37);
    for n in [8, 128, 256] {
        let inputs = inputs_n(&mut rng, b, l, n);
        let coef = randn(&mut rng, &[b, l, 4, 3], 1.0);
        let docs = resets(b, l, &[3, 4, 20, l + 9]);
        for r in [None, Some(&docs)] {
            let (want, want_state, want_g) = run_with_grads(&inputs, &coef, DType::F64, |v| {
                let (y, s) = ssd_chunked(v[0], v[1], v[2], v[3], v[4], v[5], r, 8).unwrap();
                (y, Some(s))
            });
            let (got, got_state, got_g) = run_with_grads(&inputs, &coef, DType::F32, |v| {
                // The state comes from the forward-only form of the scan (the prefill's).
                let (_, s) = ssd_scan(v[0], v[1], v[2], v[3], v[4], v[5], r, true).unwrap();
                let (y, _) = ssd_scan(v[0], v[1], v[2], v[3], v[4], v[5], r, false).unwrap();
                (y, s)
            });
            let what = format!("n {n}, resets {}", r.is_some());
            let (got_state, want_state) = (got_state.unwrap(), want_state.unwrap());
            assert_f32_close(&what, &[got, got_state], &[want, want_state]);
            assert_f32_close(&format!("{what}, gradients"), &got_g, &want_g);
        }
    }
}

/// The SSD's own CPU op (training's form, f32) equals the f64 recurrence in value and in every
/// gradient, with documents packed inside, at states shorter than its sixteen lanes, a
/// multiple of them, Mamba-2's 128 and 256, over several spans of the backward; and gives
/// the same bits on one thread as on several.
#[test]
fn cpu_ssd_op_equals_the_recurrence_with_gradients() {
    let mut rng = mamba_model::rng::SplitMix64::new(8);
    let (b, l) = (2, 37);
    for n in [5, 16, 128, 256] {
        let inputs = inputs_n(&mut rng, b, l, n);
        let coef = randn(&mut rng, &[b, l, 4, 3], 1.0);
        let docs = resets(b, l, &[3, 4, 20, l + 9]);
        for r in [None, Some(&docs)] {
            let (want, _, want_g) = run_with_grads(&inputs, &coef, DType::F64, |v| {
                (
                    ssd_reference(v[0], v[1], v[2], v[3], v[4], v[5], r).unwrap(),
                    None,
                )
            });
            let op = |v: &[&Tensor]| {
                (
                    ssd_cpu(v[0], v[1], v[2], v[3], v[4], v[5], r).unwrap(),
                    None,
                )
            };
            let (got, _, got_g) = run_with_grads(&inputs, &coef, DType::F32, op);
            let what = format!("n {n}, resets {}", r.is_some());
            assert_f32_close(&what, std::slice::from_ref(&got), &[want]);
            assert_f32_close(&format!("{what}, gradients"), &got_g, &want_g);
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let (alone, _, alone_g) =
                one.install(|| run_with_grads(&inputs, &coef, DType::F32, op));
            assert_eq!(vec(&alone), vec(&got), "{what}: one thread");
            for (a, e) in alone_g.iter().zip(&got_g) {
                assert_eq!(vec(a), vec(e), "{what}: gradients on one thread");
            }
        }
    }
}

/// Packed documents give each document's outputs as if it ran alone.
#[test]
fn packed_documents_never_see_each_other() {
    let mut rng = mamba_model::rng::SplitMix64::new(5);
    let v = inputs(&mut rng, 1, 12);
    let r = resets(1, 12, &[5]);
    let (y, _) = ssd_chunked(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], Some(&r), 4).unwrap();
    let part = |t: &Tensor| t.narrow(1, 5, 7).unwrap();
    let alone = ssd_reference(
        &part(&v[0]),
        &part(&v[1]),
        &v[2],
        &part(&v[3]),
        &part(&v[4]),
        &v[5],
        None,
    )
    .unwrap();
    assert_close("second document", &part(&y), &alone, 1e-12, 1e-10);
    let (mixed, _) = ssd_chunked(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], None, 4).unwrap();
    let diff = (part(&mixed) - &alone)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(
        diff.to_scalar::<f64>().unwrap() > 1e-3,
        "nothing to keep apart"
    );
}

/// The recurrence in f32 equals itself in f64 (the reference is dtype-generic), and it is
/// causal: the first positions' outputs do not depend on later ones.
#[test]
fn the_ssd_reference_is_causal_and_dtype_generic() {
    let mut rng = mamba_model::rng::SplitMix64::new(6);
    let v = inputs(&mut rng, 2, 9);
    let v32: Vec<Tensor> = v.iter().map(f32).collect();
    let y = ssd_reference(&v32[0], &v32[1], &v32[2], &v32[3], &v32[4], &v32[5], None).unwrap();
    let y64 = ssd_reference(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], None).unwrap();
    assert_close("f32 vs f64", &y, &f32(&y64), 1e-5, 1e-4);
    let half = |t: &Tensor| t.narrow(1, 0, 4).unwrap();
    let y4 = ssd_reference(
        &half(&v[0]),
        &half(&v[1]),
        &v[2],
        &half(&v[3]),
        &half(&v[4]),
        &v[5],
        None,
    )
    .unwrap();
    assert_close("causal", &f32(&y4), &half(&y), 1e-6, 1e-5);
}

/// Our seeded model, saved, is the committed ours_mamba2/ that transformers loaded and computed
/// logits for (make_mamba2_fixtures.py); ours equal them.
#[test]
fn our_mamba2_loads_in_transformers_with_the_same_logits() {
    let (model, _) = MambaLM::init(&seeded::mamba2(), seeded::MAMBA2_SEED, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    for f in ["model.safetensors", "config.json"] {
        let a = std::fs::read(dir.path().join(f)).unwrap();
        let b = std::fs::read(fixtures().join("ours_mamba2").join(f)).unwrap();
        assert!(a == b, "{f} differs from the committed fixture");
    }
    let t = candle_core::safetensors::load(
        fixtures().join("ours_mamba2_logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let ours = model.forward(&ids, None).unwrap();
    let scale = vec(&t["logits"]).iter().fold(0f64, |m, x| m.max(x.abs()));
    assert_close(
        "ours in transformers",
        &ours,
        &t["logits"],
        1e-4 * scale,
        1e-4,
    );
    let (back, _) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(vec(&back.forward(&ids, None).unwrap()), vec(&ours));
}

/// Training steps lower the loss on packed documents, and a packed row gives each document the
/// logits it has alone (conv and SSD both reset).
#[test]
fn mamba2_trains_on_packed_documents_kept_apart() {
    let (model, varmap) = MambaLM::init(&seeded::mamba2(), 5, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..2 * 24).map(|i| (i * 7 + 3) % 40).collect();
    let ids = Tensor::from_vec(ids, (2, 24), &Device::Cpu).unwrap();
    let targets = ids.roll(-1, 1).unwrap();
    let r = resets(2, 24, &[10, 24 + 6]);
    let full = model.forward(&ids, Some(&r)).unwrap();
    let alone = model
        .forward(&ids.narrow(1, 10, 14).unwrap(), None)
        .unwrap();
    let got = full.narrow(1, 10, 14).unwrap();
    assert_close(
        "document alone",
        &got.i(0).unwrap(),
        &alone.i(0).unwrap(),
        1e-5,
        1e-4,
    );
    let mut opt = mamba_model::AdamW::from_varmap(
        &varmap,
        mamba_model::AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let losses: Vec<f32> = (0..5)
        .map(|_| {
            let loss = model.loss(&ids, &targets, Some(&r), None).unwrap();
            opt.backward_step(&loss).unwrap();
            loss.to_scalar::<f32>().unwrap()
        })
        .collect();
    assert!(losses[4] < losses[0] - 0.1, "{losses:?}");
}

/// 50 AdamW steps from our initialisation give the losses a PyTorch training loop of
/// transformers' Mamba2 gives on the same batches (make_mamba2_fixtures.py), within 1e-3.
#[test]
fn the_loss_curve_is_transformers() {
    let curve = load_curve(&fixtures().join("mamba2_losses.safetensors"));
    let (model, varmap) =
        MambaLM::init(&seeded::mamba2(), seeded::MAMBA2_SEED, &Device::Cpu).unwrap();
    let cfg = mamba_model::AdamWConfig {
        lr: 3e-3,
        ..Default::default()
    };
    let mut opt = mamba_model::AdamW::from_varmap(&varmap, cfg).unwrap();
    follow_curve(&model, &mut opt, &curve, 1e-3, "transformers'");
    let want = &curve.1;
    assert!(
        want[49] < want[0] - 0.5,
        "the run learns: {} -> {}",
        want[0],
        want[49]
    );
}

/// Prefill then one token at a time gives the full forward's logits (prompts shorter and
/// longer than the conv window, batched), and reproduces transformers' logits.
#[test]
fn prefill_and_step_equal_the_forward() {
    let (model, _) = MambaLM::load(fixtures().join("hf_mamba2"), &Device::Cpu).unwrap();
    let t = candle_core::safetensors::load(
        fixtures().join("hf_mamba2_logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids = t["input_ids"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    let want = t["logits"].to_vec3::<f32>().unwrap();
    let splits = [2, 9];
    let prompts: Vec<&[u32]> = ids.iter().zip(splits).map(|(r, k)| &r[..k]).collect();
    let decoder = model.decoder().unwrap();
    let (mut st, first) = decoder.prefill(&prompts).unwrap();
    let mut got: Vec<Vec<Vec<f32>>> = first.into_iter().map(|l| vec![l]).collect();
    for step in 0..8 {
        let feed: Vec<u32> = ids.iter().zip(splits).map(|(r, k)| r[k + step]).collect();
        for (g, l) in got.iter_mut().zip(decoder.step(&feed, &mut st).unwrap()) {
            g.push(l);
        }
    }
    for (row, rows) in got.iter().enumerate() {
        for (i, g) in rows.iter().enumerate() {
            let w = &want[row][splits[row] - 1 + i];
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                d < 1e-4 * scale.max(1.0),
                "row {row}, position {}: {d}",
                splits[row] - 1 + i
            );
        }
    }
    assert!(decoder.prefill(&[&[]]).is_err());
}

/// The state after the last position, with documents packed and a length no chunk size
/// divides, is the last document's own final state.
#[test]
fn the_final_state_is_the_last_documents() {
    let mut rng = mamba_model::rng::SplitMix64::new(8);
    let v = inputs(&mut rng, 1, 11);
    let r = resets(1, 11, &[6]);
    let (_, packed) = ssd_chunked(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], Some(&r), 4).unwrap();
    let tail = |t: &Tensor| t.narrow(1, 6, 5).unwrap();
    let (_, alone) = ssd_chunked(
        &tail(&v[0]),
        &tail(&v[1]),
        &v[2],
        &tail(&v[3]),
        &tail(&v[4]),
        &v[5],
        None,
        5,
    )
    .unwrap();
    assert_close("final state", &packed, &alone, 1e-12, 1e-10);
}
