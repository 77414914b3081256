//! The one-command demo end to end, with a few training steps, on the corpus it writes and on
//! the bundled sample (`--data`, with Mamba-2), and with Mamba-3 MIMO: every stage runs and leaves its output, a rerun
//! replaces the previous demo, and a folder the demo did not write is refused. How much the demo learns in
//! its full two minutes is measured by `cargo bench --bench demo`, not here.

use std::path::Path;
use std::process::{Command, Output};

/// The demo into `out`: run 0 plain, run 1 on the bundled sample with Mamba-2, run 2 with
/// Mamba-3 MIMO of rank 2.
fn demo(out: &Path, run: usize) -> Output {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mamba"));
    cmd.env("CANDLE_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .args(["demo", "--out"])
        .arg(out)
        .args(["--max-steps", "4", "--max-new-tokens", "12", "-q"]);
    match run {
        1 => cmd.arg("--data").arg(data).args(["--arch", "mamba2"]),
        2 => cmd.args(["--arch", "mamba3", "--mimo-rank", "2"]),
        _ => &mut cmd,
    };
    cmd.output().unwrap()
}

#[test]
fn the_demo_runs_every_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    for run in 0..3 {
        let o = demo(&out, run);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for stage in ["1/5", "2/5", "3/5", "4/5", "5/5", "done:"] {
            assert!(
                stdout.contains(stage),
                "run {run}: {stage} missing:\n{stdout}"
            );
        }
        assert!(stdout.contains("val split of"), "{stdout}");
        // The closing eval scores the tokens the trainer's evals scored: the last one's number.
        let last_eval = stdout.lines().rfind(|l| l.starts_with("eval ")).unwrap();
        let loss = last_eval
            .split(" | ")
            .nth(1)
            .unwrap()
            .trim_start_matches("val ");
        let eval = stdout.lines().find(|l| l.contains("val split of")).unwrap();
        assert!(
            eval.contains(": the first ") && eval.contains(&format!(" | {loss} | ")),
            "{last_eval}\n{eval}"
        );
        let arch = ["Mamba-1", "Mamba-2", "Mamba-3"][run];
        assert!(
            stdout.contains(&format!("train the tiny preset ({arch}) for 4 steps")),
            "{stdout}"
        );
        let config = std::fs::read_to_string(out.join("checkpoints/final/config.json")).unwrap();
        let model_type = ["\"mamba\"", "\"mamba2\"", "\"mamba3\""][run];
        assert!(
            config.contains(&format!("\"model_type\": {model_type}")),
            "{config}"
        );
        // The runs without --data write their corpus; all say how the val perplexity moved.
        assert_eq!(
            stdout.contains("wrote the demo corpus"),
            run != 1,
            "{stdout}"
        );
        assert!(stdout.contains("learned: val perplexity "), "{stdout}");
        // The sample starts with the prompt it was given (what follows is up to 4 steps of
        // training).
        assert!(
            stdout.contains("--prompt def ") && stdout.contains("\ndef"),
            "{stdout}"
        );
        for f in [
            "shards/manifest.json",
            "checkpoints/final/model.safetensors",
            "checkpoints/final/tokenizer.json",
            "report.html",
            "report-loss.svg",
        ] {
            assert!(out.join(f).exists(), "run {run}: {f} missing");
        }
        // A rerun starts afresh: the metrics hold one run's 4 steps.
        let metrics = std::fs::read_to_string(out.join("checkpoints/metrics.jsonl")).unwrap();
        let steps = metrics.lines().filter(|l| l.contains("\"loss\"")).count();
        assert_eq!(steps, 4, "run {run}");
    }
    // A corpus inside the demo's folder would be emptied with it: refused.
    std::fs::create_dir_all(out.join("corpus")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["demo", "--out"])
        .arg(&out)
        .arg("--data")
        .arg(out.join("corpus"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is inside the demo's folder"));
    let foreign = tmp.path().join("mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "x").unwrap();
    let o = demo(&foreign, 1);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a demo folder"));
    assert!(foreign.join("keep.txt").exists());
}
