//! End-to-end tests of `mamba inspect`: every figure of the report against a store built
//! by `mamba ingest` from files written here, with expected figures computed independently
//! (pyarrow and Python `tokenizers` over the shards); `--summary`, `--json`, `--html`; and
//! `--verify` on intact and deliberately corrupted stores.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn mamba(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(args)
        .output()
        .expect("run mamba")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        stdout(out)
    );
}

/// Files skipped or failed by ingest, by design of [`write_corpus`].
const NOT_INGESTED: &[&str] = &["blob.dat", "broken.pdf", "empty.txt", "notes/short.txt"];

/// A corpus of known shape: a long markdown file (cut into many chunks with
/// `--chunk-bytes 256`), short text, code, configs, a 5-row dataset, a byte-identical copy,
/// an empty file, a binary file and a broken PDF.
fn write_corpus(root: &Path) {
    let w = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    };
    let words = [
        "state",
        "space",
        "model",
        "selective",
        "scan",
        "token",
        "shard",
        "parquet",
        "channel",
        "kernel",
        "memory",
        "stream",
        "row",
        "group",
        "document",
    ];
    let mut seed = 12345u64;
    let mut para = |n: usize| {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words[(seed >> 33) as usize % words.len()]
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let long: Vec<String> = (0..12).map(|_| para(60)).collect();
    w(
        "notes/long.md",
        format!("# Long\n\n{}\n", long.join("\n\n")).as_bytes(),
    );
    let short = format!("{}\n", para(20));
    w("notes/short-again.txt", short.as_bytes());
    w("notes/short.txt", short.as_bytes());
    w("notes/other.txt", format!("{}\n", para(25)).as_bytes());
    w(
        "code/a.py",
        b"def f(x):\n    return x + 1\n\n\ndef g(y):\n    return f(y) * 2\n",
    );
    w("code/b.rs", b"fn main() {\n    println!(\"hi\");\n}\n");
    w("conf/c.json", b"{\"a\": 1, \"b\": [1, 2]}\n");
    w("conf/d.yaml", b"a: 1\nb: two\n");
    let rows: String = (1..=5)
        .map(|i| format!("{{\"text\": \"row {i} about the selective scan <and> shards\"}}\n"))
        .collect();
    w("rows.jsonl", rows.as_bytes());
    w("empty.txt", b"");
    w("blob.dat", &[0, 1, 2, 3, 159, 146, 150, 0]);
    w(
        "broken.pdf",
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> garbage\n",
    );
}

/// A tokenizer trained by `mamba ingest` on the sample corpus, then the known corpus
/// ingested with it into small shards and row groups, both splits used.
fn build_store(tmp: &Path) -> (PathBuf, PathBuf) {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let base = tmp.join("base");
    ok(&mamba(&[
        "ingest",
        "--quiet",
        s(&data),
        s(&base),
        "--vocab-size",
        "1500",
    ]));
    let input = tmp.join("in");
    write_corpus(&input);
    let store = tmp.join("store");
    let tokenizer = base.join("tokenizer.json");
    ok(&mamba(&[
        "ingest",
        "--quiet",
        s(&input),
        s(&store),
        "--tokenizer",
        s(&tokenizer),
        "--chunk-bytes",
        "256",
        "--val-fraction",
        "0.3",
        "--row-group-tokens",
        "60",
        "--shard-tokens",
        "200",
    ]));
    (input, store)
}

/// Computes the report's figures from the shards with pyarrow and `tokenizers`, without
/// any of mamba's code: argv = store, seq_len, top.
const EXPECTED_PY: &str = r#"
import glob, json, os, sys
from collections import Counter, defaultdict
import pyarrow.parquet as pq
from tokenizers import Tokenizer

