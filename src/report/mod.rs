//! `mamba report`: a training run at a glance. Reads `metrics.jsonl` and the checkpoints'
//! `trainer_state.json` ([`run`]), draws loss and val-loss, val perplexity, learning rate,
//! tokens/s, gradient norm and loss scale against the step ([`chart`], SVG; a chart whose lines
//! are flat is left out), and gathers them with the run's summary (perplexity, passes over the
//! data, throughput, ETA) and configuration in one self-contained HTML page ([`html`]); each
//! chart is also written as its own `.svg` file. A run still training reads as far as it got.

pub mod chart;
pub mod html;
pub mod run;

use std::path::{Path, PathBuf};

use chart::{Chart, Series};
pub use run::{load, Run, RunError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("drawing {chart}: {reason}")]
    Draw { chart: String, reason: String },
    #[error("{path}: {reason}")]
    Write { path: String, reason: String },
}

/// A drawn chart: its file stem and SVG text.
pub struct Figure {
    pub name: &'static str,
    pub title: &'static str,
    pub svg: String,
}

/// Exponential moving average of the points' y (factor `beta`), for a readable loss trend.
fn smooth(points: &[(f64, f64)], beta: f64) -> Vec<(f64, f64)> {
    let mut avg = None;
    points
        .iter()
        .map(|&(x, y)| {
            let a = match avg {
                None => y,
                Some(a) => beta * a + (1.0 - beta) * y,
            };
            avg = Some(a);
            (x, a)
        })
        .collect()
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        points,
    }
}

/// The charts of a run, in page order (a chart with no data is left out).
pub fn figures(run: &Run) -> Result<Vec<Figure>, ReportError> {
    let steps = |f: fn(&run::StepRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        run.steps
            .iter()
            .filter_map(|s| f(s).filter(|v| v.is_finite()).map(|v| (s.step as f64, v)))
            .collect()
    };
    let loss = steps(|s| if s.skipped { None } else { s.loss });
    let val: Vec<(f64, f64)> = run
        .evals
        .iter()
        .filter_map(|e| {
            e.val_loss
                .filter(|v| v.is_finite())
                .map(|v| (e.step as f64, v))
        })
        .collect();
    // Perplexity falls by orders of magnitude: drawn on a log axis.
    let val_ppl: Vec<(f64, f64)> = run
        .evals
        .iter()
        .filter_map(|e| {
            e.val_ppl
                .filter(|v| *v > 0.0)
                .map(|v| (e.step as f64, v.log10()))
        })
        .collect();
    // The fp16 loss scale moves by powers of two: its log2 reads as whole steps.
    let log2_scale = steps(|s| s.loss_scale.filter(|v| *v > 0.0).map(f64::log2));
    let specs: Vec<(&'static str, &'static str, &'static str, Vec<Series>)> = vec![
        (
            "loss",
            "Loss",
            "cross-entropy (nats)",
            vec![
                series("train", loss.clone()),
                series("train, smoothed", smooth(&loss, 0.9)),
                series("val", val),
            ],
        ),
        (
            "val_ppl",
            "Validation perplexity (log scale)",
            "perplexity",
            vec![series("val perplexity", val_ppl)],
        ),
        (
            "lr",
            "Learning rate",
            "learning rate",
            vec![series("lr", steps(|s| s.lr))],
        ),
        (
            "throughput",
            "Throughput",
            "tokens/s",
            vec![series("tokens/s", steps(|s| s.tokens_per_s))],
        ),
        (
            "grad_norm",
            "Gradient norm (before clipping)",
            "global L2 norm",
            vec![series("grad norm", steps(|s| s.grad_norm))],
        ),
        (
            "loss_scale",
            "Loss scale (fp16; 0 = no scaling)",
            "log2 of the scale",
            vec![series("log2 loss scale", log2_scale)],
        ),
    ];
    let mut out = Vec::new();
    for (name, title, y_label, series) in specs {
        // A chart whose lines are all flat (the loss scale of a run without fp16, a constant
        // learning rate) has nothing to say and is left out.
        if series.iter().all(Series::is_flat) && name != "loss" {
            continue;
        }
        let c = Chart {
            title,
            x_label: "step",
            y_label,
            series,
            log_y: name == "val_ppl",
        };
        let svg = chart::svg(&c).map_err(|reason| ReportError::Draw {
            chart: name.into(),
            reason,
        })?;
        if let Some(svg) = svg {
            out.push(Figure { name, title, svg });
        }
    }
    Ok(out)
}

/// Writes `out` (the page) and, beside it, one `<stem>-<chart>.svg` per chart; returns the
/// paths written.
pub fn write(run: &Run, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let figs = figures(run)?;
    let page = html::page(run, &figs);
    let fail = |p: &Path, e: std::io::Error| ReportError::Write {
        path: p.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| fail(parent, e))?;
    }
    std::fs::write(out, page).map_err(|e| fail(out, e))?;
    let mut written = vec![out.to_path_buf()];
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "report".into());
    for f in &figs {
        let p = out.with_file_name(format!("{stem}-{}.svg", f.name));
        std::fs::write(&p, &f.svg).map_err(|e| fail(&p, e))?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_follows_the_trend() {
        let s = smooth(&[(1.0, 4.0), (2.0, 2.0), (3.0, 2.0)], 0.5);
        assert_eq!(s, vec![(1.0, 4.0), (2.0, 3.0), (3.0, 2.5)]);
    }
}
