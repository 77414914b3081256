//! Partitioned ingest (`--part I/N`, `--merge`) and `mamba tokenizer train`: parts merged
//! must be the store one run over the whole folder makes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{bin, data_with_copies, files, mamba, manifest, ok, repo, s, SMALL_SHARDS};

fn mamba_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(bin());
    for name in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.args(args).output().expect("run mamba")
}

/// The one line a bad call prints, after checking it exits with status 2.
fn usage_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

/// Small shards, and a val split large enough to hold several documents.
fn flags() -> Vec<&'static str> {
    [&SMALL_SHARDS[..], &["--val-fraction", "0.2"]].concat()
}

/// The sample corpus with copies of some of its files (the same document in several places,
/// which parts can only find out about at the merge), and a tokenizer trained on it.
fn corpus(tmp: &Path) -> (PathBuf, PathBuf) {
    let data = tmp.join("data");
    data_with_copies(&data);
    let tokenizer = tmp.join("tokenizer.json");
    train_tokenizer(&data, &tokenizer, &["--vocab-size", "1000"]);
    (data, tokenizer)
}

/// `mamba tokenizer train` with the chunking of [`flags`] and `extra` flags; its stdout.
fn train_tokenizer(data: &Path, out: &Path, extra: &[&str]) -> String {
    let args = [
        "tokenizer",
        "train",
        s(data),
        "-o",
        s(out),
        "--chunk-bytes",
        "512",
    ];
    ok(&mamba(&[&args[..], extra].concat()))
}

fn ingest_part(data: &Path, out: &Path, tokenizer: &Path, part: &str) -> Output {
    let mut args = vec![
        "ingest",
        "--quiet",
        s(data),
        s(out),
        "--tokenizer",
        s(tokenizer),
    ];
    if !part.is_empty() {
        args.extend(["--part", part]);
    }
    args.extend(flags());
    mamba(&args)
}

#[test]
fn three_parts_merged_are_the_store_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, tokenizer) = corpus(tmp.path());
    let one = tmp.path().join("one");
    ok(&ingest_part(&data, &one, &tokenizer, ""));

    let parts: Vec<PathBuf> = (1..=3)
        .map(|i| tmp.path().join(format!("part-{i}")))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        ok(&ingest_part(
            &data,
            part,
            &tokenizer,
            &format!("{}/3", i + 1),
        ));
    }
    let of_parts = |key: &str| -> u64 {
        let total = |p: &PathBuf| manifest(p)["totals"][key].as_u64().unwrap();
        parts.iter().map(total).sum()
    };
    let single = manifest(&one);
    // Every file is read by exactly one part, and each part read some.
    let files_of = |m: &serde_json::Value| {
        let f = &m["totals"]["files"];
        ["ingested", "skipped", "failed"]
            .map(|k| f[k].as_u64().unwrap())
            .iter()
            .sum::<u64>()
    };
    let part_files: Vec<u64> = parts.iter().map(|p| files_of(&manifest(p))).collect();
    assert!(part_files.iter().all(|&n| n > 0), "{part_files:?}");
    assert_eq!(part_files.iter().sum::<u64>(), files_of(&single));
    // Some copies landed in different parts: only the merge can drop them.
    assert!(
        of_parts("duplicates") < single["totals"]["duplicates"].as_u64().unwrap(),
        "no duplicate across parts; the test corpus no longer exercises the merge's dedup"
    );

    let merged = tmp.path().join("merged");
    let mut args = vec!["ingest", "--merge", s(&merged)];
    args.extend(parts.iter().rev().map(|p| s(p)));
    ok(&mamba(&args));
    let (a, b) = (files(&one), files(&merged));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    assert!(a.iter().filter(|(n, _)| n.ends_with(".parquet")).count() > 2);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{name} of the merged parts differs from the single run's"
        );
    }
    // Training on a part says that it is one.
    let ck = tmp.path().join("ck");
    let train = [
        "train",
        "--shards",
        s(&parts[0]),
        "--checkpoint-dir",
        s(&ck),
        "--max-steps",
        "1",
    ];
    let small = [
        "--model-size",
        "tiny",
        "--seq-len",
        "32",
        "--batch-size",
        "1",
        "-q",
    ];
    let said = ok(&mamba(&[&train[..], &small].concat()));
    assert!(
        said.contains("this store is part 1/3 of a partitioned ingest"),
        "{said}"
    );
    let verify = mamba(&["inspect", s(&merged), "--verify"]);
    ok(&verify);
    assert!(String::from_utf8_lossy(&verify.stderr).starts_with("ok: "));
}

#[test]
fn a_slurm_array_task_is_its_part() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, tokenizer) = corpus(tmp.path());
    let (flag, env) = (tmp.path().join("flag"), tmp.path().join("env"));
    ok(&ingest_part(&data, &flag, &tokenizer, "2/3"));
    let mut args = vec![
        "ingest",
        "--quiet",
        s(&data),
        s(&env),
        "--tokenizer",
        s(&tokenizer),
    ];
    args.extend(flags());
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "5"),
        ("SLURM_ARRAY_TASK_MIN", "4"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    let run = mamba_with_env(&args, &slurm);
    ok(&run);
    assert!(String::from_utf8_lossy(&run.stderr).contains("part 2/3"));
    assert_eq!(files(&flag), files(&env));
    // Without a tokenizer a part cannot run: the message says how to make one.
    let untokenized = mamba_with_env(&["ingest", s(&data), s(&tmp.path().join("x"))], &slurm);
    assert!(usage_error(&untokenized).contains("mamba tokenizer train"));
}

