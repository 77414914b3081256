use candle_core::{Device, Tensor};

use crate::config::{Config, LayerKind};
use crate::model::MambaLM;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Full-forward logits of one sequence, one row per position.
fn forward_rows(model: &MambaLM, ids: &[u32]) -> Vec<Vec<f32>> {
    let t = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
    model
        .forward(&t, None)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// Each kind's tiny preset (Mamba-2's and Mamba-3's: two heads of 64, state 128; Mamba-3 SISO
/// and MIMO rank 2 with the output norm), and a model of Mamba-1 and Mamba-2 at the same depth
/// (both at state 128), vocabulary `vocab`.
fn tiny(vocab: usize) -> [Config; 5] {
    let [m1, m2] = [LayerKind::Mamba1, LayerKind::Mamba2]
        .map(|a| Config::arch_preset(a, "tiny", vocab).unwrap());
    let mixed = Config {
        layers: vec![LayerKind::Mamba1, LayerKind::Mamba2],
        ..m2.clone()
    };
    let m3 = Config::arch_preset(LayerKind::Mamba3, "tiny", vocab).unwrap();
    let mimo = Config {
        mimo_rank: 2,
        outproj_norm: true,
        ..m3.clone()
    };
    [m1, m2, mixed, m3, mimo]
}

#[test]
fn prefill_then_step_matches_the_full_forward_on_both_paths() {
    for cfg in tiny(50) {
        prefill_then_step_matches_the_full_forward(&cfg);
    }
}

fn prefill_then_step_matches_the_full_forward(cfg: &Config) {
    let (model, _) = MambaLM::init(cfg, 7, &Device::Cpu).unwrap();
    // Three sequences; their prompts shorter than, equal to and longer than the conv window.
    let seqs: Vec<Vec<u32>> = (0..3u32)
        .map(|s| (0..12).map(|i| (i * 13 + 5 + s * 7) % 50).collect())
        .collect();
    let full: Vec<_> = seqs.iter().map(|s| forward_rows(&model, s)).collect();
    let splits = [1, 3, 9];
    for decoder in [model.decoder().unwrap(), model.candle_decoder()] {
        let prompts: Vec<&[u32]> = seqs.iter().zip(splits).map(|(s, k)| &s[..k]).collect();
        let (mut st, first) = decoder.prefill(&prompts).unwrap();
        assert_eq!(st.batch(), 3);
        for (i, k) in splits.iter().enumerate() {
            assert!(max_diff(&first[i], &full[i][k - 1]) < 1e-4, "prefill {i}");
        }
        for t in 0..3 {
            let ids: Vec<u32> = (0..3).map(|i| seqs[i][splits[i] + t]).collect();
            let got = decoder.step(&ids, &mut st).unwrap();
            for i in 0..3 {
                let d = max_diff(&got[i], &full[i][splits[i] + t]);
                assert!(d < 1e-4, "{:?} sequence {i}, step {t}: {d}", cfg.layers);
            }
        }
    }
    assert!(model.decoder().unwrap().prefill(&[&[]]).is_err());
}

#[test]
fn the_fast_step_is_the_candle_step_and_states_move_between_them() {
    for cfg in tiny(70) {
        the_fast_step_is_the_candle_step(&cfg);
    }
}

fn the_fast_step_is_the_candle_step(cfg: &Config) {
    let (model, _) = MambaLM::init(cfg, 11, &Device::Cpu).unwrap();
    let (fast, slow) = (model.decoder().unwrap(), model.candle_decoder());
    let (st, _) = slow.prefill(&[&[3, 9, 27], &[5]]).unwrap();
    // Beam search's reorder, with a repeat.
    let (mut a, mut b) = (
        st.select(&[1, 0, 1]).unwrap(),
        st.select(&[1, 0, 1]).unwrap(),
    );
    for t in 0..6u32 {
        let ids = [t * 5 % 70, t * 11 % 70, t * 3 % 70];
        let want = slow.step(&ids, &mut a).unwrap();
        let got = fast.step(&ids, &mut b).unwrap();
        for (g, w) in got.iter().zip(&want) {
            let d = max_diff(g, w);
            assert!(d < 1e-4, "{:?} step {t}: {d}", cfg.layers);
        }
    }
    assert!(
        fast.step(&[72, 0, 0], &mut b).is_err(),
        "id past the padded vocabulary"
    );
    assert!(fast.step(&[1], &mut b).is_err(), "wrong batch");
}

/// The transformers-made fixtures of this crate: their logits for rows of ids, computed by
/// `MambaForCausalLM` and `Mamba2ForCausalLM`, reproduced by prefill + the fast step.
#[test]
fn prefill_and_step_reproduce_transformers_logits() {
    for name in ["hf_tiny", "hf_mamba2"] {
        prefill_and_step_reproduce(name);
    }
}

fn prefill_and_step_reproduce(name: &str) {
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (model, _) = MambaLM::load(fx.join(name), &Device::Cpu).unwrap();
    let logits = fx.join(format!("{name}_logits.safetensors"));
    let t = candle_core::safetensors::load(logits, &Device::Cpu).unwrap();
    let ids = t["input_ids"].to_dtype(candle_core::DType::U32).unwrap();
    let ids = ids.to_vec2::<u32>().unwrap();
    let want = t["logits"].to_vec3::<f32>().unwrap();
    let vocab = model.config().vocab_size;
    let dec = model.decoder().unwrap();
    let split = 5;
    let prompts: Vec<&[u32]> = ids.iter().map(|r| &r[..split]).collect();
    let (mut st, first) = dec.prefill(&prompts).unwrap();
    let mut got = vec![first];
    for t in split..ids[0].len() {
        let feed: Vec<u32> = ids.iter().map(|r| r[t]).collect();
        got.push(dec.step(&feed, &mut st).unwrap());
    }
    for (i, rows) in got.iter().enumerate() {
        for (row, g) in rows.iter().enumerate() {
            let d = max_diff(&g[..vocab], &want[row][split - 1 + i][..vocab]);
            assert!(
                d < 1e-4,
                "{name} row {row}, position {}: {d}",
                split - 1 + i
            );
        }
    }
}

/// bf16 matrices: the fast step and the candle step agree, and both stay close to f32.
#[test]
fn bf16_weights_decode_on_both_paths_close_to_f32() {
    for cfg in tiny(70) {
        bf16_weights_decode_close_to_f32(&cfg);
    }
}

fn bf16_weights_decode_close_to_f32(cfg: &Config) {
    let (model, _) = MambaLM::init(cfg, 5, &Device::Cpu).unwrap();
    let full = model.detach();
    let half = model.into_weight_dtype(candle_core::DType::BF16).unwrap();
    let emb = half.tensor("backbone.embeddings.weight").unwrap();
    assert_eq!(emb.dtype(), candle_core::DType::BF16);
    let prompt: &[u32] = &[3, 9, 27, 4];
    let (fast, slow, f32d) = (
        half.decoder().unwrap(),
        half.candle_decoder(),
        full.decoder().unwrap(),
    );
    let (mut a, la) = fast.prefill(&[prompt]).unwrap();
    let (mut b, lb) = slow.prefill(&[prompt]).unwrap();
    let (mut c, lc) = f32d.prefill(&[prompt]).unwrap();
    let (mut worst, mut scale) = (max_diff(&la[0], &lc[0]), 0f32);
    assert!(max_diff(&la[0], &lb[0]) < 1e-5);
    for t in 0..5u32 {
        let id = [t * 7 % 70];
        let (x, y, z) = (
            fast.step(&id, &mut a).unwrap(),
            slow.step(&id, &mut b).unwrap(),
            f32d.step(&id, &mut c).unwrap(),
        );
        let d = max_diff(&x[0], &y[0]);
        assert!(d < 1e-4, "{:?} step {t}: fast vs candle {d}", cfg.layers);
        worst = worst.max(max_diff(&x[0], &z[0]));
        scale = z[0].iter().fold(scale, |m, v| m.max(v.abs()));
    }
    // bf16 keeps 8 bits of mantissa: logits move by a fraction of a percent of their range.
    assert!(
        worst > 0.0 && worst < 0.02 * scale,
        "{:?} bf16 vs f32: {worst} of {scale}",
        cfg.layers
    );
}

/// 8-bit copies of the matrices (from f32 and from bf16 weights, tied and untied heads):
/// the step's logits stay within 2% of their range of the f32 step's for a model of one kind,
/// 4% for the model of both (its random logits span less, 0.50 against 0.61-0.64, for an
/// error 1.5x larger: measured 3.3%).
#[test]
fn int8_weights_decode_close_to_f32() {
    for (base, tie_embeddings) in tiny(70)
        .into_iter()
        .flat_map(|c| [(c.clone(), true), (c, false)])
    {
        let cfg = Config {
            tie_embeddings,
            ..base
        };
        let (model, _) = MambaLM::init(&cfg, 5, &Device::Cpu).unwrap();
        let full = model.detach();
        let half = model.into_weight_dtype(candle_core::DType::BF16).unwrap();
        let prompt: &[u32] = &[3, 9, 27, 4, 61];
        let f32d = full.decoder().unwrap();
        for q in [full.decoder_int8().unwrap(), half.decoder_int8().unwrap()] {
            let (mut a, la) = q.prefill(&[prompt]).unwrap();
            let (mut c, lc) = f32d.prefill(&[prompt]).unwrap();
            let (mut worst, mut scale) = (0f32, lc[0].iter().fold(0f32, |m, v| m.max(v.abs())));
            for t in 0..8u32 {
                let id = [t * 11 % 70];
                let (x, z) = (
                    q.step(&id, &mut a).unwrap(),
                    f32d.step(&id, &mut c).unwrap(),
                );
                worst = worst.max(max_diff(&x[0], &z[0]));
                scale = z[0].iter().fold(scale, |m, v| m.max(v.abs()));
            }
            let bound = int8_tolerance(&cfg) * scale;
            assert!(max_diff(&la[0], &lc[0]) < bound);
            assert!(
                worst > 0.0 && worst < bound,
                "{:?} int8 vs f32 (tied {tie_embeddings}): {worst} of {scale}",
                cfg.layers
            );
        }
    }
}

/// How far 8-bit matrices may move the logits, relative to their scale: Mamba-3's in_proj
/// also gives the rotation angles, whose error the phases sum over positions.
fn int8_tolerance(cfg: &Config) -> f32 {
    match (cfg.kind(), cfg.layers.contains(&LayerKind::Mamba3)) {
        (_, true) => 0.05,
        (Some(_), false) => 0.02,
        (None, false) => 0.04,
    }
}

/// A short prompt runs through the fast path's own arithmetic: the same logits and state as
/// feeding it one token at a time, bit for bit, with f32, bf16 and 8-bit matrices (several
/// prompts at once, lengths around the groups of four the products take). A prompt past the
/// limit goes through the full forward and agrees within float error (bf16's, as in the tests
/// above, where candle's bf16 forward rounds every product to bf16).
#[test]
fn short_prompts_equal_stepping_bit_for_bit() {
    for cfg in tiny(70) {
        short_prompts_equal_stepping(&cfg);
    }
}

fn short_prompts_equal_stepping(cfg: &Config) {
    let (model, _) = MambaLM::init(cfg, 3, &Device::Cpu).unwrap();
    let full = model.detach();
    let half = model.into_weight_dtype(candle_core::DType::BF16).unwrap();
    let long: Vec<u32> = (0..200).map(|i| (i * 17 + 2) % 70).collect();
    for (dec, tol) in [
        (full.decoder().unwrap(), 1e-4),
        (half.decoder().unwrap(), 2e-2),
        (half.decoder_int8().unwrap(), int8_tolerance(cfg)),
    ] {
        let limit = dec.fast.as_ref().unwrap().short_prompt;
        for len in [1, 4, 7, limit, limit + 1] {
            let prompt = &long[..len];
            let (mut st, first) = dec.prefill(&[prompt, &prompt[..1]]).unwrap();
            let (mut one, mut want) = dec.prefill(&[&prompt[..1]]).unwrap();
            for &t in &prompt[1..] {
                want = dec.step(&[t], &mut one).unwrap();
            }
            let next = dec.step(&[5, 5], &mut st).unwrap();
            let want_next = dec.step(&[5], &mut one).unwrap();
            let scale = want[0].iter().fold(0f32, |m, v| m.max(v.abs()));
            if len <= limit {
                assert_eq!((&first[0], &next[0]), (&want[0], &want_next[0]), "{len}");
            } else {
                let d = max_diff(&first[0], &want[0]);
                assert!(d < tol * scale, "{len}: {d} of {scale}");
            }
        }
    }
}
