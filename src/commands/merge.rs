//! `mamba merge BASE ADAPTER OUT`: a LoRA adapter (PEFT's format, from `mamba train
//! --lora-rank` or from PEFT) merged into its base model, W + s B A (PEFT's
//! `merge_and_unload`), written in the base's transformers layout with its tokenizer. The output
//! is built under a temporary name and renamed into place.

use std::process::ExitCode;

use candle_core::Device;
use mamba_model::io::peft;
use mamba_model::MambaLM;

use super::convert::{check_new_dir, describe, write_dir};
use super::usage;
use crate::cli::MergeArgs;

pub fn run(a: MergeArgs) -> anyhow::Result<ExitCode> {
    check_new_dir(&a.out)?;
    let (base, _) = MambaLM::load(&a.base, &Device::Cpu).map_err(usage)?;
    let adapters = peft::load(&a.adapter, base.config(), &Device::Cpu).map_err(usage)?;
    let merged = base.merge_adapters(&adapters)?;
    let copied = write_dir(&a.base, &a.out, &|tmp| merged.save(tmp))?;
    describe("merged", &a.adapter, &a.out, &merged, &copied);
    Ok(ExitCode::SUCCESS)
}
