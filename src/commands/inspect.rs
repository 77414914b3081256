//! `mamba inspect`: prints a shard store's report (table, `--json`, `--html`), or with
//! `--verify` checks every shard against the manifest and exits 1 on any problem.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use mamba_pipeline::inspect::{self, html, text, Options};

use crate::cli::InspectArgs;

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    if args.verify {
        return verify(&args);
    }
    let opts = Options::new()
        .seq_len(args.seq_len)
        .sample(args.sample)
        .seed(args.seed)
        .top(args.top)
        .scan(!args.summary);
    let report = inspect::inspect(&args.dir, &opts)?;
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", text::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let progress = !args.quiet && !args.json && std::io::stderr().is_terminal();
    let v = inspect::verify(&args.dir, progress)?;
    if args.json {
        println!("{}", v.to_json());
    } else {
        for problem in &v.problems {
            println!("{problem}");
        }
    }
    let mb = v.bytes as f64 / 1e6;
    let rate = mb / v.seconds.max(1e-9);
    if v.ok() {
        eprintln!(
            "ok: {} shards, {} rows, {} tokens, {mb:.1} MB verified in {:.2} s ({rate:.0} MB/s)",
            v.shards, v.rows, v.tokens, v.seconds
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} problem(s) in {} ({} shards, {mb:.1} MB read in {:.2} s)",
            v.problems.len(),
            args.dir.display(),
            v.shards,
            v.seconds
        );
        Ok(ExitCode::FAILURE)
    }
}
