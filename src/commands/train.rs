//! `mamba train`: flags and `--config` resolved into a [`TrainConfig`], then a dry run (the
//! configuration and a memory estimate) or a training run. Bad settings are usage errors.

use std::io::IsTerminal;
use std::process::ExitCode;

use mamba_model::io::config::load_config;
use mamba_model::MambaLM;
use mamba_pipeline::shard::manifest::Manifest;
use serde_json::{Map, Value};

use super::usage;
use crate::cli::TrainArgs;
use mamba::train::checkpoint::latest;
use mamba::train::config::{self, DeviceSpec, TrainConfig};
use mamba::train::ranks::Ranks;
use mamba::train::{gpu, memory, RunOptions};

/// Vocabulary assumed by `--dry-run` when there is no shard store to read it from.
const DRY_RUN_VOCAB: usize = 32768;

/// The flags that were given, as a JSON object of configuration keys.
fn flags(a: &TrainArgs) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("arch", a.arch.map(|x| Value::from(x.key())));
    put("model_size", a.model_size.clone().map(Value::from));
    put("vram", a.vram.clone().map(Value::from));
    put("profile", a.profile.clone().map(Value::from));
    put("seq_len", a.seq_len.map(Value::from));
    put("batch_size", a.batch_size.map(Value::from));
    put("grad_accum", a.grad_accum.map(Value::from));
    put("precision", a.precision.clone().map(Value::from));
    put(
        "grad_checkpointing",
        a.grad_checkpointing.then_some(Value::Bool(true)),
    );
    put("lr", a.lr.map(Value::from));
    put("min_lr", a.min_lr.map(Value::from));
    put("warmup_steps", a.warmup_steps.map(Value::from));
    put("max_steps", a.max_steps.map(Value::from));
    put("weight_decay", a.weight_decay.map(Value::from));
    put("grad_clip", a.grad_clip.map(Value::from));
    put("eval_every", a.eval_every.map(Value::from));
    put("eval_batches", a.eval_batches.map(Value::from));
    put("save_every", a.save_every.map(Value::from));
    put("keep_last", a.keep_last.map(Value::from));
    put("log_every", a.log_every.map(Value::from));
    put("seed", a.seed.map(Value::from));
    put("shuffle_buffer", a.shuffle_buffer.map(Value::from));
    put("prefetch", a.prefetch.map(Value::from));
    put("reader_threads", a.reader_threads.map(Value::from));
    put("doc_reset", a.no_doc_reset.then_some(Value::Bool(false)));
    put("device", a.device.clone().map(Value::from));
    m
}

fn config_file(a: &TrainArgs) -> Result<Map<String, Value>, config::ConfigError> {
    let Some(path) = &a.config else {
        return Ok(Map::new());
    };
    let bad = |reason: String| config::ConfigError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    match serde_json::from_str(&text).map_err(|e| bad(e.to_string()))? {
        Value::Object(m) => Ok(m),
        _ => Err(bad("expected a JSON object of settings".into())),
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let file = config_file(&args).map_err(usage)?;
    let mut flags = flags(&args);
    let notes = gpu::apply_defaults(&file, &mut flags, gpu::query).map_err(anyhow::Error::msg);
    notes
        .map_err(usage)?
        .iter()
        .for_each(|n| eprintln!("note: {n}"));
    let mut cfg = config::resolve(&file, &flags).map_err(usage)?;
    if args.dry_run {
        dry_run(&cfg, &args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let ranks = Ranks::join().map_err(|e| usage(anyhow::anyhow!(e)))?;
    cfg.ranks = ranks.size();
    if let (DeviceSpec::Cuda(None), Some(gpu)) = (cfg.device, ranks.local_gpu()) {
        // One GPU per rank on each machine.
        cfg.device = DeviceSpec::Cuda(Some(gpu));
    }
    let opts = RunOptions {
        shards: args.shards.clone().unwrap_or_default(),
        checkpoint_dir: args.checkpoint_dir.clone(),
        resume: args.resume.clone(),
        init: args.init.clone(),
        progress: !args.quiet && std::io::stderr().is_terminal(),
        ranks: ranks.clone(),
    };
    let result = mamba::train::train(&cfg, &opts);
    if let (Err(e), true) = (&result, ranks.size() > 1) {
        // The other ranks wait in the next reduction: stop them all, naming this one.
        let code = if e.is_usage() { 2 } else { 1 };
        // One write, so that the ranks' lines do not interleave.
        let line = format!(
            "error: rank {} of {}: {e}; stopping every rank\n",
            ranks.rank(),
            ranks.size()
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        ranks.abort(code);
    }
    match result {
        Ok(_) if !ranks.is_root() => Ok(ExitCode::SUCCESS),
        Ok(s) => {
            let val = s
                .last_val_loss
                .map(|v| format!(", val loss {v:.4}"))
                .unwrap_or_default();
            eprintln!(
                "done: {} steps, {} tokens, loss {:.4}{val}; final checkpoint in {}",
                s.steps,
                s.tokens,
                s.last_loss,
                s.final_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_usage() => Err(usage(e)),
        Err(e) => Err(e.into()),
    }
}

fn dry_run(cfg: &TrainConfig, args: &TrainArgs) -> anyhow::Result<()> {
    let vocab = args
        .shards
        .as_deref()
        .and_then(|d| Manifest::load(d).ok())
        .map(|m| m.tokenizer.vocab_size);
    // A model given by --init or --resume is what the run trains: its own shape and
    // architecture, whatever --model-size and --arch say.
    let given = match (&args.init, &args.resume) {
        (Some(dir), _) | (None, Some(Some(dir))) => Some(dir.clone()),
        (None, Some(None)) => latest(&args.checkpoint_dir).ok(),
        (None, None) => None,
    };
    let model = match &given {
        Some(dir) => load_config(dir).map_err(usage)?,
        None => cfg
            .model_size
            .config(cfg.arch, vocab.unwrap_or(DRY_RUN_VOCAB)),
    };
    println!("{}", serde_json::to_string_pretty(cfg)?);
    match &given {
        Some(dir) => println!("(the model of {}: {})", dir.display(), model.arch_name()),
        None if vocab.is_none() => {
            println!("(vocabulary assumed {DRY_RUN_VOCAB}: no shard store given)")
        }
        None => {}
    }
    println!(
        "tokens per step: {} ({} x {} x {})",
        cfg.tokens_per_step(),
        cfg.batch_size,
        cfg.grad_accum,
        cfg.seq_len
    );
    let est = memory::estimate(cfg, &model);
    print!(
        "{}",
        memory::render(&est, MambaLM::num_params(&model), cfg.vram_gb)
    );
    Ok(())
}