store, seq_len, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tok = Tokenizer.from_file(os.path.join(store, "tokenizer.json"))
out = {"splits": {}}
chunk_lens, doc_len, doc_kind, doc_lang, doc_source = [], {}, {}, {}, {}
counts, comp, uncomp = Counter(), 0, 0
source_tokens, source_docs = Counter(), defaultdict(set)
for split in ["train", "val"]:
    files = sorted(glob.glob(os.path.join(store, split + "-*.parquet")))
    fig = dict(shards=len(files), row_groups=0, rows=0, documents=0, tokens=0, bytes=0)
    docs = set()
    for f in files:
        pf = pq.ParquetFile(f)
        md = pf.metadata
        fig["row_groups"] += md.num_row_groups
        fig["bytes"] += os.path.getsize(f)
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            uncomp += rg.total_byte_size
            comp += sum(rg.column(i).total_compressed_size for i in range(rg.num_columns))
        t = pf.read().to_pylist()
        for r in t:
            n = len(r["tokens"])
            assert n == r["n_tokens"]
            fig["rows"] += 1
            fig["tokens"] += n
            chunk_lens.append(n)
            counts.update(r["tokens"])
            d = r["doc_id"]
            docs.add(d)
            doc_len[d] = doc_len.get(d, 0) + n
            doc_kind[d], doc_lang[d] = r["kind"], r["lang"]
            source_tokens[r["source"]] += n
            source_docs[r["source"]].add(d)
    fig["documents"] = len(docs)
    out["splits"][split] = fig
total = sum(chunk_lens)
out["compression_ratio"] = uncomp / comp

def groups(of):
    g = defaultdict(lambda: [0, 0])
    for d, n in doc_len.items():
        g[of[d]][0] += 1
        g[of[d]][1] += n
    rows = [dict(name=k, documents=v[0], tokens=v[1], share=v[1] / total) for k, v in g.items()]
    return sorted(rows, key=lambda r: (-r["tokens"], r["name"]))
out["by_kind"], out["by_lang"] = groups(doc_kind), groups(doc_lang)

