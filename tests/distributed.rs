//! Data-parallel training under `mpirun -np 2` (build with `--features mpi`; needs Open MPI's
//! `mpirun`): two ranks train like one process with twice the batch, a run resumes at another
//! rank count, and a rank that dies stops the job.
#![cfg(feature = "mpi")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mamba")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `mpirun -np N mamba ARGS`, two ranks on this machine's cores whatever their number.
fn mpirun(n: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &n.to_string(), bin()])
        .args(args)
        // Tests may run as root (in CI they do); Open MPI refuses that unless told.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

/// A shard store of the sample corpus, made once per test.
fn shards(tmp: &Path) -> PathBuf {
    let out = tmp.join("shards");
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let ingest = [
        "ingest",
        "-q",
        s(&data),
        s(&out),
        "--vocab-size",
        "1000",
        "--val-fraction",
        "0.2",
    ];
    ok(&Command::new(bin()).args(ingest).output().unwrap());
    out
}

/// Six steps, a checkpoint and an eval at step 3.
const SHORT: [&str; 6] = ["--max-steps", "6", "--save-every", "3", "--eval-every", "3"];

/// Flags of a run of `steps` (e.g. [`SHORT`]); `batch` is per rank.
fn train_args<'a>(
    shards: &'a Path,
    ck: &'a Path,
    batch: &'a str,
    steps: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "-q",
        "--shards",
        s(shards),
        "--checkpoint-dir",
        s(ck),
    ];
    args.extend([
        "--model-size",
        "tiny",
        "--seq-len",
        "64",
        "--batch-size",
        batch,
    ]);
    args.extend(["--lr", "2e-3", "--warmup-steps", "2", "--seed", "7"]);
    args.extend(steps);
    args
}

/// (step, loss) pairs.
type Curve = Vec<(u64, f64)>;

/// (step, loss) of every step record and (step, val loss) of every eval record.
fn losses(ck: &Path) -> (Curve, Curve) {
    let text = fs::read_to_string(ck.join("metrics.jsonl")).unwrap();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = r["step"].as_u64().unwrap();
        if let Some(l) = r["loss"].as_f64() {
            train.push((step, l));
        }
        if let Some(l) = r["val_loss"].as_f64() {
            val.push((step, l));
        }
    }
    (train, val)
}

fn assert_close(a: &[(u64, f64)], b: &[(u64, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for ((sa, la), (sb, lb)) in a.iter().zip(b) {
        assert_eq!(sa, sb, "{what}");
        let rel = (la - lb).abs() / la.abs().max(1e-12);
        assert!(
            rel < 1e-6,
            "{what} at step {sa}: {la} vs {lb} ({rel:.2e} relative)"
        );
    }
}

#[test]
fn two_ranks_train_like_one_process_with_twice_the_batch_and_resume_at_any_count() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = shards(tmp.path());
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(&Command::new(bin())
        .args(train_args(&shards, &one, "4", &SHORT))
        .output()
        .unwrap());
    let run = mpirun(2, &train_args(&shards, &two, "2", &SHORT))
        .output()
        .unwrap();
    ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("batch 2 x 2 ranks"), "{stdout}");
    // Rank 0 alone logs: one line per step.
    assert_eq!(stdout.matches("step      1/6").count(), 1, "{stdout}");
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.0.len(), 6);
    assert_close(&a.0, &b.0, "train loss");
    assert_close(&a.1, &b.1, "val loss");
    // The global batch is 8 windows, not 4, so the losses are not the same as a run of one
    // process at the per-rank batch (the comparison above would catch a rank training alone).
    let half = tmp.path().join("half");
    ok(&Command::new(bin())
        .args(train_args(&shards, &half, "2", &SHORT))
        .output()
        .unwrap());
    let different = losses(&half)
        .0
        .iter()
        .zip(&a.0)
        .any(|(x, y)| (x.1 - y.1).abs() > 1e-4);
    assert!(different, "a batch of 2 gave the losses of a batch of 4");

    // Resume the one-process run's step 3 on two ranks, and the two ranks' step 3 on one
    // process: both continue exactly as the uninterrupted run.
    for (from, ranks, batch, name) in [
        (&one, 2, "2", "one-then-two"),
        (&two, 1, "4", "two-then-one"),
    ] {
        let ck = tmp.path().join(name);
        let step3 = from.join("step-000003");
        let mut args = train_args(&shards, &ck, batch, &SHORT);
        args.extend(["--resume", s(&step3)]);
        let out = match ranks {
            1 => Command::new(bin()).args(&args).output().unwrap(),
            n => mpirun(n, &args).output().unwrap(),
        };
        ok(&out);
        assert_close(&a.0[3..], &losses(&ck).0, name);
    }
    // Another global batch would see other batches: refused.
    let other = tmp.path().join("other");
    let mut args = train_args(&shards, &other, "4", &SHORT);
    let step3 = two.join("step-000003");
    args.extend(["--resume", s(&step3)]);
    let refused = mpirun(2, &args).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("global batch (batch_size x ranks) is 4 in the checkpoint but 8"),
        "{stderr}"
    );
}

/// The pid of rank `rank` of the processes whose command line names `marker`.
fn rank_pid(marker: &str, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    let fields = |bytes: Vec<u8>| -> Vec<String> {
        let parts = bytes
            .split(|&b| b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned());
        parts.collect()
    };
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fields(fs::read(e.path().join("cmdline")).ok()?);
        let environ = fields(fs::read(e.path().join("environ")).ok()?);
        let ours = cmdline.first().is_some_and(|c| c == bin())
            && cmdline.iter().any(|a| a.contains(marker))
            && environ.contains(&want);
        ours.then_some(pid)
    })
}

#[test]
fn a_rank_that_dies_stops_the_job_which_resumes_from_its_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = shards(tmp.path());
    let ck = tmp.path().join("killed");
    let long = [
        "--max-steps",
        "100000",
        "--save-every",
        "2",
        "--eval-every",
        "100000",
    ];
    let args = train_args(&shards, &ck, "2", &long);
    let mut job = mpirun(2, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ck.join("step-000004").join("trainer_state.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 min"
        );
        assert!(
            job.try_wait().unwrap().is_none(),
            "the job ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rank_pid(s(&ck), 1).expect("rank 1 among the processes");
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // The job ends by itself (no rank waits forever for the dead one) and names the rank.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = job.kill();
            panic!("the job still runs 60 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut job.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("rank 1"), "{stderr}");

    // Resume from the last checkpoint it saved, for two more steps.
    let latest = fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("trainer_state.json").exists())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("step-")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap();
    let until = (latest + 2).to_string();
    let mut args = train_args(
        &shards,
        &ck,
        "2",
        &["--max-steps", &until, "--save-every", "2"],
    );
    args.push("--resume");
    let resumed = mpirun(2, &args).output().unwrap();
    ok(&resumed);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        stdout.contains(&format!("resumed at step {latest}")),
        "{stdout}"
    );
    assert!(ck.join("final").join("trainer_state.json").exists());
}
