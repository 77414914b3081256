//! End-to-end tests of `mamba inspect`: every figure of the report against a store built
//! by `mamba ingest` from files written here, with expected figures computed independently
//! (pyarrow and Python `tokenizers` over the shards); `--summary`, `--json`, `--html`; and
//! `--verify` on intact and deliberately corrupted stores.

#[path = "inspect/store.rs"]
mod store;
#[path = "inspect/verify.rs"]
mod verify;

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use store::*;

#[test]
fn every_figure_matches_an_independent_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, store) = build_store(tmp.path());
    let r = inspect_json(&store, &["--seq-len", "100", "--top", "5"]);
    let want = python(&script("expected.py"), &[s(&store), "100", "5"]);

    // Totals per split and together.
    for split in ["train", "val"] {
        same(&r[split], &want["splits"][split], split);
        assert!(r[split]["rows"].as_u64().unwrap() > 0, "{split} is empty");
    }
    for key in [
        "shards",
        "row_groups",
        "rows",
        "documents",
        "tokens",
        "bytes",
    ] {
        let sum = want["splits"]["train"][key].as_u64().unwrap()
            + want["splits"]["val"][key].as_u64().unwrap();
        assert_eq!(r["total"][key], sum, "total.{key}");
    }
    assert!(r["train"]["row_groups"].as_u64().unwrap() > r["train"]["shards"].as_u64().unwrap());

    // Source bytes: the files that were ingested, measured here.
    let mut source_bytes = 0;
    for entry in walk(&input) {
        let rel = entry.strip_prefix(&input).unwrap().to_str().unwrap();
        if !NOT_INGESTED.contains(&rel) {
            source_bytes += fs::metadata(&entry).unwrap().len();
        }
    }
    let tokens = r["total"]["tokens"].as_f64().unwrap();
    assert_eq!(r["source_bytes"], source_bytes);
    assert!(close(
        &r["tokens_per_source_byte"],
        &(tokens / source_bytes as f64).into()
    ));
    let bytes = r["total"]["bytes"].as_f64().unwrap();
    assert!(close(&r["disk_bytes_per_token"], &(bytes / tokens).into()));
    same(
        &r["compression_ratio"],
        &want["compression_ratio"],
        "compression",
    );

    // Inputs: one duplicate, three skipped with their reasons, one failed.
    assert_eq!(r["duplicates"], 1);
    assert_eq!(r["files"]["ingested"], 12 - NOT_INGESTED.len());
    assert_eq!(r["files"]["skipped"], 3);
    assert_eq!(r["files"]["failed"], 1);
    same(&r["skip_reasons"], &want["skipped"], "skip_reasons");
    same(&r["fail_reasons"], &want["failed"], "fail_reasons");
    let skipped: BTreeSet<&str> = r["skip_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, BTreeSet::from(["binary", "duplicate", "empty"]));

    // Kinds and languages.
    same(&r["by_kind"], &want["by_kind"], "by_kind");
    same(&r["by_lang"], &want["by_lang"], "by_lang");
    let kinds: BTreeSet<&str> = r["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["code", "config", "dataset", "text"]));

    // Tokenizer.
    assert_eq!(r["tokenizer"]["vocab_size"], want["vocab_size"]);
    assert_eq!(r["tokenizer"]["special_tokens"], want["special_tokens"]);
    let d = &r["data"];
    assert_eq!(d["vocab_used"], want["vocab_used"]);
    assert_eq!(d["out_of_vocab"], 0);
    let fraction = want["vocab_used"].as_f64().unwrap() / want["vocab_size"].as_f64().unwrap();
    assert!(close(&d["vocab_used_fraction"], &fraction.into()));
    same(&d["top_tokens"], &want["top_tokens"], "top_tokens");
    assert_eq!(d["top_tokens"].as_array().unwrap().len(), 5);

    // Lengths: the long note spans several shards and must still count as one document.
    same(&d["documents"], &want["documents"], "documents");
    same(&d["chunks"], &want["chunks"], "chunks");
    assert_eq!(d["documents"]["count"], 12 - NOT_INGESTED.len() - 1 + 5);
    assert!(d["chunks"]["count"].as_u64() > d["documents"]["count"].as_u64());
    assert_eq!(d["documents_longer"], want["documents_longer"]);
    assert_eq!(d["chunks_longer"], want["chunks_longer"]);
    assert_eq!(d["documents_longer"], 1);

    // Top sources.
    same(&d["top_sources"], &want["top_sources"], "top_sources");
    assert_eq!(d["top_sources"][0]["source"], "notes/long.md");
}

#[test]
fn samples_are_seeded_and_decode_the_rows_they_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = build_store(tmp.path());
    let a = inspect_json(&store, &["--sample", "4", "--seed", "7"]);
    let b = inspect_json(&store, &["--sample", "4", "--seed", "7"]);
    let c = inspect_json(&store, &["--sample", "4", "--seed", "8"]);
    let samples = a["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    assert_eq!(a["samples"], b["samples"]);
    assert_ne!(a["samples"], c["samples"]);
    let cells: Vec<Value> = samples
        .iter()
        .map(|s| serde_json::json!([s["file"], s["row_group"], s["row"]]))
        .collect();
    let distinct: BTreeSet<String> = cells.iter().map(|c| c.to_string()).collect();
    assert_eq!(distinct.len(), 4);
    assert!(samples
        .iter()
        .all(|s| s["file"].as_str().unwrap().starts_with("train-")));
    let want = python(
        &script("cells.py"),
        &[s(&store), &Value::from(cells).to_string()],
    );
    for (got, want) in samples.iter().zip(want.as_array().unwrap()) {
        same(got, want, "sample");
        assert!(!got["text"].as_str().unwrap().is_empty());
    }
}

#[test]
fn summary_reads_only_footers_and_agrees_with_the_full_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = build_store(tmp.path());
    let full = inspect_json(&store, &[]);
    let file = shard_files(&store)[1].clone();
    // Wreck every byte between the magic and the footer of one shard: the summary, which
    // reads only footers, does not notice; the full report, which reads data, does.
    let shard = store.join(&file);
    let mut bytes = fs::read(&shard).unwrap();
    let footer = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap());
    let data_end = bytes.len() - 8 - footer as usize;
    bytes[4..data_end].fill(0xAB);
    fs::write(&shard, &bytes).unwrap();
    let started = std::time::Instant::now();
    let summary = inspect_json(&store, &["--summary"]);
    assert!(started.elapsed().as_secs_f64() < 1.0);
    assert!(summary["data"].is_null());
    for key in [
        "train",
        "val",
        "total",
        "source_bytes",
        "by_kind",
        "by_lang",
        "skip_reasons",
        "fail_reasons",
        "tokenizer",
        "compression_ratio",
    ] {
        assert_eq!(summary[key], full[key], "{key}");
    }
    let out = mamba(&["inspect", s(&store)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{file} row group")), "{err}");
}

#[test]
fn terminal_and_html_show_the_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = build_store(tmp.path());
    let r = inspect_json(&store, &["--seq-len", "100"]);
    let page = tmp.path().join("report.html");
    let out = mamba(&[
        "inspect",
        s(&store),
        "--seq-len",
        "100",
        "--sample",
        "2",
        "--html",
        s(&page),
    ]);
    ok(&out);
    let text = stdout(&out);
    let t = &r["total"];
    let n = |key: &str| t[key].as_u64().unwrap();
    let totals = format!(
        "{:<6} {:>7} {:>10} {:>9} {:>10} {:>13} {:>12}",
        "total",
        n("shards"),
        n("row_groups"),
        n("rows"),
        n("documents"),
        n("tokens"),
        n("bytes")
    );
    assert!(text.contains(&totals), "{text}");
    assert!(text.contains("--- sample: train-"), "{text}");
    let longer = format!(
        "{} longer than --seq-len 100",
        r["data"]["documents_longer"]
    );
    assert!(text.contains(&longer), "{text}");
    for share in r["by_lang"].as_array().unwrap() {
        assert!(text.contains(share["name"].as_str().unwrap()));
    }

    let html = fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    assert!(
        html.matches("<svg").count() >= 5,
        "kind, language, tokens, two lengths"
    );
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("http"));
    assert!(html.contains(&format!("<td>{}</td>", t["tokens"])));
    // The dataset rows hold "<and>": it is escaped wherever it shows.
    assert!(!html.contains("<and>"));
    assert!(html.contains("notes/long.md"));
}
