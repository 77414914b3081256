//! `mamba convert SRC DST`: a pretrained checkpoint in any layout the model loads, written in
//! transformers' (config.json, f32 safetensors, sharded past a size), or with `--mamba-ssm` in
//! mamba_ssm's own, with its tokenizer beside.
//! The output is built under a temporary name and renamed into place.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::Device;
use mamba_model::MambaLM;

use super::usage;
use crate::cli::ConvertArgs;

/// Files of a model directory that describe its tokenizer, copied as they are.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let (src, dst) = (&args.src, &args.dst);
    if !(args.max_shard_mb > 0.0 && args.max_shard_mb.is_finite()) {
        return Err(usage(anyhow::anyhow!(
            "--max-shard-mb {}: must be a positive number of megabytes",
            args.max_shard_mb
        )));
    }
    check_new_dir(dst)?;
    let (model, _) = MambaLM::load(src, &Device::Cpu).map_err(usage)?;
    let shard = (args.max_shard_mb * 1e6) as usize;
    let copied = match args.mamba_ssm {
        true => write_dir(src, dst, &|tmp| model.save_mamba_ssm(tmp))?,
        false => write_dir(src, dst, &|tmp| model.save_sharded(tmp, shard))?,
    };
    describe("converted", src, dst, &model, &copied);
    Ok(ExitCode::SUCCESS)
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

/// DST must be new or an empty directory.
pub(super) fn check_new_dir(dst: &Path) -> anyhow::Result<()> {
    if dst.exists() && !is_empty_dir(dst) {
        return Err(usage(anyhow::anyhow!(
            "{}: exists and is not an empty directory; name a new one",
            dst.display()
        )));
    }
    Ok(())
}

/// Writes a model into `dst` by `save` (given the temporary directory) with `src`'s tokenizer
/// files, under a temporary name renamed into place; returns the tokenizer files copied.
pub(super) fn write_dir(
    src: &Path,
    dst: &Path,
    save: &dyn Fn(&Path) -> mamba_model::Result<()>,
) -> anyhow::Result<Vec<&'static str>> {
    let tmp = dst.with_file_name(format!(
        ".{}.writing-{}",
        dst.file_name()
            .map_or("out".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let write = || -> anyhow::Result<Vec<&'static str>> {
        save(&tmp)?;
        let mut copied = Vec::new();
        for f in TOKENIZER_FILES {
            if src.join(f).is_file() {
                std::fs::copy(src.join(f), tmp.join(f))
                    .with_context(|| format!("copying {}", src.join(f).display()))?;
                copied.push(*f);
            }
        }
        if dst.exists() {
            std::fs::remove_dir(dst).with_context(|| dst.display().to_string())?;
        }
        std::fs::rename(&tmp, dst).with_context(|| format!("renaming into {}", dst.display()))?;
        Ok(copied)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&tmp);
    })
}

/// The closing line: what was written and whether a tokenizer came along.
pub(super) fn describe(verb: &str, src: &Path, dst: &Path, model: &MambaLM, copied: &[&str]) {
    let c = model.config();
    println!(
        "{verb} {} -> {}: {} parameters, {} layers, d_model {}, vocab {} ({} rows), {} head{}",
        src.display(),
        dst.display(),
        mamba_model::MambaLM::num_params(c),
        c.n_layer(),
        c.d_model,
        c.vocab_size,
        c.padded_vocab(),
        if c.tie_embeddings { "tied" } else { "untied" },
        match copied.is_empty() {
            true => "; no tokenizer.json in SRC: bring one to ingest with".to_string(),
            false => format!("; copied {}", copied.join(", ")),
        }
    );
}