def dist(lens):
    s = sorted(lens)
    pct = lambda p: s[max(1, -(-p * len(s) // 100)) - 1]
    lo, hi = (min(s)).bit_length(), (max(s)).bit_length()
    bins = []
    for e in range(lo, hi + 1):
        a, b = (0 if e == 0 else 1 << (e - 1)), (1 << e) - 1
        bins.append(dict(lo=a, hi=b, count=sum(1 for x in s if a <= x <= b)))
    return dict(count=len(s), total=sum(s), min=s[0], max=s[-1], mean=sum(s) / len(s),
                percentiles=[dict(p=p, value=pct(p)) for p in [10, 25, 50, 90, 99]],
                histogram=bins)
out["documents"] = dist(list(doc_len.values()))
out["chunks"] = dist(chunk_lens)
out["documents_longer"] = sum(1 for n in doc_len.values() if n > seq_len)
out["chunks_longer"] = sum(1 for n in chunk_lens if n > seq_len)
vocab = tok.get_vocab_size(with_added_tokens=True)
out["vocab_size"] = vocab
out["vocab_used"] = len(counts)
out["out_of_vocab"] = sum(n for t, n in counts.items() if t >= vocab)
def text(i):
    t = tok.decode([i], skip_special_tokens=False)
    return t if t and "\ufffd" not in t else tok.id_to_token(i)
ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
out["top_tokens"] = [dict(id=i, text=text(i), count=n, share=n / total) for i, n in ranked]
srcs = sorted(source_tokens.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
out["top_sources"] = [dict(source=k, documents=len(source_docs[k]), tokens=v) for k, v in srcs]
tj = json.load(open(os.path.join(store, "tokenizer.json")))
out["special_tokens"] = [t["content"] for t in tj["added_tokens"] if t["special"]]
def cls(reason):
    import re
    return "duplicate" if reason.startswith("duplicate of ") else re.split(r"[(:]", reason)[0].strip()
reasons = {"skipped": Counter(), "failed": Counter()}
for line in open(os.path.join(store, "report.jsonl")):
    e = json.loads(line)
    if e["status"] in reasons:
        reasons[e["status"]][cls(e["reason"])] += 1
for k, c in reasons.items():
    out[k] = [dict(reason=r, count=n) for r, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]
print(json.dumps(out))
"#;

/// Reads the given (file, row group, row) cells and decodes their tokens: argv = store,
/// then JSON [[file, row_group, row], ...].
const CELLS_PY: &str = r#"
import json, os, sys
import pyarrow.parquet as pq
from tokenizers import Tokenizer
store, cells = sys.argv[1], json.loads(sys.argv[2])
tok = Tokenizer.from_file(os.path.join(store, "tokenizer.json"))
out = []
for f, g, r in cells:
    row = pq.ParquetFile(os.path.join(store, f)).read_row_group(g).to_pylist()[r]
    out.append(dict(source=row["source"], doc_id=row["doc_id"], chunk=row["chunk"],
                    n_tokens=row["n_tokens"], text=tok.decode(row["tokens"], skip_special_tokens=False)))
print(json.dumps(out))
"#;

fn python(script: &str, args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => false,
    }
}

/// Equal, with floats compared to a relative 1e-9.
fn same(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: {got} vs {want}");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                same(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, y) in b {
                same(&a[k], y, &format!("{at}.{k}"));
            }
        }
        (Value::Number(_), Value::Number(_)) if got.is_f64() || want.is_f64() => {
            assert!(close(got, want), "{at}: {got} vs {want}")
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

fn inspect_json(store: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", s(store), "--json"];
    args.extend_from_slice(extra);
    let out = mamba(&args);
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_figure_matches_an_independent_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, store) = build_store(tmp.path());
    let r = inspect_json(&store, &["--seq-len", "100", "--top", "5"]);
    let want = python(EXPECTED_PY, &[s(&store), "100", "5"]);

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

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
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
    let want = python(CELLS_PY, &[s(&store), &Value::from(cells).to_string()]);
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

fn verify(store: &Path) -> (Option<i32>, Vec<String>) {
    let out = mamba(&["inspect", s(store), "--verify"]);
    let lines = stdout(&out).lines().map(String::from).collect();
    (out.status.code(), lines)
}

fn manifest(store: &Path) -> Value {
    serde_json::from_slice(&fs::read(store.join("manifest.json")).unwrap()).unwrap()
}

fn set_manifest(store: &Path, m: &Value) {
    fs::write(store.join("manifest.json"), m.to_string()).unwrap();
}

#[test]
fn verify_passes_an_intact_store_and_names_each_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, store) = build_store(tmp.path());
    let (code, lines) = verify(&store);
    assert_eq!((code, lines.len()), (Some(0), 0), "{lines:?}");
    let json = mamba(&["inspect", s(&store), "--verify", "--json"]);
    ok(&json);
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        v["tokens"],
        inspect_json(&store, &["--summary"])["total"]["tokens"]
    );
    assert_eq!(v["problems"], serde_json::json!([]));

    let pristine = tmp.path().join("pristine");
    copy_dir(&store, &pristine);
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        copy_dir(&pristine, &dir);
        dir
    };

    let files = shard_files(&pristine);
    assert!(files.len() >= 4, "{files:?}");

    // A flipped byte in the middle of a shard.
    let dir = fresh("flipped");
    let name = &files[2];
    let split = if name.starts_with("train-") {
        "train"
    } else {
        "val"
    };
    let shard = dir.join(name);
    let mut bytes = fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&shard, &bytes).unwrap();
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{name}: sha256"))),
        "{lines:?}"
    );
    // Whatever else it breaks is about that shard (or, through it, its split's totals).
    let totals = format!("manifest.json: {split} shards hold");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with(name.as_str()) || l.starts_with(&totals)),
        "{lines:?}"
    );

    // A byte flipped in the first page header of row group 1's token column: the sha256
    // and the row group that no longer decodes.
    let dir = fresh("page");
    let found = python(
        "import sys, json, glob, os, pyarrow.parquet as pq\n\
         for f in sorted(glob.glob(os.path.join(sys.argv[1], '*.parquet'))):\n\
         \x20   md = pq.ParquetFile(f).metadata\n\
         \x20   if md.num_row_groups > 1:\n\
         \x20       print(json.dumps([os.path.basename(f), md.row_group(1).column(5).data_page_offset]))\n\
         \x20       break",
        &[s(&dir)],
    );
    let name = found[0].as_str().unwrap();
    let shard = dir.join(name);
    let mut bytes = fs::read(&shard).unwrap();
    bytes[found[1].as_u64().unwrap() as usize] ^= 0xff;
    fs::write(&shard, &bytes).unwrap();
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{name}: row group 1: "))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{name}: sha256"))),
        "{lines:?}"
    );

    // A truncated shard.
    let dir = fresh("truncated");
    let name = &files[0];
    let shard = dir.join(name);
    let bytes = fs::read(&shard).unwrap();
    fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    let want = format!(
        "{name}: {} bytes, the manifest says {}",
        bytes.len() - 100,
        bytes.len()
    );
    assert!(lines.contains(&want), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{name}: cannot open"))),
        "{lines:?}"
    );

    // A missing shard and an unknown file.
    let dir = fresh("missing");
    let name = &files[3];
    fs::remove_file(dir.join(name)).unwrap();
    fs::write(dir.join("notes.txt"), b"stray").unwrap();
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        [
            "notes.txt: unknown file: not named by the manifest".to_string(),
            format!("{name}: missing: named by the manifest, not on disk"),
        ]
    );

    // Wrong counts in the manifest: a shard's rows, a split's tokens.
    let dir = fresh("counts");
    let mut m = manifest(&dir);
    let rows = m["shards"][1]["rows"].as_u64().unwrap();
    m["shards"][1]["rows"] = (rows + 1).into();
    let tokens = m["totals"]["val"]["tokens"].as_u64().unwrap();
    m["totals"]["val"]["tokens"] = (tokens + 5).into();
    let file = m["shards"][1]["file"].as_str().unwrap().to_string();
    set_manifest(&dir, &m);
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        [
            format!("{file}: {rows} rows, the manifest says {}", rows + 1),
            format!(
                "manifest.json: val shards hold {tokens} tokens, the totals say {}",
                tokens + 5
            ),
        ]
    );

    // Token ids past the vocabulary: shrink the vocabulary the manifest claims.
    let dir = fresh("vocab");
    let mut m = manifest(&dir);
    m["tokenizer"]["vocab_size"] = 100.into();
    set_manifest(&dir, &m);
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    assert!(
        lines.iter().any(|l| l.starts_with("tokenizer.json: ")),
        "{lines:?}"
    );
    let past: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("token id(s) at or past the vocabulary size 100"))
        .collect();
    assert!(!past.is_empty(), "{lines:?}");
    assert!(
        past.iter().all(|l| l.contains(".parquet: row group ")),
        "{past:?}"
    );
}

/// The shard files in manifest order.
fn shard_files(store: &Path) -> Vec<String> {
    let m = manifest(store);
    let shards = m["shards"].as_array().unwrap();
    shards
        .iter()
        .map(|s| s["file"].as_str().unwrap().to_string())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn bad_usage_exits_2_and_a_missing_store_exits_1() {
    assert_eq!(mamba(&["inspect"]).status.code(), Some(2));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for args in [
        vec!["inspect", s(dir), "--verify", "--html", "x.html"],
        vec!["inspect", s(dir), "--summary", "--sample", "2"],
        vec!["inspect", s(dir), "--seq-len", "0"],
    ] {
        assert_eq!(mamba(&args).status.code(), Some(2), "{args:?}");
    }
    let out = mamba(&["inspect", s(dir)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest.json is missing"), "{err}");
    let out = mamba(&["inspect", s(dir), "--verify"]);
    assert_eq!(out.status.code(), Some(1));
}
