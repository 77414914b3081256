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

/// The recurrence the fused op computes, one position at a time in candle ops (f64):
/// y (b, l, H, R, P) for qk (b, l, H, 2, R, N), v (b, l, H, R, P), coef (b, l, H, 3).
fn trapezoid_steps(qk: &Tensor, v: &Tensor, coef: &Tensor) -> Tensor {
    let [b, l, h, _, _, n] = qk.dims().try_into().unwrap();
    let p = v.dim(4).unwrap();
    let mut state = Tensor::zeros((b, h, p, n), qk.dtype(), qk.device()).unwrap();
    let mut prev: Option<Tensor> = None;
    let mut ys = vec![];
    for t in 0..l {
        let at = |x: &Tensor| x.narrow(1, t, 1).unwrap().squeeze(1).unwrap();
        let (qkt, vt, ct) = (at(qk), at(v), at(coef)); // (b, h, 2, r, n), (b, h, r, p), (b, h, 3)
        let (q, k) = (qkt.get_on_dim(2, 0).unwrap(), qkt.get_on_dim(2, 1).unwrap());
        let w = vt
            .unsqueeze(4)
            .unwrap()
            .broadcast_mul(&k.unsqueeze(3).unwrap())
            .unwrap();
        let w = w.sum(2).unwrap(); // (b, h, p, n)
        let c = |i: usize| ct.narrow(2, i, 1).unwrap().reshape((b, h, 1, 1)).unwrap();
        state = (state.broadcast_mul(&c(0)).unwrap() + w.broadcast_mul(&c(2)).unwrap()).unwrap();
        if let Some(pw) = &prev {
            state = (state + pw.broadcast_mul(&c(1)).unwrap()).unwrap();
        }
        prev = Some(w);
        // y_r = h q_r: (b, h, r, p)
        let y = state
            .unsqueeze(2)
            .unwrap()
            .broadcast_mul(&q.unsqueeze(3).unwrap())
            .unwrap();
        ys.push(y.sum(4).unwrap());
    }
    Tensor::stack(&ys, 1).unwrap()
}

