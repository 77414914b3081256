//! `mamba inspect --verify` on an intact store and on stores corrupted one way each, and the
//! exit codes of bad usage.

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::store::*;

fn verify(store: &Path) -> (Option<i32>, Vec<String>) {
    let out = mamba(&["inspect", s(store), "--verify"]);
    let lines = stdout(&out).lines().map(String::from).collect();
    (out.status.code(), lines)
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

    // A shard replaced by a Parquet file of another schema.
    let dir = fresh("schema");
    let name = &files[1];
    python(
        "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
         pq.write_table(pa.table({'doc_id': pa.array([1, 2], pa.uint64())}), sys.argv[1])\n\
         print('null')",
        &[s(&dir.join(name))],
    );
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    assert!(
        lines.iter().any(
            |l| l.starts_with(&format!("{name}: ")) && l.contains("not a shard of this schema")
        ),
        "{lines:?}"
    );

    // A manifest of another schema version.
    let dir = fresh("version");
    let mut m = manifest(&dir);
    m["schema_version"] = 99.into();
    set_manifest(&dir, &m);
    let out = mamba(&["inspect", s(&dir), "--verify"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest.json has schema version 99"), "{err}");

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

    // The end-of-text id inside documents (as a store encoded by a version that turned a
    // literal "<|endoftext|>" into it holds): the manifest names a token documents use.
    let dir = fresh("eos");
    let report = inspect_json(&dir, &[]);
    let common = report["data"]["top_tokens"][0]["id"].as_u64().unwrap();
    let mut m = manifest(&dir);
    m["tokenizer"]["eos_id"] = common.into();
    set_manifest(&dir, &m);
    let (code, lines) = verify(&dir);
    assert_eq!(code, Some(1));
    let inside: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("the end-of-text id {common} inside a document")))
        .collect();
    assert!(!inside.is_empty(), "{lines:?}");
    assert!(inside.iter().all(|l| l.contains(".parquet: row group ")));
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
