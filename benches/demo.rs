//! `cargo bench --bench demo`: runs `mamba demo` as a new user would (its own corpus, its
//! default two-minute budget) and prints how long it took, how far the val perplexity fell from
//! its first evaluation, and the generated sample. The targets: a drop of at least 10x, in about
//! two minutes. Exits 1 when the drop is short of 10x.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The smallest perplexity drop, first eval / last eval, the demo must show.
const MIN_DROP: f64 = 10.0;

fn main() {
    let tmp = std::env::temp_dir().join(format!("mamba-demo-bench-{}", std::process::id()));
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["demo", "-q", "--out"])
        .arg(&tmp)
        .output()
        .expect("run mamba demo");
    let secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    let ppl = val_ppl(&tmp.join("checkpoints/metrics.jsonl"));
    let (first, last) = (ppl[0], ppl[ppl.len() - 1]);
    let drop = first.1 / last.1;
    let sample: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("$ mamba generate"))
        .skip(1)
        .take_while(|l| !l.starts_with("learned:"))
        .collect();
    println!("mamba demo: {secs:.0} s end to end");
    println!(
        "val perplexity {:.1} at step {} -> {:.2} at step {}: {drop:.0}x lower (target >= {MIN_DROP}x: {})",
        first.1,
        first.0,
        last.1,
        last.0,
        if drop >= MIN_DROP { "met" } else { "NOT met" }
    );
    println!("sample:\n{}", sample.join("\n"));
    let _ = std::fs::remove_dir_all(&tmp);
    if drop < MIN_DROP {
        std::process::exit(1);
    }
}

/// (step, val perplexity) of every eval line of a run's metrics.
fn val_ppl(metrics: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(metrics).expect("metrics.jsonl");
    let evals: Vec<(u64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v.get("val_ppl")?.as_f64()?)))
        .collect();
    assert!(!evals.is_empty(), "the demo logged no evaluation");
    evals
}