#[test]
fn parts_that_do_not_belong_together_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, tokenizer) = corpus(tmp.path());
    let part = |name: &str, part: &str| {
        let dir = tmp.path().join(name);
        ok(&ingest_part(&data, &dir, &tokenizer, part));
        dir
    };
    let (p1, p2) = (part("p1", "1/2"), part("p2", "2/2"));
    let merge = |parts: &[&Path]| {
        let out = tmp.path().join("merged");
        let mut args = vec!["ingest", "--merge", s(&out)];
        args.extend(parts.iter().map(|p| s(p)));
        usage_error(&mamba(&args))
    };
    assert!(merge(&[&p1]).contains("part 2/2 is missing"));
    assert!(merge(&[&p1, &p1, &p2]).contains("given twice"));
    let other = part("other", "2/3");
    assert!(merge(&[&p1, &other]).contains("a part of 2 but"));
    let whole = part("whole", "");
    assert!(merge(&[&p1, &whole]).contains("not a part of a partitioned run"));

    // A part made with another tokenizer or other flags.
    let retrained = tmp.path().join("other-tokenizer.json");
    train_tokenizer(&data, &retrained, &["--vocab-size", "900"]);
    let p2b = tmp.path().join("p2b");
    ok(&ingest_part(&data, &p2b, &retrained, "2/2"));
    assert!(merge(&[&p1, &p2b]).contains("different tokenizers"));
    let p2c = tmp.path().join("p2c");
    let mut args = vec![
        "ingest",
        "-q",
        s(&data),
        s(&p2c),
        "--tokenizer",
        s(&tokenizer),
    ];
    args.extend(["--part", "2/2", "--chunk-bytes", "600"]);
    ok(&mamba(&args));
    assert!(merge(&[&p1, &p2c]).contains("different chunk_bytes"));
    // A part whose files were changed after it was made.
    fs::write(p1.join("tokenizer.json"), b"{}").unwrap();
    assert!(merge(&[&p1, &p2]).contains("does not match its manifest's sha256"));
    fs::remove_file(p2.join("part.jsonl")).unwrap();
    assert!(merge(&[&p2, &p1]).contains("cannot read part.jsonl"));

    // A part of a folder that changed in between (or of other inputs).
    let before = part("p1c", "1/2");
    fs::write(
        data.join("notes/added-later.md"),
        "A note added after part 1 was made.\n",
    )
    .unwrap();
    let p2d = part("p2d", "2/2");
    assert!(merge(&[&before, &p2d]).contains("walked different files"));

    for bad in ["0/3", "4/3", "2", "a/b"] {
        let out = ingest_part(&data, &tmp.path().join("bad"), &tokenizer, bad);
        assert!(usage_error(&out).contains("I/N"), "{bad}");
    }
}

#[test]
fn tokenizer_train_gives_what_ingest_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = repo().join("data");
    let tokenizer = tmp.path().join("tokenizer.json");
    train_tokenizer(&data, &tokenizer, &["--vocab-size", "1200"]);
    let shards = tmp.path().join("shards");
    let ingest = [
        "ingest",
        "-q",
        s(&data),
        s(&shards),
        "--vocab-size",
        "1200",
        "--chunk-bytes",
        "512",
    ];
    ok(&mamba(&ingest));
    assert!(
        fs::read(&tokenizer).unwrap() == fs::read(shards.join("tokenizer.json")).unwrap(),
        "tokenizer train and ingest trained different tokenizers on the same files"
    );
}

#[test]
fn a_tokenizer_sample_is_about_its_size_and_the_same_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    // Forty files of 100 KB: a 1 MB sample is about a quarter of them.
    let data = tmp.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let words = [
        "river", "stone", "lantern", "orbit", "meadow", "copper", "harbor", "quartz",
    ];
    for f in 0..40usize {
        let mut text = String::new();
        let mut i = f;
        while text.len() < 100_000 {
            i = i
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                >> 1;
            text.push_str(words[i % words.len()]);
            text.push_str(if i % 11 == 0 { ".\n" } else { " " });
        }
        fs::write(data.join(format!("doc-{f:02}.txt")), text).unwrap();
    }
    let train = |name: &str| {
        let out = tmp.path().join(name);
        let said = train_tokenizer(&data, &out, &["--vocab-size", "300", "--sample-mb", "1"]);
        (said, fs::read(&out).unwrap())
    };
    let (said, first) = train("a.json");
    let (_, second) = train("b.json");
    assert!(first == second, "two samples of the same files differ");
    let percent: f64 = said
        .split(" (a ")
        .nth(1)
        .and_then(|t| t.split('%').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no sample share in {said:?}"));
    assert!((20.0..30.0).contains(&percent), "{said}");
}
