//! `mamba model-info`: parameter count and breakdown of a preset.

use std::process::ExitCode;

use crate::cli::ModelInfoArgs;

pub fn run(args: ModelInfoArgs) -> anyhow::Result<ExitCode> {
    let _ = (args.size, args.vocab);
    anyhow::bail!("model-info is not available yet")
}
