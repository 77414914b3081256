//! End-to-end tests of `mamba report` on the committed fixture run in tests/report/run
//! (made by tests/report/make_fixture.py): one self-contained page with every chart, each
//! chart as its own SVG, the figures of the summary checked against the fixture read here.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report/run")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Numbers of points of each `<polyline>` in `svg`, in order.
fn polylines(svg: &str) -> Vec<usize> {
    svg.split("<polyline")
        .skip(1)
        .map(|p| {
            let start = p.find("points=\"").unwrap() + 8;
            let end = p[start..].find('"').unwrap();
            p[start..start + end].split_whitespace().count()
        })
        .collect()
}

/// `mamba report RUN`, which must succeed; the page it wrote.
fn report(run: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["report", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(run.join("report.html")).unwrap()
}

#[test]
fn report_from_the_fixture_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    copy_dir(&fixture(), &run);
    let html = report(&run);

    // The fixture, read independently: the later line of a repeated step wins.
    let (mut steps, mut evals) = (BTreeMap::new(), BTreeMap::new());
    for line in std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_u64().unwrap();
        if v.get("val_loss").is_some() {
            evals.insert(step, v);
        } else {
            steps.insert(step, v);
        }
    }
    let trained = steps.values().filter(|v| v["skipped"] == false).count();
    assert_eq!(steps.len(), 120);
    assert_eq!(trained, 119);

    // Self-contained: no scripts, no links, no external images.
    for bad in ["<script", "src=", "href=", "<link", "url("] {
        assert!(!html.contains(bad), "page contains {bad}");
    }
    assert_eq!(html.matches("<svg").count(), 6, "six charts");
    for name in [
        "loss",
        "val_ppl",
        "lr",
        "throughput",
        "grad_norm",
        "loss_scale",
    ] {
        let svg = std::fs::read_to_string(run.join(format!("report-{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        assert!(html.contains(&format!("<figure id=\"{name}\"")), "{name}");
    }
    // Loss chart, after the grid lines: train (every applied step), smoothed train, val
    // (every eval), then the three 2-point legend samples.
    let loss = std::fs::read_to_string(run.join("report-loss.svg")).unwrap();
    let lines = polylines(&loss);
    assert_eq!(
        lines[lines.len() - 6..],
        [trained, trained, evals.len(), 2, 2, 2]
    );
    let lr = std::fs::read_to_string(run.join("report-lr.svg")).unwrap();
    let lines = polylines(&lr);
    assert_eq!(lines[lines.len() - 2..], [120, 2]);

    // Summary figures.
    let (best_step, best) = evals
        .iter()
        .map(|(s, v)| (*s, v["val_loss"].as_f64().unwrap()))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    assert!(
        html.contains(&format!(
            "{best:.4} (step {best_step}, ppl {:.2})",
            best.exp()
        )),
        "best val loss missing"
    );
    let last_loss = steps[&120]["loss"].as_f64().unwrap();
    assert!(html.contains(&format!(
        "<th class=l>last loss</th><td>{last_loss:.4}</td>"
    )));
    assert!(html.contains("<th class=l>skipped steps</th><td>1</td>"));
    // Checkpoints and the configuration of the newest one.
    assert!(html.contains("<td class=l>step-000060</td><td>60</td>"));
    assert!(html.contains("<th class=l>precision</th><td class=l>fp16</td>"));
    assert!(html.contains("<th class=l>max_steps</th><td class=l>120</td>"));
    let (first_ppl, last_ppl) = (
        evals.values().next().unwrap()["val_ppl"].as_f64().unwrap(),
        evals.values().last().unwrap()["val_ppl"].as_f64().unwrap(),
    );
    assert!(html.contains(&format!(
        "<th class=l>val perplexity, first -&gt; last</th><td>{first_ppl:.2} -&gt; {last_ppl:.2}</td>"
    )));
}

/// A run still training: no checkpoint yet, its last line half written, an fp32 run whose
/// loss scale never moves. The report reads it as far as it got and leaves the flat chart out.
#[test]
fn a_running_fp32_run_reports_what_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let metrics = std::fs::read_to_string(fixture().join("metrics.jsonl")).unwrap();
    let mut text = String::new();
    for line in metrics.lines().take(50) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if v.get("loss_scale").is_some() {
            v["loss_scale"] = 1.0.into();
            v["passes"] = (v["step"].as_f64().unwrap() / 40.0).into();
            v["eta_s"] = (600.0 - v["step"].as_f64().unwrap()).into();
        }
        text.push_str(&format!("{v}\n"));
    }
    text.push_str("{\"step\":51,\"epoch\":0,\"tok");
    std::fs::write(run.join("metrics.jsonl"), text).unwrap();
    let html = report(&run);
    assert!(!html.contains("loss_scale") && !run.join("report-loss_scale.svg").exists());
    assert!(
        !html.contains("not understood"),
        "a torn last line is not a bad line"
    );
    let last = metrics
        .lines()
        .take(50)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .last()
        .unwrap()["step"]
        .as_u64()
        .unwrap();
    let passes = last as f64 / 40.0;
    assert!(
        html.contains(&format!(
            "<th class=l>passes over the train split</th><td>{passes:.2}</td>"
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "about 9m {:02}s left after step {last}",
            (600 - last) % 60
        )),
        "{html}"
    );
    assert!(html.contains("no checkpoint with a trainer_state.json"));
}

#[test]
fn a_directory_without_metrics_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(["report", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("metrics.jsonl"), "{err}");
}
