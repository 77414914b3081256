//! The report page: one HTML file with inline SVG charts and inline CSS, no scripts and no
//! links, so it opens anywhere and can be mailed or archived as it is.

use std::fmt::Write;

use serde_json::Value;

use super::{Figure, Run};

pub use mamba_pipeline::html::escape;
use mamba_pipeline::html::STYLE;

/// Steps the recent throughput is averaged over.
const RECENT_STEPS: usize = 20;

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "-".into(),
    }
}

/// The summary rows: (label, value).
pub fn summary(run: &Run) -> Vec<(&'static str, String)> {
    let last = run.steps.last();
    let first_loss = run.steps.iter().find_map(|s| s.loss);
    let best = run
        .evals
        .iter()
        .filter_map(|e| e.val_loss.map(|v| (v, e.step)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let tps: Vec<f64> = run.steps.iter().filter_map(|s| s.tokens_per_s).collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let recent = &tps[tps.len().saturating_sub(RECENT_STEPS)..];
    let eta = match last.and_then(|s| s.eta_s.map(|e| (s.step, e))) {
        Some((_, e)) if e < 0.5 => "finished".to_string(),
        Some((step, e)) => match std::time::Duration::try_from_secs_f64(e) {
            Ok(d) => format!(
                "about {} left after step {step}",
                crate::train::plan::human(d)
            ),
            Err(_) => "-".into(),
        },
        None => "-".into(),
    };
    vec![
        (
            "steps",
            last.map(|s| s.step.to_string()).unwrap_or_default(),
        ),
        (
            "tokens",
            last.map(|s| s.tokens.to_string()).unwrap_or_default(),
        ),
        ("first loss", fmt(first_loss, 4)),
        ("last loss", fmt(last.and_then(|s| s.loss), 4)),
        (
            "best val loss",
            best.map(|(v, s)| format!("{v:.4} (step {s}, ppl {:.2})", v.exp()))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "last val loss",
            fmt(run.evals.last().and_then(|e| e.val_loss), 4),
        ),
        (
            "val perplexity, first -> last",
            match (run.evals.first(), run.evals.last()) {
                (Some(a), Some(b)) => format!("{} -> {}", fmt(a.val_ppl, 2), fmt(b.val_ppl, 2)),
                _ => "-".into(),
            },
        ),
        (
            "passes over the train split",
            fmt(last.and_then(|s| s.passes), 2),
        ),
        ("mean tokens/s", fmt(mean(&tps), 0)),
        ("tokens/s, last 20 steps", fmt(mean(recent), 0)),
        ("ETA", eta),
        (
            "skipped steps",
            run.steps.iter().filter(|s| s.skipped).count().to_string(),
        ),
    ]
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The whole page.
pub fn page(run: &Run, figs: &[Figure]) -> String {
    let mut h = String::new();
    let title = format!("Training report: {}", run.dir.display());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    h.push_str("<h2>Summary</h2>\n<table>\n");
    for (k, v) in summary(run) {
        let _ = writeln!(
            h,
            "<tr><th class=l>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    }
    h.push_str("</table>\n");
    if !run.bad_lines.is_empty() {
        let lines: Vec<String> = run.bad_lines.iter().map(|l| l.to_string()).collect();
        let _ = writeln!(
            h,
            "<p class=\"warn\">metrics.jsonl lines not understood and left out: {}</p>",
            lines.join(", ")
        );
    }
    h.push_str("<h2>Curves</h2>\n<div class=\"charts\">\n");
    for f in figs {
        let _ = writeln!(
            h,
            "<figure id=\"{}\" title=\"{}\">{}</figure>",
            f.name,
            escape(f.title),
            f.svg
        );
    }
    h.push_str("</div>\n<h2>Checkpoints</h2>\n");
    if run.checkpoints.is_empty() {
        h.push_str("<p>none</p>\n");
    } else {
        h.push_str("<table>\n<tr><th class=l>checkpoint</th><th>step</th><th>tokens</th></tr>\n");
        for c in &run.checkpoints {
            let _ = writeln!(
                h,
                "<tr><td class=l>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.name),
                c.step,
                c.tokens
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Configuration</h2>\n");
    match &run.config {
        Some(Value::Object(m)) => {
            h.push_str("<table>\n");
            for (k, v) in m {
                let _ = writeln!(
                    h,
                    "<tr><th class=l>{}</th><td class=l>{}</td></tr>",
                    escape(k),
                    escape(&value_text(v))
                );
            }
            h.push_str("</table>\n");
        }
        _ => h.push_str("<p>no checkpoint with a trainer_state.json</p>\n"),
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
