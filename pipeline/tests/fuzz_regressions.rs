//! Replays the inputs fuzzing found problems with (minimized, one file each under
//! `tests/fixtures/fuzz/TARGET/`) through the same entry points the fuzz targets drive, so a
//! fixed crash, hang or runaway allocation stays fixed. Each must finish quickly.

use std::path::Path;
use std::time::{Duration, Instant};

use mamba_pipeline::fuzzing;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let started = Instant::now();
        run(&data);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "{path:?} took {took:?}");
        n += 1;
    }
    n
}

#[test]
fn fuzz_findings_stay_fixed() {
    let total: usize = [
        replay("pdf", fuzzing::pdf),
        replay("code", fuzzing::code),
        replay("config", fuzzing::config),
        replay("dataset", fuzzing::dataset),
    ]
    .iter()
    .sum();
    assert!(total > 0, "no fuzz findings to replay");
}
