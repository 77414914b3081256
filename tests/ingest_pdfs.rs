//! `mamba ingest` with the default (trained) tokenizer on PDFs that take each path of the PDF
//! reader: a classic xref table, object streams with an xref stream, a linearized file, a
//! wrong startxref, no xref, bytes before the header, truncated downloads, and a 120-page file
//! whose objects the parser reads in parallel. Once, the trained tokenizer and the PDF parser
//! shared rayon's pool and the 120-page files alone hung the run forever at 0% CPU; every run
//! here is held to a deadline and killed if it passes it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pdf-paths")
}

/// Runs `mamba args`, killing it if it has not finished within `limit`.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mamba");
    let started = Instant::now();
    while child.try_wait().expect("wait for mamba").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("mamba {args:?} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect mamba's output")
}

fn report(out: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(out.join("report.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The whole, undamaged variants: each must give the sample's text, so all but the first
/// are dropped as duplicates of it.
const WHOLE: [&str; 6] = [
    "bad-startxref.pdf",
    "classic.pdf",
    "junk-prefix.pdf",
    "linearized.pdf",
    "no-xref.pdf",
    "object-streams.pdf",
];

#[test]
fn pdfs_of_every_reader_path_ingest_with_the_trained_tokenizer_and_never_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    fs::create_dir(&input).unwrap();
    for entry in fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pdf") {
            fs::copy(&path, input.join(path.file_name().unwrap())).unwrap();
        }
    }
    // A text file beside them, as in a real folder.
    fs::write(
        input.join("notes.txt"),
        "Notes beside the PDFs.\n".repeat(20),
    )
    .unwrap();
    for threads in ["1", "2"] {
        let out = tmp.path().join(format!("out-{threads}"));
        let args = [
            "ingest",
            "--quiet",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--threads",
            threads,
            "--vocab-size",
            "400",
            // The fixtures repeat their lines and each other on purpose: this test is about
            // reading them, so the quality filter and near-duplicate removal stay out of it.
            "--filter",
            "none",
            "--near-dup",
            "off",
        ];
        let result = run_within(&args, Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "{stderr}");
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let totals = &manifest["totals"];
        // Every whole variant is read to the same text: one document, the rest duplicates;
        // so are the two 120-page files.
        assert_eq!(totals["duplicates"], WHOLE.len() as u64, "{totals}");
        let failed: Vec<_> = report(&out)
            .into_iter()
            .filter(|e| e["status"] == "failed")
            .collect();
        for entry in &failed {
            let source = entry["source"].as_str().unwrap();
            // Only a truncated download may fail, and then with a reason.
            assert!(source.starts_with("truncated-"), "{entry}");
            assert!(!entry["reason"].as_str().unwrap().is_empty());
        }
        // The duplicates are the only skips; the rest (the first whole variant, the text file,
        // the truncated ones) were read to the end, ingested or failed.
        let files = &totals["files"];
        let n = |k: &str| files[k].as_u64().unwrap();
        assert_eq!(n("skipped"), WHOLE.len() as u64, "{files}");
        assert_eq!(n("ingested") + n("failed"), 5, "{files}");
        assert!(n("ingested") >= 3, "{files}");
    }
}
