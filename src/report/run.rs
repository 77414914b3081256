//! A training run read back for the report: the step and eval lines of `metrics.jsonl` and
//! the newest checkpoint's `trainer_state.json` (its resolved configuration) plus the list of
//! checkpoints. A resumed run appends to `metrics.jsonl` and may repeat steps after the
//! checkpoint it resumed from; the later line of a step wins, as that is the run that went on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no step lines; is this a `mamba train --checkpoint-dir`?")]
    Empty(String),
}

pub use crate::train::metrics::{EvalRecord, StepRecord};

/// A checkpoint directory found beside `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointInfo {
    pub name: String,
    pub step: u64,
    pub tokens: u64,
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct Run {
    pub dir: PathBuf,
    pub steps: Vec<StepRecord>,
    pub evals: Vec<EvalRecord>,
    /// Lines of `metrics.jsonl` that were neither a step nor an eval.
    pub bad_lines: Vec<usize>,
    /// The newest checkpoint's resolved configuration.
    pub config: Option<Value>,
    pub checkpoints: Vec<CheckpointInfo>,
}

fn io(path: &Path, source: std::io::Error) -> RunError {
    RunError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads `dir/metrics.jsonl` and the checkpoints under `dir`.
pub fn load(dir: &Path) -> Result<Run, RunError> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let (mut steps, mut evals) = (BTreeMap::new(), BTreeMap::new());
    let mut bad_lines = Vec::new();
    // A run still training may be writing its last line: one without its newline that does
    // not parse yet is not a bad line, just not there yet.
    let tail_start = text.rfind('\n').map_or(0, |end| end + 1);
    let torn = serde_json::from_str::<Value>(&text[tail_start..]).is_err();
    let complete = if torn { &text[..tail_start] } else { &text[..] };
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => {
                bad_lines.push(i + 1);
                continue;
            }
        };
        let parsed = if v.get("val_loss").is_some() {
            serde_json::from_value::<EvalRecord>(v).map(|e| {
                evals.insert(e.step, e);
            })
        } else {
            serde_json::from_value::<StepRecord>(v).map(|s| {
                steps.insert(s.step, s);
            })
        };
        if parsed.is_err() {
            bad_lines.push(i + 1);
        }
    }
    if steps.is_empty() {
        return Err(RunError::Empty(path.display().to_string()));
    }
    let checkpoints = checkpoints(dir);
    let newest = checkpoints.iter().max_by_key(|c| c.step);
    let config = newest
        .and_then(|c| state(&dir.join(&c.name)))
        .and_then(|s| s.get("config").cloned());
    Ok(Run {
        dir: dir.to_path_buf(),
        steps: steps.into_values().collect(),
        evals: evals.into_values().collect(),
        bad_lines,
        config,
        checkpoints,
    })
}

fn state(dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Subdirectories holding a readable `trainer_state.json`, by step.
fn checkpoints(dir: &Path) -> Vec<CheckpointInfo> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<CheckpointInfo> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                return None;
            }
            let s = state(&e.path())?;
            Some(CheckpointInfo {
                name,
                step: s.get("step")?.as_u64()?,
                tokens: s.get("tokens").and_then(Value::as_u64).unwrap_or(0),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.step, &a.name).cmp(&(b.step, &b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_lines_win_nulls_are_none_bad_lines_are_counted_and_a_torn_one_waits() {
        let dir = tempfile::tempdir().unwrap();
        let step = |s: u64, loss: &str| {
            format!(
                r#"{{"step":{s},"epoch":0,"tokens":{},"loss":{loss},"lr":0.001,"grad_norm":1.0,"tokens_per_s":100.0,"loss_scale":1.0,"skipped":false}}"#,
                s * 10
            )
        };
        let lines = [
            step(1, "5.0"),
            step(2, "4.0"),
            r#"{"step":2,"tokens":20,"val_loss":4.5,"val_ppl":90.0}"#.to_string(),
            "not json".to_string(),
            step(2, "3.5"), // resumed from step 1: step 2 again
            step(3, "null"),
            r#"{"step":"x"}"#.to_string(),
        ];
        let torn = &step(4, "3.0")[..30]; // a running trainer's line, half written
        let text = lines.join("\n") + "\n" + torn;
        std::fs::write(dir.path().join("metrics.jsonl"), text).unwrap();
        let ck = dir.path().join("final");
        std::fs::create_dir(&ck).unwrap();
        std::fs::write(
            ck.join("trainer_state.json"),
            r#"{"step":3,"tokens":30,"config":{"lr":0.001}}"#,
        )
        .unwrap();
        let run = load(dir.path()).unwrap();
        let losses: Vec<_> = run.steps.iter().map(|s| (s.step, s.loss)).collect();
        assert_eq!(losses, vec![(1, Some(5.0)), (2, Some(3.5)), (3, None)]);
        assert_eq!(run.evals.len(), 1);
        assert_eq!(run.bad_lines, vec![4, 7]);
        assert_eq!(run.config.unwrap()["lr"], 0.001);
        assert_eq!(
            run.checkpoints,
            vec![CheckpointInfo {
                name: "final".into(),
                step: 3,
                tokens: 30
            }]
        );
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("metrics.jsonl"), "").unwrap();
        assert!(load(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no step lines"));
    }
}
