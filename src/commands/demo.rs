//! `mamba demo`: the whole product on the bundled sample corpus in one command, offline:
//! ingest `data/`, train the tiny preset on the CPU for about `--seconds`, evaluate on the val
//! split, write the training report, and print a generated sample. Each step is the real
//! subcommand, run with the flags printed above it, so the user can rerun any of them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Var};
use clap::Parser;
use mamba_model::{Config, MambaLM};
use mamba_pipeline::shard::manifest::Manifest;

use crate::cli::{Cli, Command, DemoArgs};
use crate::train::pack::Batch;
use crate::train::step::{accumulate, StepOptions};

/// Marks a directory as the demo's own, so a rerun may replace what it holds.
const MARKER: &str = ".mamba-demo";
/// Training shape of the demo: short sequences, so the sample corpus gives many batches.
const SEQ_LEN: usize = 128;
const BATCH: usize = 4;
/// Timed training steps used to size the run to the time budget.
const CALIBRATION_STEPS: usize = 2;
/// Passes over the sample's train split at most: it is a few thousand tokens, and past a few
/// passes the tiny model memorises it and the val loss climbs (measured: lowest after ~4).
const MAX_EPOCHS: u64 = 4;

/// Runs `mamba ARGS...` in this process, as the user would type it.
fn mamba(args: &[String]) -> anyhow::Result<()> {
    let shown: Vec<String> = args.iter().map(|a| quote(a)).collect();
    println!("\n$ mamba {}", shown.join(" "));
    let cli =
        Cli::try_parse_from(std::iter::once("mamba".to_string()).chain(args.iter().cloned()))?;
    let code = match cli.command {
        Command::Ingest(a) => super::ingest::run(a),
        Command::Train(a) => super::train::run(*a),
        Command::Eval(a) => super::eval::run(a),
        Command::Report(a) => super::report::run(a),
        Command::Generate(a) => super::generate::run(a),
        _ => bail!("the demo does not run `{}`", args[0]),
    }?;
    if code != ExitCode::SUCCESS {
        bail!("`mamba {}` failed (see above)", args[0]);
    }
    Ok(())
}

/// `a` as a shell word: quoted when it holds anything but plain characters.
fn quote(a: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=,".contains(c);
    if !a.is_empty() && a.chars().all(plain) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Seconds of one training step of the tiny preset at the demo's shape.
fn step_seconds(vocab: usize) -> anyhow::Result<f64> {
    let cfg = Config::preset("tiny", vocab)?;
    let (model, vm) = MambaLM::init(&cfg, 0, &Device::Cpu)?;
    let vars: Vec<Var> = vm
        .data()
        .lock()
        .map(|d| d.values().cloned().collect())
        .unwrap_or_default();
    let n = BATCH * SEQ_LEN;
    let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % vocab as u32).collect();
    let batch = Batch {
        batch_size: BATCH,
        seq_len: SEQ_LEN,
        inputs: ids.clone(),
        targets: ids,
        resets: vec![0; n],
    };
    let o = StepOptions::default();
    accumulate(&model, &vars, std::slice::from_ref(&batch), &o)?; // warm-up
    let t = Instant::now();
    for _ in 0..CALIBRATION_STEPS {
        accumulate(&model, &vars, std::slice::from_ref(&batch), &o)?;
    }
    Ok(t.elapsed().as_secs_f64() / CALIBRATION_STEPS as f64)
}

/// A non-empty directory that a previous demo did not write: not ours to replace.
fn foreign(out: &Path) -> bool {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    non_empty && !out.join(MARKER).exists()
}

/// Empties `out` of a previous demo's shards and checkpoints.
fn prepare(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        for sub in ["shards", "checkpoints"] {
            let p = out.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| s(&p))?;
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| s(out))?;
    std::fs::write(out.join(MARKER), "written by `mamba demo`\n").with_context(|| s(out))?;
    Ok(())
}

pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    if !a.data.is_dir() {
        eprintln!(
            "error: {}: no such folder (run the demo from the repository root, or pass --data)",
            a.data.display()
        );
        return Ok(ExitCode::from(2));
    }
    let out = a.out.clone();
    if foreign(&out) {
        eprintln!(
            "error: {} is not empty and not a demo folder; pass another --out",
            out.display()
        );
        return Ok(ExitCode::from(2));
    }
    prepare(&out)?;
    let (shards, ckpt): (PathBuf, PathBuf) = (out.join("shards"), out.join("checkpoints"));
    let q: Vec<String> = if a.quiet { vec!["-q".into()] } else { vec![] };
    let args = |xs: &[&str]| -> Vec<String> { xs.iter().map(|x| x.to_string()).collect() };

    println!("1/5 ingest the sample corpus");
    let mut ingest = args(&["ingest", &s(&a.data), &s(&shards), "--val-fraction", "0.2"]);
    ingest.extend(q.clone());
    mamba(&ingest)?;

    let manifest = Manifest::load(&shards)?;
    let steps = match a.max_steps {
        Some(n) => n,
        None => {
            let t = step_seconds(manifest.tokenizer.vocab_size)?;
            let epoch = manifest
                .totals
                .train
                .tokens
                .div_ceil((BATCH * SEQ_LEN) as u64);
            ((a.seconds as f64 / t) as u64).clamp(1, (MAX_EPOCHS * epoch).max(1))
        }
    };
    println!(
        "\n2/5 train the tiny preset for {steps} steps (at most {MAX_EPOCHS} passes over the sample, at most about {} s on this CPU)",
        a.seconds
    );
    let (steps_s, warmup) = (steps.to_string(), (steps / 10).max(1).to_string());
    let evals = (steps / 4).max(1).to_string();
    let (seq_len, batch) = (SEQ_LEN.to_string(), BATCH.to_string());
    let mut train = args(&[
        "train",
        "--shards",
        &s(&shards),
        "--checkpoint-dir",
        &s(&ckpt),
        "--model-size",
        "tiny",
        "--max-steps",
        &steps_s,
        "--seq-len",
        &seq_len,
        "--batch-size",
        &batch,
        "--lr",
        "3e-3",
        "--warmup-steps",
        &warmup,
        "--eval-every",
        &evals,
        "--eval-batches",
        "4",
        "--save-every",
        &steps_s,
        "--log-every",
        &evals,
    ]);
    train.extend(q.clone());
    mamba(&train)?;

    let fin = ckpt.join("final");
    println!("\n3/5 evaluate on the val split");
    let mut eval = args(&["eval", "--checkpoint", &s(&fin), "--shards", &s(&shards)]);
    eval.extend(q);
    mamba(&eval)?;

    println!("\n4/5 the training report");
    let report = out.join("report.html");
    mamba(&args(&["report", &s(&ckpt), "--out", &s(&report)]))?;

    println!("\n5/5 a generated sample");
    mamba(&args(&[
        "generate",
        "--checkpoint",
        &s(&fin),
        "--prompt",
        &a.prompt,
        "--max-new-tokens",
        &a.max_new_tokens.to_string(),
        "--temperature",
        "0.8",
        "--top-k",
        "40",
        "--seed",
        "0",
    ]))?;
    println!(
        "\ndone: the model is in {}, the report in {}",
        fin.display(),
        report.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(quote("--seq-len"), "--seq-len");
        assert_eq!(quote("/tmp/a_b.c"), "/tmp/a_b.c");
        assert_eq!(quote("def "), "'def '");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
