//! Run records: `metrics.jsonl` (one JSON line per logged step and per eval) and the
//! fixed-format log line printed for each step.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One optimizer step: a line of `metrics.jsonl`, written by the trainer and read back by the
/// report. A non-finite value is written as `null` and read as `None`; fields added later
/// default, so older runs still read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    /// Epoch of the step's last batch.
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub tokens: u64,
    pub loss: Option<f64>,
    pub lr: Option<f64>,
    pub grad_norm: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub loss_scale: Option<f64>,
    /// The update was not applied (non-finite loss or gradients).
    #[serde(default)]
    pub skipped: bool,
    /// Passes over the train split so far (tokens seen / train split tokens).
    #[serde(default)]
    pub passes: Option<f64>,
    /// Seconds the remaining steps will take at the speed measured so far; `None` until a
    /// step has been timed.
    #[serde(default)]
    pub eta_s: Option<f64>,
    /// The step's peak of live tensor memory on its device (see `mamba_model::memory`);
    /// `None` where it is not known.
    #[serde(default)]
    pub mem_peak_bytes: Option<u64>,
}

/// One evaluation on the val split (a line of `metrics.jsonl`, told apart by `val_loss`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    #[serde(default)]
    pub tokens: u64,
    pub val_loss: Option<f64>,
    pub val_ppl: Option<f64>,
    /// Target tokens the eval scored (the first of the val split); `mamba eval --max-tokens`
    /// with this many scores the same ones. Absent in runs from before it was recorded.
    #[serde(default)]
    pub val_tokens: Option<u64>,
}

/// Bytes as the progress line and `--dry-run` show them: GiB, or MiB below one.
pub fn gib(bytes: u64) -> String {
    match bytes < 1 << 30 {
        true => format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64),
        false => format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64),
    }
}

/// A logged value, NaN where it was not finite.
fn num(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// Appends records to `metrics.jsonl` (appending, so a resumed run extends its file).
pub struct Metrics {
    file: std::fs::File,
}

impl Metrics {
    pub fn open(path: &Path) -> std::io::Result<Metrics> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Metrics { file })
    }

    pub fn write(&mut self, record: &impl Serialize) -> std::io::Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")
    }
}

impl StepRecord {
    /// `step    12/100 | loss 5.1234 | lr 3.00e-04 | gnorm 1.234 | 12345 tok/s | mem 1.25 GiB |
    /// eta 3m 05s`
    pub fn line(&self, max_steps: u64) -> String {
        let skipped = if self.skipped { " | skipped" } else { "" };
        let mem = match self.mem_peak_bytes {
            Some(b) => format!(" | mem {}", gib(b)),
            None => String::new(),
        };
        let eta = match self.eta_s.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
            Some(d) => format!(" | eta {}", super::plan::human(d)),
            None => String::new(),
        };
        format!(
            "step {:>6}/{max_steps} | loss {:.4} | lr {:.2e} | gnorm {:.3} | {:.0} tok/s{mem}{eta}{skipped}",
            self.step,
            num(self.loss),
            num(self.lr),
            num(self.grad_norm),
            num(self.tokens_per_s)
        )
    }
}

impl EvalRecord {
    /// `eval     20 | val loss 5.1234 | val ppl 168.02 | the first 768 tokens of the val split
    /// (3 batches)`: `covers` says what was scored, so the number is not read as another eval's.
    pub fn line(&self, covers: &str) -> String {
        format!(
            "eval {:>6} | val loss {:.4} | val ppl {:.2} | {covers}",
            self.step,
            num(self.val_loss),
            num(self.val_ppl)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_append_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let rec = StepRecord {
            step: 3,
            epoch: 0,
            tokens: 96,
            loss: Some(2.5),
            lr: Some(1e-3),
            grad_norm: Some(0.5),
            tokens_per_s: Some(1000.0),
            loss_scale: Some(1.0),
            skipped: false,
            passes: Some(0.5),
            eta_s: None,
            mem_peak_bytes: None,
        };
        Metrics::open(&path).unwrap().write(&rec).unwrap();
        Metrics::open(&path).unwrap().write(&rec).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["step"], 3);
        assert_eq!(lines[1]["loss"], 2.5);
        assert_eq!(
            rec.line(10),
            "step      3/10 | loss 2.5000 | lr 1.00e-3 | gnorm 0.500 | 1000 tok/s"
        );
        let timed = StepRecord {
            eta_s: Some(185.0),
            mem_peak_bytes: Some(3 << 29),
            ..rec
        };
        assert_eq!(
            timed.line(10),
            "step      3/10 | loss 2.5000 | lr 1.00e-3 | gnorm 0.500 | 1000 tok/s | mem 1.50 GiB | eta 3m 05s"
        );
    }

    #[test]
    fn eval_records_say_what_they_covered_and_older_ones_still_read() {
        let rec = EvalRecord {
            step: 20,
            tokens: 640,
            val_loss: Some(5.0),
            val_ppl: Some(5f64.exp()),
            val_tokens: Some(768),
        };
        assert_eq!(
            rec.line("the first 768 tokens of the val split (3 batches)"),
            "eval     20 | val loss 5.0000 | val ppl 148.41 | the first 768 tokens of the val split (3 batches)"
        );
        let old: EvalRecord =
            serde_json::from_str(r#"{"step":5,"tokens":10,"val_loss":2.0,"val_ppl":7.39}"#)
                .unwrap();
        assert_eq!(old.val_tokens, None);
    }
}
