//! `mamba generate`: prompts from flags, files or stdin, a checkpoint, and the text streamed
//! to stdout. Bad input (a missing or mismatched checkpoint, an empty prompt, an out-of-range
//! value) is a usage error.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use candle_core::Device;

use super::usage;
use crate::cli::GenerateArgs;
use mamba::generate::sampling::SamplingConfig;
use mamba::generate::{generate, Checkpoint, GenerateError, GenerateOptions, Weights};

/// The prompts in order: `--prompt`s, then `--prompt-file`s, or stdin when neither is given.
fn prompts(a: &GenerateArgs) -> Result<Vec<String>, String> {
    let mut out = a.prompt.clone();
    for f in &a.prompt_file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        out.push(text.trim_end_matches('\n').to_string());
    }
    if out.is_empty() {
        if std::io::stdin().is_terminal() {
            return Err(
                "no prompt: give --prompt TEXT, --prompt-file FILE or text on stdin".into(),
            );
        }
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("stdin: {e}"))?;
        out.push(text.trim_end_matches('\n').to_string());
    }
    Ok(out)
}

pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    if a.device != "cpu" {
        let why = match cfg!(feature = "cuda") {
            true => "generation runs on the CPU only for now",
            false => "this build has no CUDA support",
        };
        return Err(usage(anyhow::anyhow!(
            "--device {}: {why}; use --device cpu",
            a.device
        )));
    }
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingConfig {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
        },
        seed: a.seed,
        stop: a.stop.clone(),
        num_beams: a.num_beams,
        stop_at_eos: !a.ignore_eos,
    };
    opts.sampling.validate().map_err(usage)?;
    let prompts = prompts(&a).map_err(|e| usage(anyhow::Error::msg(e)))?;
    let weights = match a.weights.as_str() {
        "f32" => Weights::F32,
        "bf16" => Weights::Bf16,
        _ => Weights::Int8,
    };
    let ck = Checkpoint::load(&a.checkpoint, a.adapter.as_deref(), &Device::Cpu, weights)
        .map_err(usage)?;
    // One prompt streams as it is made; several are printed whole, one after the other.
    let single = prompts.len() == 1;
    let mut out = std::io::stdout().lock();
    if single && !a.no_echo {
        let _ = write!(out, "{}", prompts[0]);
        let _ = out.flush();
    }
    let mut on_text = |_: usize, piece: &str| {
        if single && !piece.is_empty() {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        }
    };
    let result = generate(&ck, &prompts, &opts, &mut on_text);
    let gens = match result {
        Ok(g) => g,
        Err(
            e @ (GenerateError::EmptyPrompt(_)
            | GenerateError::Sampling(_)
            | GenerateError::Beams
            | GenerateError::Encode(..)),
        ) => return Err(usage(e)),
        Err(e) => return Err(e.into()),
    };
    if single {
        writeln!(out)?;
    } else {
        for (i, (p, g)) in prompts.iter().zip(&gens).enumerate() {
            if i > 0 {
                writeln!(out, "{}", a.separator)?;
            }
            let echo = if a.no_echo { "" } else { p.as_str() };
            writeln!(out, "{echo}{}", g.text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
