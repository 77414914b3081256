//! End-to-end tests of `mamba ingest` on the sample corpus and on bad inputs.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{data_with_copies, files, mamba, manifest, ok, repo, SMALL_SHARDS};

fn ingest(inputs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&str> = vec!["ingest", "--quiet"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    mamba(&args)
}

fn check_with_pyarrow(shards: &Path, root: &Path) -> String {
    let script = repo().join("tests/check_shards.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(shards)
        .arg(root)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sample_corpus_gives_a_store_that_pyarrow_and_tokenizers_read() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shards");
    let data = repo().join("data");
    let run = ingest(
        &[&data],
        &out,
        &["--vocab-size", "2000", "--val-fraction", "0.2"],
    );
    ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("0 failed"), "{stdout}");
    let m = manifest(&out);
    let by_kind = &m["totals"]["by_kind"];
    for kind in ["code", "config", "dataset", "pdf", "text"] {
        assert!(
            by_kind[kind]["tokens"].as_u64().unwrap() > 0,
            "no {kind} tokens: {by_kind}"
        );
    }
    // Code and configs by language or format; prose (the notes, the PDF) by natural language.
    let langs = m["totals"]["by_lang"].as_object().unwrap();
    for lang in ["python", "rust", "go", "json", "yaml", "toml", "xml", "en"] {
        assert!(langs.contains_key(lang), "no {lang} in {langs:?}");
    }
    assert!(m["totals"]["val"]["documents"].as_u64().unwrap() > 0);
    let report = check_with_pyarrow(&out, &data);
    assert!(report.starts_with("ok:"), "{report}");
}

#[test]
fn shards_are_byte_identical_at_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    data_with_copies(&data);
    let (one, four) = (tmp.path().join("one"), tmp.path().join("four"));
    let flags = [&["--vocab-size", "1000"], &SMALL_SHARDS[..]].concat();
    ok(&ingest(
        &[&data],
        &one,
        &[&["--threads", "1"], &flags[..]].concat(),
    ));
    ok(&ingest(
        &[&data],
        &four,
        &[&["--threads", "4"], &flags[..]].concat(),
    ));
    let (a, b) = (files(&one), files(&four));
    assert!(
        a.iter().filter(|(n, _)| n.ends_with(".parquet")).count() > 2,
        "expected several shards"
    );
    assert_eq!(a.len(), b.len());
    for ((name_a, bytes_a), (name_b, bytes_b)) in a.iter().zip(&b) {
        assert_eq!(name_a, name_b);
        assert!(
            bytes_a == bytes_b,
            "{name_a} differs between --threads 1 and 4"
        );
    }
    check_with_pyarrow(&one, &data);
    let report = String::from_utf8(fs::read(one.join("report.jsonl")).unwrap()).unwrap();
    let duplicates: Vec<_> = report
        .lines()
        .filter(|l| l.contains("duplicate of"))
        .collect();
    assert_eq!(duplicates.len(), 4, "{report}");
    assert!(
        report.contains(
            r#"{"source":"sample.pdf","status":"skipped","reason":"duplicate of a-copy.pdf"}"#
        ),
        "{report}"
    );
    assert!(report.contains(r#"{"source":"zz-bom.md","status":"skipped","reason":"duplicate of notes/getting-started.md"}"#), "{report}");
}

#[test]
fn a_given_tokenizer_is_used_as_is() {
    let tmp = tempfile::tempdir().unwrap();
    let data = repo().join("data");
    let first = tmp.path().join("first");
    ok(&ingest(
        &[&data.join("notes")],
        &first,
        &["--vocab-size", "600"],
    ));
    // Four notes at the default 1%: none falls in val by its hash, so the one closest to the
    // threshold is held out rather than leaving nothing to evaluate on.
    let totals = &manifest(&first)["totals"];
    assert_eq!(
        (
            totals["train"]["documents"].as_u64(),
            totals["val"]["documents"].as_u64()
        ),
        (Some(3), Some(1))
    );
    let none = tmp.path().join("none");
    ok(&ingest(
        &[&data.join("notes")],
        &none,
        &["--vocab-size", "600", "--val-fraction", "0"],
    ));
    assert_eq!(manifest(&none)["totals"]["val"]["documents"], 0);
    let tokenizer = first.join("tokenizer.json");
    let second = tmp.path().join("second");
    ok(&ingest(
        &[&data],
        &second,
        &["--tokenizer", tokenizer.to_str().unwrap()],
    ));
    assert_eq!(
        fs::read(&tokenizer).unwrap(),
        fs::read(second.join("tokenizer.json")).unwrap()
    );
    assert_eq!(
        manifest(&second)["tokenizer"]["origin"],
        tokenizer.to_str().unwrap()
    );
    check_with_pyarrow(&second, &data);
    // A model directory stands for the tokenizer.json in it.
    let third = tmp.path().join("third");
    ok(&ingest(
        &[&data],
        &third,
        &["--tokenizer", first.to_str().unwrap()],
    ));
    assert_eq!(
        manifest(&third)["tokenizer"]["sha256"],
        manifest(&second)["tokenizer"]["sha256"]
    );
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    assert_eq!(mamba(&["ingest", "only-one-path"]).status.code(), Some(2));
    assert_eq!(
        mamba(&["ingest", "data", "out", "--val-fraction", "1.5"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(mamba(&["no-such-command"]).status.code(), Some(2));
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let run = ingest(&[&missing], &tmp.path().join("out"), &[]);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        stderr.trim(),
        format!("error: input {} does not exist", missing.display())
    );
    let help = mamba(&["ingest", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("mamba ingest data/ shards/"));
}
