//! `mamba report DIR`: the training report of a checkpoint directory, written as a
//! self-contained HTML page with one SVG file per chart beside it.

use std::process::ExitCode;

use super::usage;
use crate::cli::ReportArgs;
use mamba::report;

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let run = report::load(&a.dir).map_err(usage)?;
    let out = a.out.unwrap_or_else(|| a.dir.join("report.html"));
    let written = report::write(&run, &out)?;
    if !run.bad_lines.is_empty() {
        eprintln!(
            "note: {} line(s) of metrics.jsonl not understood and left out",
            run.bad_lines.len()
        );
    }
    println!(
        "report of {} steps, {} evals: {} (+{} charts as .svg)",
        run.steps.len(),
        run.evals.len(),
        out.display(),
        written.len() - 1
    );
    Ok(ExitCode::SUCCESS)
}
