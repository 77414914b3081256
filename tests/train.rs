//! End-to-end tests of `mamba train` on a store ingested from the sample corpus with the tiny
//! preset: the loss falls and checkpoints appear, a killed run resumes with identical losses,
//! `--init` fine-tunes, `--dry-run` reports, and bad inputs are refused with a clear line.

#[path = "train/common.rs"]
mod common;
#[path = "train/refusals.rs"]
mod refusals;
#[path = "train/resume.rs"]
mod resume;

use common::*;

#[test]
fn val_loss_falls_and_checkpoints_appear() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 512);
    let ckpt = tmp.path().join("ckpt");
    let mut args = train_args(&shards, &ckpt, "20");
    args.extend(["--keep-last", "2"]);
    ok(&args);
    let lines = metrics(&ckpt);
    let steps = losses(&lines);
    assert_eq!(
        steps.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    let val = val_losses(&lines);
    assert_eq!(val.len(), 4, "evals at 5, 10, 15, 20");
    assert!(val[3] < val[0] - 0.3, "val loss did not fall: {val:?}");
    // Periodic checkpoints, pruned to the last two, and final/.
    assert!(!ckpt.join("step-000005").exists());
    for dir in ["step-000010", "step-000015", "final"] {
        for f in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "optimizer.safetensors",
            "trainer_state.json",
        ] {
            assert!(ckpt.join(dir).join(f).exists(), "{dir}/{f} missing");
        }
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ckpt.join("final/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 20);
    assert_eq!(state["tokens"], 20 * 2 * 4 * 64);
    assert_eq!(state["loader"]["batches"], 40);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("final/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["vocab_size"], 512);
    assert_eq!(config["hidden_size"], 64);
    // No temporary directories left behind.
    for e in std::fs::read_dir(&ckpt).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.starts_with('.'), "left behind: {name}");
    }

    // --init: fine-tuning from final/ starts where that run ended, far below a fresh start.
    let tuned = tmp.path().join("tuned");
    let mut args = train_args(&shards, &tuned, "2");
    let fin = ckpt.join("final");
    args.extend(["--init", s(&fin)]);
    ok(&args);
    let first = losses(&metrics(&tuned))[0].1;
    assert!(
        first < steps[0].1 - 0.3,
        "init loss {first} vs fresh {}",
        steps[0].1
    );
}

#[test]
fn precisions_and_checkpointing_train() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 512);
    let run_with = |name: &str, extra: &[&str]| {
        let dir = tmp.path().join(name);
        let mut args = train_args(&shards, &dir, "4");
        args.extend(extra);
        ok(&args);
        metrics(&dir)
    };
    let plain = losses(&run_with("plain", &[]));
    // Checkpointing recomputes the same blocks: the same losses, step after step.
    let ck = losses(&run_with("ck", &["--grad-checkpointing"]));
    for ((_, a), (_, b)) in plain.iter().zip(&ck) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    assert_eq!(plain[0], ck[0]);
    for p in ["bf16", "fp16"] {
        let lines = run_with(p, &["--precision", p]);
        let l = losses(&lines);
        assert_eq!(l.len(), 4);
        assert!(
            (l[0].1 - plain[0].1).abs() < 0.05,
            "{p}: {} vs {}",
            l[0].1,
            plain[0].1
        );
        assert_ne!(l[0].1, plain[0].1, "{p} computed in f32");
        let scale = lines[0]["loss_scale"].as_f64().unwrap();
        assert_eq!(scale, if p == "fp16" { 65536.0 } else { 1.0 });
    }
}

#[test]
fn dry_run_prints_the_resolved_config_and_memory() {
    let o = ok(&[
        "train",
        "--dry-run",
        "--vram",
        "8gb",
        "--model-size",
        "small",
        "--lr",
        "1e-4",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "\"batch_size\": 8",
        "\"grad_accum\": 2",
        "\"precision\": \"fp16\"",
        "\"grad_checkpointing\": false",
        "\"lr\": 0.0001",
        "params",
        "grads",
        "optimizer",
        "activations",
        "8 GB profile",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
}

/// With --init the dry run sizes the model it was given (a transformers Mamba-2 here), not the
/// preset: its parameters are the file's; a missing one is a usage error.
#[test]
fn dry_run_of_an_init_model_sizes_that_model() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/fixtures/hf_mamba2");
    let o = ok(&[
        "train",
        "--dry-run",
        "--init",
        s(&dir),
        "--model-size",
        "small",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let params: usize = tensors.values().map(|t| t.elem_count()).sum();
    assert!(out.contains("Mamba-2"), "{out}");
    assert!(
        out.contains(&format!("memory estimate ({params} parameters)")),
        "{params} parameters expected in:\n{out}"
    );
    let o = bin()
        .args(["train", "--dry-run", "--init", "/no/such/model"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_small_default_val_split_is_still_evaluated() {
    // `mamba ingest data/` at the default --val-fraction puts one short document in val,
    // less than one batch: it is evaluated as one shorter window rather than skipped.
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let o = bin()
        .args(["ingest", s(&data), s(&shards), "--vocab-size", "512", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = tmp.path().join("ckpt");
    ok(&train_args(&shards, &ckpt, "10"));
    let val = val_losses(&metrics(&ckpt));
    assert_eq!(val.len(), 2, "evals at 5 and 10: {val:?}");
    assert!(val.iter().all(|v| v.is_finite()));
}

#[test]
fn the_headline_command_on_a_cpu_says_the_plan_the_warnings_and_the_eta() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 512);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shards.join("manifest.json")).unwrap()).unwrap();
    let train = manifest["totals"]["train"]["tokens"].as_u64().unwrap();
    let ckpt = tmp.path().join("ckpt");
    // `--vram 12gb`: micro-batch 16, no accumulation; 50 steps of 16 x 64 tokens.
    let o = ok(&[
        "train",
        "--shards",
        s(&shards),
        "--checkpoint-dir",
        s(&ckpt),
        "--vram",
        "12gb",
        "--model-size",
        "tiny",
        "--seq-len",
        "64",
        "--max-steps",
        "50",
        "--eval-every",
        "50",
        "-q",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let passes = 51_200.0 / train as f64;
    let plan = format!(
        "plan: 50 steps x 1024 tokens (batch 16 x accumulation 1 x seq 64) = 51200 tokens, {passes:.1} passes over the train split ({train} tokens)\n"
    );
    assert!(out.starts_with(&plan), "{out}");
    assert!(
        passes > 4.0,
        "the sample should be passed over more than 4 times"
    );
    let steps4 = (4.0 * train as f64 / 1024.0).floor();
    assert!(out.contains(&format!("warning: that is {passes:.1} passes over the train split; past a few a model memorises its data and the val loss climbs: --max-steps {steps4} makes 4 passes")), "{out}");
    assert!(out.contains("warning: --vram 12gb sizes a run for a GPU's memory, but this run is on the CPU, where the tiny preset is slow"), "{out}");
    // After the first timed steps, the speed and the time left; then in every step line.
    let speed = out
        .lines()
        .position(|l| l.starts_with("speed: "))
        .expect("speed line");
    assert!(out
        .lines()
        .nth(speed)
        .unwrap()
        .contains("the remaining 39 steps take about "));
    assert!(
        out.lines()
            .any(|l| l.starts_with("step     50/50 |") && l.contains(" | eta 0s")),
        "{out}"
    );
}
