//! `mamba tokenizer train`: a byte-level BPE for `ingest --tokenizer`, trained on the files
//! (or a sample of them) exactly as `ingest` trains its own.

use std::process::ExitCode;

use anyhow::Context;
use mamba_pipeline::discover::Select;
use mamba_pipeline::ingest;
use mamba_pipeline::shard::write_atomic;

use super::ingest::stage_options;
use crate::cli::{TokenizerCommand, TokenizerTrainArgs};

pub fn run(command: TokenizerCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenizerCommand::Train(args) => train(args),
    }
}

fn train(args: TokenizerTrainArgs) -> anyhow::Result<ExitCode> {
    for input in &args.inputs {
        if !input.exists() {
            return Err(super::usage(anyhow::anyhow!(
                "input {} does not exist",
                input.display()
            )));
        }
    }
    let started = std::time::Instant::now();
    let mut stages = stage_options(args.read, args.inputs, args.out.clone(), Select::All)?;
    if let Some(mb) = args.sample_mb {
        stages.select = ingest::sample(&stages, mb << 20);
    }
    let vocab = ingest::train_tokenizer(&stages, args.vocab_size as usize)?;
    let json = vocab.to_json()?;
    write_atomic(&args.out, json.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let sampled = match stages.select {
        Select::Sample { fraction } => format!(" (a {:.1}% sample of the files)", fraction * 100.0),
        _ => String::new(),
    };
    println!(
        "tokenizer: {} tokens, eos id {}, trained in {:.1} s{sampled} -> {}",
        vocab.vocab_size(),
        vocab.eos_id,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
