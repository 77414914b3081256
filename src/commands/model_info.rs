//! `mamba model-info`: parameter count and breakdown of a preset.

use std::process::ExitCode;

use crate::cli::ModelInfoArgs;

pub fn run(args: ModelInfoArgs) -> anyhow::Result<ExitCode> {
    let cfg = mamba_model::Config::arch_preset(args.arch, &args.size, args.vocab as usize)?;
    let cfg = mamba_model::Config {
        mimo_rank: args.mimo_rank,
        ..cfg
    };
    mamba_model::mixers::check(&cfg)?;
    print!("{}", mamba_model::info::breakdown(&cfg));
    Ok(ExitCode::SUCCESS)
}
