//! End-to-end tests of `mamba eval`: on the val split it gives the number the trainer's
//! periodic eval logged for the same tokens (at any batch size), it scores text folders with
//! the checkpoint's tokenizer, and bad input is one line with exit status 2.

// The train tests' helpers (ingest of the sample corpus, runs, metrics); not all are used here.
#[allow(dead_code)]
#[path = "train/common.rs"]
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// A 6-step tiny run evaluating 3 batches of 4 x 64 tokens at steps 3 and 6.
fn trained(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (shards, ckpt, _) = trained_saying(dir);
    (shards, ckpt)
}

/// [`trained`], with what the trainer printed.
fn trained_saying(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let shards = ingest(dir, 512);
    let ckpt = dir.join("ckpt");
    let o = ok(&[
        "train",
        "--shards",
        s(&shards),
        "--checkpoint-dir",
        s(&ckpt),
        "--model-size",
        "tiny",
        "--max-steps",
        "6",
        "--seq-len",
        "64",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--warmup-steps",
        "2",
        "--eval-every",
        "3",
        "--eval-batches",
        "3",
        "--save-every",
        "3",
        "-q",
    ]);
    (shards, ckpt, String::from_utf8_lossy(&o.stdout).to_string())
}

fn eval_json(args: &[&str]) -> Value {
    let mut a = vec!["eval", "--json", "-q"];
    a.extend(args);
    serde_json::from_slice(&ok(&a).stdout).unwrap()
}

#[test]
fn eval_equals_the_trainers_eval_and_scores_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, ckpt) = trained(tmp.path());
    let logged = val_losses(&metrics(&ckpt));
    assert_eq!(logged.len(), 2);
    for (dir, want) in [("step-000003", logged[0]), ("final", logged[1])] {
        let ck = ckpt.join(dir);
        for bs in ["4", "1", "3"] {
            let r = eval_json(&[
                "--checkpoint",
                s(&ck),
                "--shards",
                s(&shards),
                "--max-tokens",
                "768",
                "--batch-size",
                bs,
            ]);
            let loss = r["loss"].as_f64().unwrap();
            assert!(
                (loss - want).abs() < 1e-5,
                "{dir} batch {bs}: eval {loss}, trainer {want}"
            );
            assert_eq!(r["tokens"], 768);
            assert_eq!(r["windows"], 12);
            let ppl = r["perplexity"].as_f64().unwrap();
            assert!((ppl - loss.exp()).abs() < 1e-9 * ppl);
        }
    }
    // The whole split: more tokens, and a different number than the first 768.
    let all = eval_json(&[
        "--checkpoint",
        s(&ckpt.join("final")),
        "--shards",
        s(&shards),
    ]);
    assert!(all["tokens"].as_u64().unwrap() > 768);
    assert_eq!(
        all["tokens"].as_u64().unwrap(),
        all["windows"].as_u64().unwrap() * 64
    );
    // Text: the notes folder, a file a document; the line form names the folder.
    let notes = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/notes");
    let t = eval_json(&["--checkpoint", s(&ckpt.join("final")), "--text", s(&notes)]);
    let loss = t["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    let line = ok(&[
        "eval",
        "--checkpoint",
        s(&ckpt.join("final")),
        "--text",
        s(&notes),
    ]);
    let line = String::from_utf8_lossy(&line.stdout).to_string();
    assert!(
        line.contains("notes (4 files)") && line.contains(&format!("loss {loss:.4}")),
        "{line}"
    );
}

