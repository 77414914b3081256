//! Data-parallel training under `mpirun -np 2` (build with `--features mpi`; needs Open MPI's
//! `mpirun`): two ranks train like one process with twice the batch, a run resumes at another
//! rank count, and a rank that dies stops the job.
#![cfg(feature = "mpi")]

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "train/common.rs"]
mod common;
use common::*;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_mamba")
}

/// `mpirun` with the environment of the train tests' runs (one thread per rank), allowed to
/// put more ranks than cores on this machine.
fn mpirun() -> Command {
    let envs: Vec<_> = bin()
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let mut c = Command::new("mpirun");
    c.envs(envs)
        .arg("--oversubscribe")
        // Tests may run as root (in CI they do); Open MPI refuses that unless told.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

/// `mamba ARGS` on `ranks` ranks (under mpirun past one).
fn launch(ranks: usize, args: &[&str]) -> Command {
    let mut c = match ranks {
        1 => bin(),
        n => {
            let mut c = mpirun();
            c.args(["-np", &n.to_string(), exe()]);
            c
        }
    };
    c.args(args);
    c
}

fn succeeded(out: Output) -> Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// The train tests' flags with `batch` windows per rank and `steps` steps (a checkpoint and an
/// eval every 5).
fn args<'a>(shards: &'a Path, ck: &'a Path, batch: &'a str, steps: &'a str) -> Vec<&'a str> {
    let mut args = train_args(shards, ck, steps);
    let at = args.iter().position(|a| *a == "--batch-size").unwrap();
    args[at + 1] = batch;
    args
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
    let shards = ingest(tmp.path(), 1000);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(&args(&shards, &one, "4", "10"));
    let run = succeeded(launch(2, &args(&shards, &two, "2", "10")).output().unwrap());
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(said.contains("batch 2 x 2 ranks"), "{said}");
    // Rank 0 alone writes: one record per step and eval.
    let (a, b) = (metrics(&one), metrics(&two));
    assert_eq!(losses(&a).len(), 10);
    assert_close(&losses(&a), &losses(&b), "train loss");
    let (va, vb) = (val_losses(&a), val_losses(&b));
    assert_eq!(va.len(), 2);
    let with_steps = |v: &[f64]| v.iter().map(|&x| (0, x)).collect::<Vec<_>>();
    assert_close(&with_steps(&va), &with_steps(&vb), "val loss");
    // A rank training alone on a batch of 2 would not give the losses of a batch of 4.
    let half = tmp.path().join("half");
    ok(&args(&shards, &half, "2", "10"));
    let differ = losses(&metrics(&half))
        .iter()
        .zip(losses(&a))
        .any(|(x, y)| (x.1 - y.1).abs() > 1e-4);
    assert!(differ, "a batch of 2 gave the losses of a batch of 4");

    // Resume the one process's step 5 on two ranks, and the two ranks' step 5 on one process:
    // both go on exactly as the uninterrupted run.
    for (from, ranks, batch, name) in [
        (&one, 2, "2", "one-then-two"),
        (&two, 1, "4", "two-then-one"),
    ] {
        let ck = tmp.path().join(name);
        let step5 = from.join("step-000005");
        let mut resume = args(&shards, &ck, batch, "10");
        resume.extend(["--resume", s(&step5)]);
        succeeded(launch(ranks, &resume).output().unwrap());
        assert_close(&losses(&a)[5..], &losses(&metrics(&ck)), name);
    }
    // Another global batch would see other batches: refused, naming it.
    let other = tmp.path().join("other");
    let step5 = two.join("step-000005");
    let mut resume = args(&shards, &other, "4", "10");
    resume.extend(["--resume", s(&step5)]);
    let refused = launch(2, &resume).output().unwrap();
    assert!(!refused.status.success());
    let e = stderr(&refused);
    assert!(
        e.contains("global batch (batch_size x ranks) is 4 in the checkpoint but 8"),
        "{e}"
    );
}

/// The pid of rank `rank` among the processes whose command line names `marker`.
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
        let ours = cmdline.first().is_some_and(|c| c == exe())
            && cmdline.iter().any(|a| a.contains(marker))
            && environ.contains(&want);
        ours.then_some(pid)
    })
}

#[test]
fn a_rank_that_dies_stops_the_job_which_resumes_from_its_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 1000);
    let ck = tmp.path().join("killed");
    let mut job = launch(2, &args(&shards, &ck, "2", "100000"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ck.join("step-000010").join("trainer_state.json").exists() {
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
    let mut said = String::new();
    std::io::Read::read_to_string(&mut job.stderr.take().unwrap(), &mut said).unwrap();
    assert!(said.contains("rank 1"), "{said}");

    // Resume from the last checkpoint it saved, for five more steps.
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
    let until = (latest + 5).to_string();
    let mut resume = args(&shards, &ck, "2", &until);
    resume.push("--resume");
    let resumed = succeeded(launch(2, &resume).output().unwrap());
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        said.contains(&format!("resumed at step {latest}")),
        "{said}"
    );
    assert!(ck.join("final").join("trainer_state.json").exists());
}

#[test]
fn ranks_with_different_settings_or_states_are_refused_and_every_rank_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 1000);
    // One launch, two programs (`mpirun -np 1 A : -np 1 B`); the error that must come out.
    let mixed = |name: &str, a: Vec<&str>, b: Vec<&str>, error: &str| {
        let mut all = vec!["-np", "1", exe()];
        all.extend(&a);
        all.extend([":", "-np", "1", exe()]);
        all.extend(&b);
        let c = mpirun().args(&all).output().unwrap();
        assert!(!c.status.success(), "{name}");
        let e = stderr(&c);
        assert!(e.contains(error), "{name}: {e}");
    };
    let ck = tmp.path().join("mixed");
    let (a, b) = (args(&shards, &ck, "2", "10"), args(&shards, &ck, "3", "10"));
    mixed(
        "batch 2 and 3",
        a,
        b,
        "rank 1 resolved other settings than rank 0",
    );
    assert!(!ck.join("metrics.jsonl").exists(), "a rank trained");

    // Same settings, but rank 1 resumes a checkpoint that rank 0 does not see.
    let first = tmp.path().join("first");
    ok(&args(&shards, &first, "4", "5"));
    let final_dir = first.join("final");
    let mut resumed = args(&shards, &ck, "2", "10");
    resumed.extend(["--resume", s(&final_dir)]);
    let fresh = args(&shards, &ck, "2", "10");
    mixed(
        "fresh and resumed",
        fresh,
        resumed,
        "rank 1 starts from another state than rank 0",
    );
}
