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
use mamba::train::checkpoint::{latest, load_state};
use mamba::train::config::{self, DeviceSpec, TrainConfig};
use mamba::train::ranks::Ranks;
use mamba::train::{adapters, gpu, memory, RunOptions};

/// Vocabulary assumed by `--dry-run` when there is no shard store to read it from.
const DRY_RUN_VOCAB: usize = 32768;

/// The flags that were given, as a JSON object of configuration keys.
fn flags(a: &TrainArgs) -> anyhow::Result<Map<String, Value>> {
    match serde_json::to_value(&a.settings)? {
        Value::Object(m) => Ok(m),
        // A struct of settings always serializes to an object.
        other => anyhow::bail!("the flags serialized to {other}, not an object"),
    }
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

/// Set to 1, the CPU computes as a GPU does (the path, and the memory, that `--dry-run`
/// models for a GPU), to measure that path where there is no GPU.
pub const AS_GPU_ENV: &str = "MAMBA_COMPUTE_AS_GPU";

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    if std::env::var(AS_GPU_ENV).is_ok_and(|v| v == "1") {
        mamba_model::kernels::compute_as_gpu(true);
    }
    let file = config_file(&args).map_err(usage)?;
    let mut flags = flags(&args)?;
    // The model and adapters do not depend on the VRAM profile: read them once, for the first
    // profile --vram auto weighs.
    let plan = std::cell::OnceCell::new();
    let need = |f: &Map<String, Value>| {
        let cfg = config::resolve(&file, f).ok()?;
        let plan = plan.get_or_init(|| Plan::of(&cfg, &args).ok()).as_ref()?;
        Some(plan.estimate(&cfg).total())
    };
    let notes =
        gpu::apply_defaults(&file, &mut flags, gpu::query, need).map_err(anyhow::Error::msg);
    notes
        .map_err(usage)?
        .iter()
        .for_each(|n| eprintln!("note: {n}"));
    let mut cfg = config::resolve(&file, &flags).map_err(usage)?;
    if args.dry_run {
        dry_run(&cfg, &args)?;
        return Ok(ExitCode::SUCCESS);
    }
    // A run sized by a VRAM profile that the model says cannot fit stops here, not out of
    // memory later.
    if cfg.vram_gb.is_some() {
        let plan = Plan::of(&cfg, &args)?;
        memory::check_fit(&cfg, |c| plan.estimate(c).total())
            .map_err(|e| usage(anyhow::anyhow!(e)))?;
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

/// The model a run will train and its adapters, as far as can be told before it starts.
struct Plan {
    model: mamba_model::Config,
    /// The checkpoint the model comes from (--init, --resume), if any.
    given: Option<std::path::PathBuf>,
    /// Whether the vocabulary came from the shard store (else [`DRY_RUN_VOCAB`]).
    vocab_known: bool,
    lora: Option<mamba_model::lora::LoraConfig>,
}

impl Plan {
    fn of(cfg: &TrainConfig, args: &TrainArgs) -> anyhow::Result<Plan> {
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
        // A LoRA checkpoint holds adapters: the model is its base's, the adapters its own.
        let lora_state = given
            .as_ref()
            .and_then(|d| load_state(d).ok())
            .filter(|s| s.lora_base.is_some());
        let base = lora_state.as_ref().and_then(|s| s.lora_base.clone());
        let model = match (&base, &given) {
            (Some(dir), _) | (None, Some(dir)) => load_config(dir).map_err(usage)?,
            (None, None) => cfg.new_model(vocab.unwrap_or(DRY_RUN_VOCAB)),
        };
        let lora_cfg = lora_state.as_ref().map_or(cfg, |s| &s.config);
        let lora = match lora_cfg.lora_rank {
            0 => None,
            _ => Some(adapters::config(lora_cfg, &model).map_err(usage)?),
        };
        Ok(Plan {
            model,
            given,
            vocab_known: vocab.is_some(),
            lora,
        })
    }

    /// The estimated peak of a step of `cfg` on this model.
    fn estimate(&self, cfg: &TrainConfig) -> memory::Estimate {
        memory::estimate(cfg, &self.model, self.lora.as_ref())
    }
}

fn dry_run(cfg: &TrainConfig, args: &TrainArgs) -> anyhow::Result<()> {
    let plan = Plan::of(cfg, args)?;
    let model = &plan.model;
    println!("{}", serde_json::to_string_pretty(cfg)?);
    match &plan.given {
        Some(dir) => println!("(the model of {}: {})", dir.display(), model.arch_name()),
        None if !plan.vocab_known => {
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
    if let Some(l) = &plan.lora {
        println!(
            "LoRA rank {} alpha {} on {}: {} trainable parameters, the base frozen in {}",
            l.rank,
            l.alpha,
            l.targets.join(","),
            memory::adapter_params(model, l),
            cfg.lora_base_dtype
        );
    }
    print!(
        "{}",
        memory::render(&plan.estimate(cfg), MambaLM::num_params(model), cfg.vram_gb)
    );
    if let Err(e) = memory::check_fit(cfg, |c| plan.estimate(c).total()) {
        println!("{e}");
    }
    Ok(())
}
