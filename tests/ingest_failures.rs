//! `mamba ingest` on bad inputs and interrupted runs: nothing is fatal, nothing is silent,
//! and a killed run never leaves a manifest that names a partial file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

fn mamba() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mamba"))
}

fn run(args: &[&str]) -> Output {
    mamba().args(args).output().expect("run mamba")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A folder with one file of each bad kind, plus two good ones.
fn bad_corpus(root: &Path) {
    let w = |name: &str, bytes: &[u8]| fs::write(root.join(name), bytes).unwrap();
    w(
        "a-good.md",
        b"# Notes\n\nSome words about state space models.\n",
    );
    w(
        "b-copy.md",
        b"# Notes\n\nSome words about state space models.\n",
    );
    w("c-binary.dat", &[0u8, 159, 146, 150, 0, 1, 2, 3]);
    w("d-empty.txt", b"");
    w(
        "e-latin1.txt",
        b"caf\xe9 au lait, a plain line of mostly ascii text\n",
    );
    w(
        "f-broken.json",
        b"{\"model\": \"mamba\", \"layers\": [1, 2,\n",
    );
    w(
        "g-broken.pdf",
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> garbage\n",
    );
    w("h-rows.jsonl", b"{\"content\": \"no text column here\"}\n");
    w(
        "i-big.txt",
        "a line of text that repeats\n".repeat(60_000).as_bytes(),
    );
    w("j-good.py", b"def f():\n    return 1\n");
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("a-good.md"), root.join("k-link.md")).unwrap();
}

#[test]
fn bad_inputs_are_skipped_or_failed_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("in");
    fs::create_dir(&root).unwrap();
    bad_corpus(&root);
    let out = tmp.path().join("out");
    let args = [
        "ingest",
        "--quiet",
        s(&root),
        s(&out),
        "--vocab-size",
        "300",
        "--max-file-mb",
        "1",
    ];
    let result = run(&args);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );

    let report = fs::read_to_string(out.join("report.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["source"].as_str().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("b-copy.md", "skipped"),
            ("c-binary.dat", "skipped"),
            ("d-empty.txt", "skipped"),
            ("e-latin1.txt", "repaired"),
            ("f-broken.json", "repaired"),
            ("g-broken.pdf", "failed"),
            ("h-rows.jsonl", "failed"),
            ("i-big.txt", "skipped"),
            ("k-link.md", "skipped"),
        ]
    );
    let reason = |i: usize| lines[i]["reason"].as_str().unwrap();
    assert_eq!(reason(0), "duplicate of a-good.md");
    assert_eq!(reason(1), "binary");
    assert_eq!(reason(2), "empty");
    assert!(reason(3).contains("invalid UTF-8"), "{}", reason(3));
    assert!(
        reason(4).starts_with("invalid json, ingested as text"),
        "{}",
        reason(4)
    );
    assert!(
        reason(6).contains("no string field 'text'"),
        "{}",
        reason(6)
    );
    assert!(reason(7).starts_with("too large"), "{}", reason(7));
    assert!(reason(8).starts_with("symlink"), "{}", reason(8));

    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let files = &m["totals"]["files"];
    assert_eq!(
        (
            files["ingested"].as_u64(),
            files["skipped"].as_u64(),
            files["failed"].as_u64()
        ),
        (Some(4), Some(5), Some(2))
    );
    assert_eq!(m["totals"]["duplicates"], 1);
    assert_eq!(m["totals"]["repaired"], 2);
    assert_eq!(
        m["totals"]["by_kind"]["text"]["files"], 3,
        "good md, latin1 txt, broken json as text"
    );

    let strict = run(&[&args[..], &["--strict"]].concat());
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("2 input(s) failed (--strict)"));
}

fn sha256(path: &Path) -> String {
    Sha256::digest(fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The invariant a killed run must keep: no manifest, or one whose every file is complete.
fn manifest_names_only_complete_files(out: &Path) -> bool {
    let Ok(bytes) = fs::read(out.join("manifest.json")) else {
        return false;
    };
    let m: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest is complete JSON");
    for shard in m["shards"].as_array().unwrap() {
        let path = out.join(shard["file"].as_str().unwrap());
        assert!(path.exists(), "manifest names missing {}", path.display());
        assert_eq!(
            sha256(&path),
            shard["sha256"].as_str().unwrap(),
            "{} is not the file the manifest names",
            path.display()
        );
    }
    true
}

#[test]
fn a_killed_run_never_leaves_a_manifest_naming_a_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data: PathBuf = tmp.path().join("rows.jsonl");
    let mut rows = String::new();
    for i in 0..60_000 {
        rows.push_str(&format!(
            "{{\"text\": \"row {i}: the scan carries a state from token to token, {}\"}}\n",
            i * 7919 % 10007
        ));
    }
    fs::write(&data, rows).unwrap();
    let tok_dir = tmp.path().join("tok");
    let notes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/notes");
    assert!(run(&[
        "ingest",
        "--quiet",
        s(&notes),
        s(&tok_dir),
        "--vocab-size",
        "400"
    ])
    .status
    .success());
    let tokenizer = tok_dir.join("tokenizer.json");
    let out = tmp.path().join("out");
    let args = [
        "ingest",
        "--quiet",
        s(&data),
        s(&out),
        "--tokenizer",
        s(&tokenizer),
        "--shard-tokens",
        "40000",
        "--row-group-tokens",
        "8000",
        "--threads",
        "2",
    ];

    assert!(run(&args).status.success());
    assert!(manifest_names_only_complete_files(&out));
    let complete = fs::read(out.join("manifest.json")).unwrap();

    let mut killed_mid_run = 0;
    for delay_ms in [30, 120, 300, 600, 1000] {
        let mut child = mamba()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL: no chance to clean up
        child.wait().unwrap();
        manifest_names_only_complete_files(&out);
    }
    assert!(
        killed_mid_run >= 2,
        "the run was too quick to interrupt ({killed_mid_run} kills mid-run)"
    );

    assert!(run(&args).status.success());
    assert_eq!(
        fs::read(out.join("manifest.json")).unwrap(),
        complete,
        "a rerun after kills gives the same store"
    );
    let leftovers: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