/// The fused CPU op (f32) equals the recurrence step by step (f64) in value and in the
/// gradients of q, k, v and the three coefficients, with documents starting inside (alpha and
/// beta 0 there), at ranks 1 and 3, over several spans of its backward; the final state too.
#[test]
fn the_fused_trapezoid_op_is_the_recurrence_with_gradients() {
    use mamba_model::mixers::mamba3::trap_cpu::{final_state, trapezoid};
    let mut rng = mamba_model::rng::SplitMix64::new(11);
    for (r, l) in [(1, 37), (3, 21)] {
        let (b, h, p, n) = (2, 3, 5, 8);
        let qk = randn(&mut rng, &[b, l, h, 2, r, n], 1.0);
        let v = randn(&mut rng, &[b, l, h, r, p], 1.0);
        let mut coef = vec(&rand_in(&mut rng, &[b, l, h, 3], 0.05, 0.95));
        for (bi, t) in [(0, 5), (0, 17), (1, 9)] {
            for hi in 0..h {
                let at = ((bi * l + t) * h + hi) * 3;
                (coef[at], coef[at + 1]) = (0.0, 0.0);
            }
        }
        let coef = Tensor::from_vec(coef, (b, l, h, 3), &Device::Cpu).unwrap();
        let dy = randn(&mut rng, &[b, l, h, r, p], 1.0);
        let run = |dt: DType, fused: bool| {
            let vars: Vec<Var> = [&qk, &v, &coef]
                .iter()
                .map(|t| Var::from_tensor(&t.to_dtype(dt).unwrap()).unwrap())
                .collect();
            let [a, bv, c] = [0, 1, 2].map(|i| vars[i].as_tensor().clone());
            let y = match fused {
                true => trapezoid(&a, &bv, &c).unwrap(),
                false => trapezoid_steps(&a, &bv, &c),
            };
            let loss = (y.to_dtype(DType::F64).unwrap() * &dy)
                .unwrap()
                .sum_all()
                .unwrap();
            let g = loss.backward().unwrap();
            let grads: Vec<Tensor> = vars
                .iter()
                .map(|v| g.get(v.as_tensor()).unwrap().clone())
                .collect();
            (y, grads)
        };
        let (want, want_g) = run(DType::F64, false);
        let (got, got_g) = run(DType::F32, true);
        let what = format!("rank {r}");
        assert_close(&what, &got, &want, 1e-4, 1e-4);
        for (i, (a, e)) in got_g.iter().zip(&want_g).enumerate() {
            assert_close(&format!("{what}: gradient {i}"), a, e, 1e-4, 1e-4);
        }
        // The final state: the last y of rank 0 is h_l q; compare h through q = unit vectors.
        let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let state = final_state(&f32s(&qk), &f32s(&v), &f32s(&coef)).unwrap(); // (b, h, p, n)
        let last = want.narrow(1, l - 1, 1).unwrap().squeeze(1).unwrap(); // (b, h, r, p)
        let q_last = qk
            .narrow(1, l - 1, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .get_on_dim(2, 0)
            .unwrap();
        let from_state = state
            .to_dtype(DType::F64)
            .unwrap()
            .unsqueeze(2)
            .unwrap()
            .broadcast_mul(&q_last.unsqueeze(3).unwrap())
            .unwrap()
            .sum(4)
            .unwrap();
        assert_close(
            &format!("{what}: final state"),
            &from_state,
            &last,
            1e-4,
            1e-4,
        );
    }
}

/// A config of one Mamba-3 layer of the fixtures' sizes (`d`'s options).
fn config(d: &Dims) -> mamba_model::Config {
    mamba_model::Config {
        d_state: d.d_state,
        head_dim: d.head_dim,
        n_groups: d.groups,
        mimo_rank: d.mimo_rank,
        rope_fraction: d.rope_fraction,
        outproj_norm: d.outproj_norm,
        heavy_tail: d.heavy_tail,
        ..mamba_model::Config::of(mamba_model::LayerKind::Mamba3, 32, 1, 64)
    }
}

/// The layer of a fixture as our mixer, its parameters variables.
fn mixer(
    t: &HashMap<String, Tensor>,
    d: &Dims,
) -> (mamba_model::mixers::Mixer, Vec<(String, Var)>) {
    let cfg = config(d);
    let vars: Vec<(String, Var)> = mamba_model::mixers::mamba3::table(&cfg)
        .iter()
        .map(|p| (p.name.to_string(), Var::from_tensor(&t[p.name]).unwrap()))
        .collect();
    let map: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    let m = mamba_model::mixers::Mixer::new(mamba_model::LayerKind::Mamba3, &cfg, &vb).unwrap();
    (m, vars)
}

/// The mixer (on the CPU: the fused op between candle ops) gives mamba_ssm's output and every
/// gradient, in each case.
#[test]
fn the_mixer_is_mamba_ssm_in_value_and_every_gradient() {
    for (case, d) in cases() {
        let t = fixture(case);
        let (m, vars) = mixer(&t, &d);
        let u = Var::from_tensor(&t["u"]).unwrap();
        let out = m.forward(u.as_tensor(), None, DType::F32).unwrap();
        assert_close(case, &out, &t["out"], 1e-4 * scale(&t["out"]), 1e-4);
        let grads = (out * &t["dout"])
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut checked = vec![("u".to_string(), u)];
        checked.extend(vars);
        for (name, x) in checked {
            let want = &t[&format!("grad.{name}")];
            let got = grads
                .get(x.as_tensor())
                .unwrap_or_else(|| panic!("{case}: no gradient for {name}"));
            assert_close(
                &format!("{case}: gradient of {name}"),
                got,
                want,
                1e-4 * scale(want),
                1e-4,
            );
        }
    }
}

/// Documents packed in one row are computed as if each ran alone (state, phases and the last
/// k and v reset), by the fused op and by the step-by-step form.
#[test]
fn packed_documents_equal_separate_ones() {
    for (case, d) in [cases()[0], cases()[4]] {
        let t = fixture(case);
        let (m, _) = mixer(&t, &d);
        let u = t["u"].narrow(0, 0, 1).unwrap(); // (1, 16, 32)
        let mut resets = vec![0u8; 16];
        (resets[0], resets[6], resets[7]) = (1, 1, 1);
        let r = Tensor::from_vec(resets, (1, 16), &Device::Cpu).unwrap();
        let packed = m.forward(&u, Some(&r), DType::F32).unwrap();
        let stepwise = match &m {
            mamba_model::mixers::Mixer::Mamba3(m3) => m3.forward_stepwise(&u, Some(&r)).unwrap(),
            _ => unreachable!("a Mamba-3 layer"),
        };
        for (start, len) in [(0, 6), (6, 1), (7, 9)] {
            let alone = m
                .forward(&u.narrow(1, start, len).unwrap(), None, DType::F32)
                .unwrap();
            let part = packed.narrow(1, start, len).unwrap();
            assert_close(&format!("{case} at {start}"), &part, &alone, 1e-4, 1e-4);
        }
        // The other form (other devices'), on the same documents.
        assert_close(
            &format!("{case}, step by step"),
            &stepwise,
            &packed,
            1e-4,
            1e-4,
        );
    }
}

/// Generation: the prefill's state and then one step at a time give the forward's outputs.
#[test]
fn prefill_and_steps_equal_the_forward() {
    for (case, d) in cases() {
        let t = fixture(case);
        let (m, _) = mixer(&t, &d);
        let u = &t["u"];
        let full = m.forward(u, None, DType::F32).unwrap();
        let (out, mut st) = m.prefill(&u.narrow(1, 0, 10).unwrap()).unwrap();
        assert_close(
            &format!("{case} prefill"),
            &out,
            &full.narrow(1, 0, 10).unwrap(),
            1e-4,
            1e-4,
        );
        for pos in 10..16 {
            let x = u.narrow(1, pos, 1).unwrap().squeeze(1).unwrap();
            let y = m.step(&x, &mut st).unwrap();
            let want = full.narrow(1, pos, 1).unwrap().squeeze(1).unwrap();
            assert_close(&format!("{case} step {pos}"), &y, &want, 1e-4, 1e-4);
        }
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Whole Mamba-3 models in mamba_ssm's layout (config.json with ssm_cfg.layer Mamba3,
/// pytorch_model.bin), SISO and MIMO with the output norm, give mamba_ssm's logits; saved here
/// (flash-linear-attention's Mamba3ForCausalLM layout) and read back, the same logits.
#[test]
fn mamba_ssm_models_give_its_logits_and_round_trip() {
    for name in ["mamba_ssm_mamba3", "mamba_ssm_mamba3_mimo"] {
        let (model, _) = mamba_model::MambaLM::load(fixtures().join(name), &Device::Cpu).unwrap();
        let c = model.config();
        assert_eq!(c.kind(), Some(mamba_model::LayerKind::Mamba3), "{name}");
        assert_eq!(c.mimo_rank, if name.ends_with("mimo") { 2 } else { 0 });
        let t = candle_core::safetensors::load(
            fixtures().join(format!("{name}_logits.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
        let want = &t["logits"];
        let ours = model.forward(&ids, None).unwrap();
        assert_close(name, &ours, want, 1e-4 * scale(want), 1e-4);
        let dir = tempfile::tempdir().unwrap();
        model.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
        assert!(
            text.contains("\"model_type\": \"mamba3\"") && text.contains("Mamba3ForCausalLM"),
            "{text}"
        );
        let (again, _) = mamba_model::MambaLM::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(again.config().mimo_rank, c.mimo_rank);
        assert_eq!(again.config().outproj_norm, c.outproj_norm);
        let logits = again.forward(&ids, None).unwrap();
        assert_close(
            &format!("{name} saved and read"),
            &logits,
            want,
            1e-4 * scale(want),
            1e-4,
        );
    }
}

/// 50 AdamW steps of the SISO model give the losses of a PyTorch loop of mamba_ssm's model on
/// the same batches (make_mamba3_fixtures.py), within 1e-3.
#[test]
fn the_loss_curve_is_mamba_ssm() {
    let curve = load_curve(&fixtures().join("mamba3_losses.safetensors"));
    let (model, varmap) =
        mamba_model::MambaLM::load(fixtures().join("mamba_ssm_mamba3"), &Device::Cpu).unwrap();
    let cfg = mamba_model::AdamWConfig {
        lr: 1e-3,
        ..Default::default()
    };
    let mut opt = mamba_model::AdamW::from_varmap(&varmap, cfg).unwrap();
    follow_curve(&model, &mut opt, &curve, 1e-3, "mamba_ssm's");
    assert!(curve.1[49] < curve.1[0] - 0.3, "{:?}", curve.1);
}

/// The phases from candle ops (devices without the CPU's op) equal the op's, in value and
/// gradient, with documents starting inside.
#[test]
fn phases_from_candle_ops_equal_the_cpu_op() {
    use mamba_model::mixers::mamba3::{phases_by_cumsum, trap_cpu::phases};
    let mut rng = mamba_model::rng::SplitMix64::new(17);
    let (b, l, c) = (2, 23, 5);
    let turn = Var::from_tensor(
        &randn(&mut rng, &[b, l, c], 1.0)
            .to_dtype(DType::F32)
            .unwrap(),
    )
    .unwrap();
    let mut r = vec![0u8; b * l];
    (r[4], r[5], r[l + 11]) = (1, 1, 1);
    let dy = randn(&mut rng, &[b, l, c], 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    let run = |ops: bool| {
        let y = match ops {
            true => phases_by_cumsum(turn.as_tensor(), Some(&r)).unwrap(),
            false => phases(turn.as_tensor(), Some(std::sync::Arc::new(r.clone()))).unwrap(),
        };
        let g = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(turn.as_tensor()).unwrap().clone())
    };
    let ((a, ga), (e, ge)) = (run(true), run(false));
    assert_close("phases", &a, &e, 1e-5, 1e-5);
    assert_close("their gradient", &ga, &ge, 1e-5, 1e-5);
}

/// Written in mamba_ssm's own layout (config.json + pytorch_model.bin), a Mamba-3 model is the
/// committed ours_mamba_ssm_mamba3_mimo/, which mamba_ssm loads (torch.load, strict) with the
/// logits it gave before; read back here, the same logits.
#[test]
fn mamba_ssm_layout_is_written_as_mamba_ssm_reads_it() {
    let (model, _) =
        mamba_model::MambaLM::load(fixtures().join("mamba_ssm_mamba3_mimo"), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save_mamba_ssm(dir.path()).unwrap();
    same_files(
        dir.path(),
        &fixtures().join("ours_mamba_ssm_mamba3_mimo"),
        &[],
    );
    let t = candle_core::safetensors::load(
        fixtures().join("ours_mamba_ssm_mamba3_mimo_logits.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    let (again, _) = mamba_model::MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    let logits = again.forward(&ids, None).unwrap();
    assert_close(
        "read back",
        &logits,
        &t["logits"],
        1e-4 * scale(&t["logits"]),
        1e-4,
    );
    // A hybrid has no place in mamba_ssm's layout: refused by name.
    let (bamba, _) = mamba_model::MambaLM::load(fixtures().join("hf_bamba"), &Device::Cpu).unwrap();
    let e = bamba
        .save_mamba_ssm(dir.path().join("x"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("Bamba"), "{e}");
}
