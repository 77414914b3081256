//! `mamba model-info`: parameter count and breakdown of a preset.

use std::process::ExitCode;

use crate::cli::ModelInfoArgs;

pub fn run(args: ModelInfoArgs) -> anyhow::Result<ExitCode> {
    let cfg = mamba_model::Config::arch_preset(args.arch, &args.size, args.vocab as usize)?;
    print!("{}", mamba_model::info::breakdown(&cfg));
    Ok(ExitCode::SUCCESS)
}
