//! The CUDA scan kernels' source (src/kernels/scan/scan.cu), compiled with the system C++ compiler and
//! run on the CPU through a lane-per-thread shim (tests/cuda_emulation/host.cpp), against the
//! CPU kernel: forward and every gradient, with z, softplus, document resets and a partial
//! last warp, over several backward chunks. A GPU run (scripts/gpu-check.sh) is still what
//! shows the kernels right on the hardware; this shows their arithmetic and indexing here.

use std::path::Path;
use std::process::Command;

use mamba_model::kernels::scan::cpu::{self, Dims, Inputs};
use mamba_model::rng::SplitMix64 as Rng;

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())) + 1e-12;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / scale;
        assert!(
            err <= 2e-5,
            "{what}[{i}]: emulated CUDA {g} vs CPU {w} (rel {err:.2e})"
        );
    }
}

#[test]
fn cuda_kernels_match_the_cpu_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = dir.join("host");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_emulation/host.cpp");
    let built = Command::new("c++")
        .args(["-std=c++20", "-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("a C++ compiler (c++) runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // d = 40: a full warp and a partial one; chunk 32 over l = 70: three backward chunks.
    // Mamba-2's state of 128: one warp, chunk 4 over l = 8. Small, because every emulated
    // shuffle is two thread barriers.
    for (b, l, d, n, chunk) in [(2, 70, 40, 4, 32), (1, 8, 32, 128, 4)] {
        check(&exe, dir, b, l, d, n, chunk);
    }
}

/// Runs the emulated kernels on random inputs of these sizes and compares them with the CPU's.
fn check(exe: &Path, dir: &Path, b: usize, l: usize, d: usize, n: usize, chunk: usize) {
    let mut rng = Rng::new(7);
    let mut rand = |len: usize, scale: f32, shift: f32| -> Vec<f32> {
        (0..len)
            .map(|_| rng.normal() as f32 * scale + shift)
            .collect()
    };
    let bld = b * l * d;
    let mut x = rand(bld, 1.0, 0.0); // u
    x.extend(rand(bld, 1.0, -2.0)); // delta
    x.extend(rand(bld, 1.0, 0.0)); // z
    let bc = rand(b * l * 2 * n, 1.0, 0.0);
    let mut params = rand(d * (n + 2), 0.5, 0.0);
    for c in 0..d {
        for k in 0..n {
            params[c * (n + 2) + k] = -(1.0 + k as f32) * (0.5 + params[c * (n + 2) + k].abs());
        }
    }
    let dout = rand(bld, 1.0, 0.0);
    let resets: Vec<u8> = (0..b * l).map(|i| (i % l % 23 == 11) as u8).collect();

    write_f32(&dir.join("x.f32"), &x);
    write_f32(&dir.join("bc.f32"), &bc);
    write_f32(&dir.join("params.f32"), &params);
    write_f32(&dir.join("dout.f32"), &dout);
    std::fs::write(dir.join("resets.u8"), &resets).unwrap();
    let args = [b, l, d, n, 1, 1, 1, chunk].map(|v| v.to_string());
    let ran = Command::new(exe).arg(dir).args(&args).output().unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    let dm = Dims {
        b,
        l,
        d,
        n,
        softplus: true,
        chunk,
    };
    let inputs = Inputs {
        u: &x[..bld],
        delta: &x[bld..2 * bld],
        z: Some(&x[2 * bld..]),
        bc: &bc,
        params: &params,
        resets: Some(&resets),
    };
    assert_close(
        "y",
        &read_f32(&dir.join("y.f32")),
        &cpu::forward(&dm, &inputs, None),
    );
    let want = cpu::backward(&dm, &inputs, &dout);
    let got = read_f32(&dir.join("grads.f32"));
    let parts = [
        ("du", bld),
        ("ddelta", bld),
        ("dz", bld),
        ("dB|dC", b * l * 2 * n),
        ("dA|dD|dbias", d * (n + 2)),
    ];
    let mut at = 0;
    for (name, len) in parts {
        assert_close(name, &got[at..at + len], &want[at..at + len]);
        at += len;
    }
    assert_eq!(at, want.len());
}
