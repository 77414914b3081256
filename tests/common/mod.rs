//! Helpers shared by the end-to-end tests that run the `mamba` binary.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mamba")
}

pub fn mamba(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run mamba")
}

/// Checks that `out` succeeded; returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Every file in `dir`, by name, with its bytes.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
        }
    }
}

/// Small chunks, row groups and shards, so a small corpus spreads over several of each.
pub const SMALL_SHARDS: [&str; 6] = [
    "--chunk-bytes",
    "512",
    "--row-group-tokens",
    "700",
    "--shard-tokens",
    "3000",
];

/// The sample corpus in `dir`, plus copies: byte-identical ones (skipped unread) and one that
/// differs only by a byte-order mark (the same document, found a duplicate after reading).
pub fn data_with_copies(dir: &Path) {
    copy_dir(&repo().join("data"), dir);
    let notes = dir.join("notes/getting-started.md");
    fs::copy(dir.join("sample.pdf"), dir.join("a-copy.pdf")).unwrap();
    fs::copy(dir.join("sample.pdf"), dir.join("z-copy.pdf")).unwrap();
    fs::copy(&notes, dir.join("z-copy.md")).unwrap();
    let bom = [&b"\xef\xbb\xbf"[..], &fs::read(&notes).unwrap()].concat();
    fs::write(dir.join("zz-bom.md"), bom).unwrap();
}