/// The trainer's last eval and `mamba eval` over the tokens that eval says it covered are one
/// measurement: the same number, and both lines say it is the first 768 tokens of the val split,
/// not all of it (which `mamba eval` scores without `--max-tokens`, and says so).
#[test]
fn the_trainers_final_eval_and_eval_over_its_tokens_agree_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, ckpt, said) = trained_saying(tmp.path());
    let last = metrics(&ckpt)
        .into_iter()
        .rfind(|l| l.get("val_loss").is_some())
        .unwrap();
    assert_eq!(last["step"], 6);
    assert_eq!(last["val_tokens"], 3 * 4 * 64);
    let covers = "the first 768 tokens of the val split (3 batches)";
    let want = last["val_loss"].as_f64().unwrap();
    assert!(
        said.contains(&format!("eval      6 | val loss {want:.4} | val ppl ")),
        "{said}"
    );
    assert!(
        said.lines()
            .filter(|l| l.starts_with("eval "))
            .all(|l| l.ends_with(covers)),
        "{said}"
    );
    let fin = ckpt.join("final");
    let max = last["val_tokens"].to_string();
    let covering = [
        "--checkpoint",
        s(&fin),
        "--shards",
        s(&shards),
        "--max-tokens",
        &max,
    ];
    let same = eval_json(&covering);
    let loss = same["loss"].as_f64().unwrap();
    assert!((loss - want).abs() < 1e-6, "eval {loss}, trainer {want}");
    assert_eq!(same["tokens"], last["val_tokens"]);
    assert_eq!(same["whole"], false);
    let line = ok(&[&["eval", "-q"][..], &covering].concat());
    let line = String::from_utf8_lossy(&line.stdout).to_string();
    assert!(
        line.contains(": the first 768 tokens, in 12 windows of 64 | ")
            && line.contains(&format!("loss {loss:.4}")),
        "{line}"
    );
    // Without --max-tokens: the whole split, said as such.
    let all = ok(&[
        "eval",
        "-q",
        "--checkpoint",
        s(&fin),
        "--shards",
        s(&shards),
    ]);
    let all = String::from_utf8_lossy(&all.stdout).to_string();
    assert!(
        all.contains(": all ") && !all.contains("768 tokens"),
        "{all}"
    );
}

/// The sample corpus ingested with the default val share has a val split smaller than one
/// training batch; the trainer evaluates it with a shorter window, and `eval` must score the
/// same windows to the same number.
#[test]
fn a_val_split_smaller_than_a_batch_is_scored_as_the_trainer_scored_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let shards = tmp.path().join("shards");
    ok(&["ingest", s(&data), s(&shards), "--vocab-size", "400", "-q"]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(shards.join("manifest.json")).unwrap()).unwrap();
    let val_tokens = manifest["totals"]["val"]["tokens"].as_u64().unwrap();
    assert!(val_tokens > 0 && val_tokens < 4 * 65, "{val_tokens}");
    // Windows of 64 tokens, batches of 4: more than the split holds. Evals at step 5.
    let ckpt = tmp.path().join("ckpt");
    ok(&train_args(&shards, &ckpt, "5"));
    let logged = val_losses(&metrics(&ckpt));
    assert_eq!(logged.len(), 1, "the trainer evaluated the short split");
    // The whole split, in the trainer's shorter windows.
    let fin = ckpt.join("final");
    let all = eval_json(&["--checkpoint", s(&fin), "--shards", s(&shards)]);
    let seq_len = all["seq_len"].as_u64().unwrap();
    let windows = all["windows"].as_u64().unwrap();
    assert!(seq_len < 64 && windows * seq_len <= val_tokens, "{all}");
    // The trainer's 3 eval batches of one window: the same number.
    let max = (3 * seq_len).to_string();
    let r = eval_json(&[
        "--checkpoint",
        s(&fin),
        "--shards",
        s(&shards),
        "--max-tokens",
        &max,
    ]);
    let loss = r["loss"].as_f64().unwrap();
    assert!(
        (loss - logged[0]).abs() < 1e-5,
        "eval {loss}, trainer {}",
        logged[0]
    );
}

#[test]
fn bad_input_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (shards, ckpt) = trained(tmp.path());
    let other = ingest(tmp.path(), 300);
    let fin = ckpt.join("final");
    let tiny = tmp.path().join("tiny.txt");
    std::fs::write(&tiny, "a").unwrap();
    let missing = tmp.path().join("nope");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--checkpoint", s(&missing), "--shards", s(&shards)],
            "not found",
        ),
        (
            vec!["--checkpoint", s(&fin), "--shards", s(&other)],
            "not the tokenizer",
        ),
        (
            vec!["--checkpoint", s(&fin), "--text", s(&tiny)],
            "nothing to evaluate",
        ),
        (
            vec!["--checkpoint", s(&fin), "--text", s(&missing)],
            "not found",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["eval"];
        a.extend(&args);
        let o = run(&a);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{a:?}: {err}");
        assert!(err.contains(want), "{a:?}: {err}");
    }
}
