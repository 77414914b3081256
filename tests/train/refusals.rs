//! Bad inputs: out-of-range flags and config values (exit 2, one line naming value and range),
//! a damaged shard (named), a checkpoint or model of another tokenizer (both values shown),
//! and CUDA asked of a CPU build.

use crate::common::*;

fn one_line_error(o: &std::process::Output, code: i32, want: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    for w in want {
        assert!(err.contains(w), "`{w}` missing from: {err}");
    }
}

#[test]
fn bad_settings_exit_2_naming_value_and_range() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--batch-size", "0"],
            vec!["batch_size = 0", "1..=4096"],
        ),
        (vec!["--vram", "10gb"], vec!["10gb", "12gb", "48gb"]),
        (vec!["--model-size", "huge"], vec!["huge", "tiny"]),
        (vec!["--precision", "fp8"], vec!["fp8", "bf16"]),
        (vec!["--grad-clip", "0"], vec!["grad_clip = 0", "> 0"]),
        (vec!["--device", "tpu"], vec!["tpu", "cuda:N"]),
    ];
    for (flags, want) in cases {
        let mut args = vec!["train", "--shards", s(d), "--checkpoint-dir", s(d)];
        args.extend(flags);
        one_line_error(&run(&args), 2, &want);
    }
    // A config file with a bad value and one with an unknown key.
    let file = d.join("bad.json");
    std::fs::write(&file, "{\"lr\": 5.0}").unwrap();
    one_line_error(
        &run(&["train", "--dry-run", "--config", s(&file)]),
        2,
        &["lr = 5", "(0, 1]"],
    );
    std::fs::write(&file, "{\"learning_rate\": 0.1}").unwrap();
    one_line_error(
        &run(&["train", "--dry-run", "--config", s(&file)]),
        2,
        &["learning_rate"],
    );
}

#[test]
fn cuda_without_the_cuda_build_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 512);
    let ckpt = tmp.path().join("c");
    let mut args = train_args(&shards, &ckpt, "2");
    args.extend(["--device", "cuda:0"]);
    one_line_error(&run(&args), 2, &["cuda:0", "no CUDA support"]);
}

#[test]
fn damaged_shards_and_foreign_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 512);
    let other = ingest(tmp.path(), 300);
    let ckpt = tmp.path().join("c");
    ok(&train_args(&shards, &ckpt, "5"));

    // Resuming on a store of another tokenizer: both checksums shown.
    let mut args = train_args(&other, &ckpt, "10");
    args.push("--resume");
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    let m = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
    };
    let (a, b) = (m(&shards), m(&other));
    let (sha_a, sha_b) = (
        a["tokenizer"]["sha256"].as_str().unwrap(),
        b["tokenizer"]["sha256"].as_str().unwrap(),
    );
    let err = stderr(&o);
    assert!(
        err.contains(sha_a) && err.contains(sha_b) && err.contains("tokenizer"),
        "{err}"
    );

    // --init with a model of another tokenizer (512 rows, more than the store's 300 ids):
    // the rows would do, the tokenizers differ; both files named.
    let (c2, fin) = (tmp.path().join("c2"), ckpt.join("final"));
    let mut args = train_args(&other, &c2, "2");
    args.extend(["--init", s(&fin)]);
    let err = stderr(&run(&args));
    assert!(
        err.contains("tokenize differently: they differ in model")
            && err.contains(s(&fin.join("tokenizer.json")))
            && err.contains(s(&other.join("tokenizer.json"))),
        "{err}"
    );
    // --init with a model of fewer rows than the store has ids: both sizes shown.
    let c3 = tmp.path().join("c3");
    ok(&train_args(&other, &c3, "1"));
    let small = c3.join("final");
    let mut args = train_args(&shards, &c2, "2");
    args.extend(["--init", s(&small)]);
    let err = stderr(&run(&args));
    assert!(
        err.contains(
            "the model has 300 embedding rows but the shard store's tokenizer has 512 tokens"
        ),
        "{err}"
    );

    // A shard flipped by one byte, then truncated: the file is named.
    let shard = std::fs::read_dir(&shards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("train-")
        })
        .unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[200] ^= 0x55;
    std::fs::write(&shard, &bytes).unwrap();
    let err = stderr(&run(&train_args(&shards, &tmp.path().join("c3"), "2")));
    assert!(err.contains("checksum") && err.contains(s(&shard)), "{err}");
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
    let err = stderr(&run(&train_args(&shards, &tmp.path().join("c3"), "2")));
    assert!(
        err.contains("truncated") && err.contains(s(&shard)),
        "{err}"
    );
    std::fs::remove_file(&shard).unwrap();
    let err = stderr(&run(&train_args(&shards, &tmp.path().join("c3"), "2")));
    assert!(err.contains("missing") && err.contains(s(&shard)), "{err}");
}
