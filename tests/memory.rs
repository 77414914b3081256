//! The memory a training step takes on the path a GPU computes, run on the CPU
//! (`MAMBA_COMPUTE_AS_GPU=1`, bf16): `mem_peak_bytes` in metrics.jsonl (the counting
//! allocator's peak of tensor storage) against `--dry-run`'s model of it, at two shapes and
//! for both architectures, and its flatness over a run.

#[allow(dead_code)]
#[path = "train/common.rs"]
mod common;

use std::path::Path;

use common::*;
use mamba::train::config::resolve;
use mamba::train::memory::estimate;
use serde_json::{json, Map, Value};

/// `mem_peak_bytes` of every step of a run of `settings` (flags as configuration keys).
fn measured(shards: &Path, ckpt: &Path, settings: &Value, steps: u64) -> Vec<u64> {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--shards".into(),
        s(shards).into(),
        "--checkpoint-dir".into(),
        s(ckpt).into(),
        "--max-steps".into(),
        steps.to_string(),
        "--eval-every".into(),
        "100000".into(),
        "--save-every".into(),
        "100000".into(),
        "--warmup-steps".into(),
        "2".into(),
        "-q".into(),
    ];
    for (k, v) in settings.as_object().unwrap() {
        args.push(format!("--{}", k.replace('_', "-")));
        args.push(v.as_str().map_or(v.to_string(), String::from));
    }
    let o = bin()
        .env("MAMBA_COMPUTE_AS_GPU", "1")
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    metrics(ckpt)
        .iter()
        .filter_map(|l| l.get("mem_peak_bytes").and_then(Value::as_u64))
        .collect()
}

/// `--dry-run`'s total for `settings` over a vocabulary of `vocab`.
fn estimated(settings: &Value, vocab: usize) -> u64 {
    let flags: Map<String, Value> = settings.as_object().unwrap().clone();
    let cfg = resolve(&Map::new(), &flags).unwrap();
    mamba_model::kernels::compute_as_gpu(true);
    estimate(&cfg, &cfg.new_model(vocab), None).total()
}

#[test]
fn the_dry_run_models_the_measured_peak_and_the_peak_stays_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 512);
    for arch in ["mamba1", "mamba2"] {
        // Two shapes: the tiny preset over many tokens (activations and the recomputed parts
        // dominate) and the small one over few (the weights and optimizer do).
        let shapes = [
            json!({"model_size": "tiny", "batch_size": 8, "seq_len": 512, "precision": "bf16", "arch": arch}),
            json!({"model_size": "small", "batch_size": 1, "seq_len": 256, "precision": "bf16", "arch": arch}),
        ];
        for (i, settings) in shapes.iter().enumerate() {
            let ckpt = tmp.path().join(format!("{arch}-{i}"));
            let steps = if i == 0 { 40 } else { 3 };
            let peaks = measured(&shards, &ckpt, settings, steps);
            assert_eq!(peaks.len(), steps as usize, "{settings}: one figure a step");
            let peak = *peaks.iter().max().unwrap();
            let est = estimated(settings, 512);
            let ratio = est as f64 / peak as f64;
            eprintln!("{settings}: measured {peak} bytes, estimated {est} ({ratio:.3})");
            assert!(
                (0.85..=1.15).contains(&ratio),
                "{settings}: --dry-run estimates {est} bytes, the steps peaked at {peak}"
            );
            if i == 0 {
                // Steps 10 to 40: no growth from step to step.
                let late = &peaks[9..];
                let (lo, hi) = (late.iter().min().unwrap(), late.iter().max().unwrap());
                assert!(
                    *hi as f64 <= *lo as f64 * 1.02,
                    "{arch}: mem_peak_bytes from step 10 to 40 ranges {lo}..{hi}: {peaks:?}"
                );
            }
        }
    }
}
