//! `mamba demo`: the whole product in one command, offline: write a corpus (see [`corpus`];
//! or take `--data DIR`), ingest it, train the tiny preset (Mamba-1, or Mamba-2 with `--arch
//! mamba2`) on the CPU for about `--seconds`,
//! evaluate on the val split (the tokens the trainer's periodic evals scored, so the two numbers
//! agree), write the training report, and print a generated sample and how far the val
//! perplexity fell. Each step is the real subcommand, run with the flags printed
//! above it, so the user can rerun any of them.

mod corpus;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use candle_core::{Device, Var};
use clap::Parser;
use mamba_model::{Config, LayerKind, MambaLM};
use mamba_pipeline::shard::manifest::Manifest;

use super::usage;
use crate::cli::{Cli, Command, DemoArgs};
use mamba::train::pack::Batch;
use mamba::train::step::{accumulate, StepOptions};

/// Marks a directory as the demo's own, so a rerun may replace what it holds.
const MARKER: &str = ".mamba-demo";
/// Training shape of the demo: short sequences, so the sample corpus gives many batches.
const SEQ_LEN: usize = 128;
const BATCH: usize = 4;
/// Timed training steps used to size the run to the time budget.
const CALIBRATION_STEPS: usize = 2;
/// Passes over the train split at most: past a few, a small corpus is memorised and the val
/// loss climbs (measured on the bundled sample: lowest after ~4).
const MAX_EPOCHS: u64 = 4;
/// Vocabulary of the tokenizer trained on the demo's corpus: small, so the tiny model is
/// mostly its layers, not its embedding.
const VOCAB: &str = "2048";
/// Evaluations over the run: enough to draw the val curve from near its start.
const EVALS: u64 = 40;
/// Log lines over the run.
const LOG_LINES: u64 = 10;
/// How much longer a step of the real run takes than a calibration step (evaluations, the
/// loader, the first steps' warm-up), so the run fits its time budget.
const RUN_OVERHEAD: f64 = 1.3;

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
    }
    // A step's error is the demo's failure (status 1), even where the step calls it bad usage.
    .map_err(|e| anyhow!("`mamba {}` failed: {}", args[0], super::one_line(&e)))?;
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

