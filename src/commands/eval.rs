//! `mamba eval`: loss and perplexity of a checkpoint on a split of a shard store or on text,
//! as a line or as JSON. Bad input (a missing checkpoint, another tokenizer's store, nothing to
//! score) is a usage error.

use std::io::IsTerminal;
use std::process::ExitCode;

use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use mamba_pipeline::shard::Split;
use mamba_pipeline::tokenize::Vocab;

use super::usage;
use crate::cli::EvalArgs;
use mamba::evaluate::{self, source, EvalError, Evaluation};

fn bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(s) = ProgressStyle::with_template("eval {bar:30} {pos}/{len} tokens eta {eta}") {
        bar.set_style(s);
    }
    bar
}

fn evaluate(a: &EvalArgs) -> Result<Evaluation, EvalError> {
    let mut ck = evaluate::load(&a.checkpoint, a.adapter.as_deref(), &Device::Cpu)?;
    if let Some(n) = a.seq_len {
        ck.shape.seq_len = n;
    }
    if let Some(n) = a.batch_size {
        ck.shape.batch_size = n;
    }
    let show = !a.quiet && std::io::stderr().is_terminal();
    let tokenizer = ck.dir.join("tokenizer.json");
    let (mut seq, bs) = (ck.shape.seq_len, ck.shape.batch_size);
    let vocab_rows = ck.model.config().vocab_size;
    let (result, what) = if let Some(dir) = &a.shards {
        let split = if a.split == "train" {
            Split::Train
        } else {
            Split::Val
        };
        let mut src = source::shards(dir, split, Some(&tokenizer), vocab_rows, seq, bs)?;
        seq = src.seq_len;
        let total = a
            .max_tokens
            .unwrap_or(src.split_tokens)
            .min(src.split_tokens);
        let pb = bar(show, total);
        let what = format!("{} split of {}", a.split, dir.display());
        let r = evaluate::score(
            &ck.model,
            src.batches(),
            &ck.shape,
            a.max_tokens,
            &mut |t| pb.set_position(t),
        );
        pb.finish_and_clear();
        (r, what)
    } else {
        let path = a.text.clone().unwrap_or_default();
        if !tokenizer.is_file() {
            return Err(EvalError::Mismatch(format!(
                "checkpoint {}: no tokenizer.json to tokenize {} with",
                ck.dir.display(),
                path.display()
            )));
        }
        let vocab = Vocab::load(&tokenizer, None)?;
        let src = source::text(&path, &vocab, seq, bs)?;
        for f in &src.skipped {
            eprintln!("note: {}: not text, left out", f.display());
        }
        let what = format!("{} ({} files)", path.display(), src.files);
        let pb = bar(show, a.max_tokens.unwrap_or(src.tokens).min(src.tokens));
        let r = evaluate::score(
            &ck.model,
            src.batches.into_iter().map(Ok),
            &ck.shape,
            a.max_tokens,
            &mut |t| pb.set_position(t),
        );
        pb.finish_and_clear();
        (r, what)
    };
    let scored = result.map_err(|e| match e {
        EvalError::Empty { why, .. } => EvalError::Empty {
            what: what.clone(),
            why,
        },
        e => e,
    })?;
    Ok(Evaluation {
        source: what,
        loss: scored.loss,
        perplexity: scored.loss.exp(),
        tokens: scored.tokens,
        windows: scored.windows,
        seq_len: seq,
        checkpoint: ck.dir.display().to_string(),
        whole: scored.whole,
    })
}

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    match evaluate(&a) {
        Ok(e) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                println!("{}", e.line());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (EvalError::Model(_) | EvalError::Candle(_))) => Err(e.into()),
        Err(e) => Err(usage(e)),
    }
}
