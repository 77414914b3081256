//! `mamba export CHECKPOINT OUT.gguf [--type]`: the checkpoint and its tokenizer as one GGUF
//! file for llama.cpp ([`mamba::export`]). What llama.cpp cannot compute as `mamba` does (a
//! tokenizer it splits differently, a model of several layer kinds) is a usage error naming
//! the reason.

use std::process::ExitCode;

use super::usage;
use crate::cli::ExportArgs;
use mamba::export::{export, ExportError};

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let done = export(&a.checkpoint, &a.out, a.ty).map_err(|e| match e {
        ExportError::Model(mamba_model::Error::Config(_))
        | ExportError::Tokenizer { .. }
        | ExportError::NoTokenizer(_)
        | ExportError::Checkpoint(_) => usage(e),
        e => e.into(),
    })?;
    for note in &done.notes {
        eprintln!("note: {note}");
    }
    eprintln!(
        "wrote {} ({}, {:?}, {:.1} MB)",
        a.out.display(),
        done.arch,
        a.ty,
        done.bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}
