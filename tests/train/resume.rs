//! A run killed mid-way and resumed with `--resume` logs exactly the losses of the run that
//! was never interrupted.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn killed_then_resumed_run_reproduces_the_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = ingest(tmp.path(), 512);
    let whole = tmp.path().join("whole");
    ok(&train_args(&shards, &whole, "30"));
    let want = losses(&metrics(&whole));
    assert_eq!(want.len(), 30);

    let cut = tmp.path().join("cut");
    let mut child = bin()
        .args(train_args(&shards, &cut, "30"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !cut.join("step-000005").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = metrics(&cut).len();
    assert!(
        !cut.join("final").exists(),
        "the run finished before it could be killed"
    );

    let mut args = train_args(&shards, &cut, "30");
    args.push("--resume");
    ok(&args);
    let lines = metrics(&cut);
    let resumed = losses(&lines[before..]);
    assert!(!resumed.is_empty());
    let first = resumed[0].0;
    assert_eq!(
        first % 5,
        1,
        "resumed at step {first}, not after a checkpoint"
    );
    assert_eq!(resumed.last().unwrap().0, 30);
    for (step, loss) in resumed {
        assert_eq!(loss, want[step as usize - 1].1, "step {step}");
    }
}
