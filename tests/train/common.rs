//! Helpers of the `mamba train` tests: a shard store ingested from the sample corpus, runs of
//! the binary with the tiny preset, and metrics.jsonl read back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mamba"));
    // One compute thread: the runs are tiny, and tests run side by side.
    c.env("CANDLE_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1");
    c
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `mamba ingest data/ <dir>/shards` with a small vocabulary and a large val share.
pub fn ingest(dir: &Path, vocab: u32) -> PathBuf {
    let out = dir.join(format!("shards-{vocab}"));
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let o = bin()
        .args([
            "ingest",
            s(&data),
            s(&out),
            "--vocab-size",
            &vocab.to_string(),
        ])
        .args(["--val-fraction", "0.3", "--row-group-tokens", "2000", "-q"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// The flags of every test run: tiny model, short sequences, frequent evals and saves.
pub fn train_args<'a>(shards: &'a Path, ckpt: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--shards",
        s(shards),
        "--checkpoint-dir",
        s(ckpt),
        "--model-size",
        "tiny",
        "--max-steps",
        steps,
        "--seq-len",
        "64",
        "--batch-size",
        "4",
        "--grad-accum",
        "2",
        "--warmup-steps",
        "3",
        "--lr",
        "3e-3",
        "--eval-every",
        "5",
        "--eval-batches",
        "3",
        "--save-every",
        "5",
        "--shuffle-buffer",
        "16",
        "-q",
    ]
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

pub fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(
        o.status.success(),
        "mamba {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn metrics(ckpt: &Path) -> Vec<Value> {
    std::fs::read_to_string(ckpt.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (step, loss) of the step lines, in file order.
pub fn losses(lines: &[Value]) -> Vec<(u64, f64)> {
    lines
        .iter()
        .filter(|l| l.get("loss").is_some())
        .map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap()))
        .collect()
}

pub fn val_losses(lines: &[Value]) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|l| l["val_loss"].as_f64())
        .collect()
}
