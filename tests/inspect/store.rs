//! Shared pieces of the `mamba inspect` tests: running the binary, a store of known
//! contents built by `mamba ingest`, the Python reference scripts, and JSON comparison.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn mamba(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mamba"))
        .args(args)
        .output()
        .expect("run mamba")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        stdout(out)
    );
}

/// Files skipped or failed by ingest, by design of [`write_corpus`].
pub const NOT_INGESTED: &[&str] = &["blob.dat", "broken.pdf", "empty.txt", "notes/short.txt"];

/// A corpus of known shape: a long markdown file (cut into many chunks with
/// `--chunk-bytes 256`), short text, code, configs, a 5-row dataset, a byte-identical copy,
/// an empty file, a binary file and a broken PDF.
pub fn write_corpus(root: &Path) {
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
pub fn build_store(tmp: &Path) -> (PathBuf, PathBuf) {
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

/// A reference script beside these tests.
pub fn script(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/inspect")
        .join(name);
    fs::read_to_string(path).unwrap()
}

pub fn python(script: &str, args: &[&str]) -> Value {
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

pub fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => false,
    }
}

/// Equal, with floats compared to a relative 1e-9.
pub fn same(got: &Value, want: &Value, at: &str) {
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

pub fn inspect_json(store: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", s(store), "--json"];
    args.extend_from_slice(extra);
    let out = mamba(&args);
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn manifest(store: &Path) -> Value {
    serde_json::from_slice(&fs::read(store.join("manifest.json")).unwrap()).unwrap()
}

/// The shard files in manifest order.
pub fn shard_files(store: &Path) -> Vec<String> {
    let m = manifest(store);
    let shards = m["shards"].as_array().unwrap();
    shards
        .iter()
        .map(|s| s["file"].as_str().unwrap().to_string())
        .collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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