/// Seconds of one training step of the tiny preset of `arch` at the demo's shape.
fn step_seconds(arch: LayerKind, mimo_rank: usize, vocab: usize) -> anyhow::Result<f64> {
    let cfg = Config {
        mimo_rank,
        ..Config::arch_preset(arch, "tiny", vocab)?
    };
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

/// Whether `path` is `dir` or below it (compared as absolute paths where they exist).
fn inside(path: &Path, dir: &Path) -> bool {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    abs(path).starts_with(abs(dir))
}

/// A non-empty directory that a previous demo did not write: not ours to replace.
fn foreign(out: &Path) -> bool {
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    non_empty && !out.join(MARKER).exists()
}

/// Empties `out` of a previous demo's corpus, shards and checkpoints.
fn prepare(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        for sub in ["corpus", "shards", "checkpoints"] {
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
    if let Some(data) = a.data.as_ref().filter(|d| !d.is_dir()) {
        return Err(usage(anyhow!("--data {}: no such folder", data.display())));
    }
    let out = a.out.clone();
    // The demo empties its folder first: a corpus inside it would be deleted.
    if let Some(data) = a.data.as_ref().filter(|d| inside(d, &out)) {
        return Err(usage(anyhow!(
            "--data {} is inside the demo's folder {}, which a demo run empties; copy it elsewhere",
            data.display(),
            out.display()
        )));
    }
    if foreign(&out) {
        return Err(usage(anyhow!(
            "{} is not empty and not a demo folder; pass another --out",
            out.display()
        )));
    }
    prepare(&out)?;
    let (shards, ckpt): (PathBuf, PathBuf) = (out.join("shards"), out.join("checkpoints"));
    let q: Vec<String> = if a.quiet { vec!["-q".into()] } else { vec![] };
    let args = |xs: &[&str]| -> Vec<String> { xs.iter().map(|x| x.to_string()).collect() };

    let data = match &a.data {
        Some(dir) => dir.clone(),
        None => {
            let dir = out.join("corpus");
            corpus::write(&dir).with_context(|| s(&dir))?;
            println!(
                "wrote the demo corpus to {} (Python helpers and weather records)",
                dir.display()
            );
            dir
        }
    };
    println!("1/5 ingest the corpus");
    let val = if a.data.is_some() { "0.2" } else { "0.05" };
    let mut ingest = args(&["ingest", &s(&data), &s(&shards), "--val-fraction", val]);
    ingest.extend(args(&["--vocab-size", VOCAB]));
    ingest.extend(q.clone());
    mamba(&ingest)?;

    let manifest = Manifest::load(&shards)?;
    let steps = match a.max_steps {
        Some(n) => n,
        None => {
            let t = step_seconds(a.arch, a.mimo_rank, manifest.tokenizer.vocab_size)?;
            // At most MAX_EPOCHS passes: whole steps within them.
            let passes = MAX_EPOCHS * manifest.totals.train.tokens / (BATCH * SEQ_LEN) as u64;
            ((a.seconds as f64 / (t * RUN_OVERHEAD)) as u64).clamp(1, passes.max(1))
        }
    };
    println!(
        "\n2/5 train the tiny preset ({}) for {steps} steps (at most {MAX_EPOCHS} passes over the corpus, at most about {} s on this CPU)",
        a.arch.name(),
        a.seconds
    );
    let (steps_s, warmup) = (steps.to_string(), (steps / 10).max(1).to_string());
    let evals = (steps / EVALS).max(1).to_string();
    let logs = (steps / LOG_LINES).max(1).to_string();
    let (seq_len, batch) = (SEQ_LEN.to_string(), BATCH.to_string());
    let mut train = args(&[
        "train",
        "--shards",
        &s(&shards),
        "--checkpoint-dir",
        &s(&ckpt),
        "--arch",
        a.arch.key(),
        "--mimo-rank",
        &a.mimo_rank.to_string(),
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
        &logs,
    ]);
    train.extend(q.clone());
    let train_started = Instant::now();
    mamba(&train)?;

    let trained = train_started.elapsed().as_secs_f64();
    let fin = ckpt.join("final");
    let mut eval = args(&["eval", "--checkpoint", &s(&fin), "--shards", &s(&shards)]);
    match val_tokens(&ckpt) {
        // The tokens the trainer's evals scored, so that this number is the last eval's.
        Some(n) => {
            println!("\n3/5 evaluate on the first {n} tokens of the val split, as the trainer's evals did");
            eval.extend(args(&["--max-tokens", &n.to_string()]));
        }
        None => println!("\n3/5 evaluate on the val split"),
    }
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
    if let Some(line) = learned(&ckpt, trained) {
        println!("\n{line}");
    }
    println!(
        "\ndone: the model is in {}, the report in {}",
        fin.display(),
        report.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The val tokens the run's last eval scored, from its `metrics.jsonl`.
fn val_tokens(ckpt: &Path) -> Option<u64> {
    let run = mamba::report::run::load(ckpt).ok()?;
    run.evals.last()?.val_tokens
}

/// How far the val perplexity fell over the run, from its `metrics.jsonl`.
fn learned(ckpt: &Path, seconds: f64) -> Option<String> {
    let run = mamba::report::run::load(ckpt).ok()?;
    let ppl: Vec<(u64, f64)> = run
        .evals
        .iter()
        .filter_map(|e| Some((e.step, e.val_ppl?)))
        .collect();
    let (&(s0, first), &(s1, last)) = (ppl.first()?, ppl.last()?);
    Some(format!(
        "learned: val perplexity {first:.1} at step {s0} -> {last:.2} at step {s1} ({:.0}x lower) in {seconds:.0} s of training",
        first / last
    ))
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
