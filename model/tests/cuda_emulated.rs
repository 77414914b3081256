//! The project's CUDA kernels' source, compiled with the system C++ compiler and run on the CPU
//! through a thread-per-lane shim (tests/cuda_emulation/shim.h), against the CPU ops: the
//! selective scan (src/kernels/scan/scan.cu: forward and every gradient, with z, softplus,
//! document resets and a partial last warp, over several backward chunks), the SSD's state
//! passing (src/mixers/mamba2/passing.cu: forward and adjoint, with a partial last block), the
//! causal conv + SiLU (src/layers/conv.cu: forward and every gradient, with resets), RMSNorm
//! (src/layers/norm.cu: forward and both gradients), the cross-entropy (src/loss.cu) and
//! Mamba-3's trapezoid (src/mixers/mamba3/trap.cu: forward, final state and every gradient). A GPU run
//! (scripts/gpu-check.sh) is still what shows the kernels right on the hardware; this shows
//! their arithmetic and indexing here.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use mamba_model::kernels::scan::cpu::{self, Dims, Inputs};
use mamba_model::mixers::mamba2::pass_states;
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

/// Builds tests/cuda_emulation/NAME.cpp into DIR/NAME.
fn build(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/cuda_emulation/{name}.cpp"));
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
    exe
}

fn write_u32(path: &Path, v: &[u32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// A CPU leaf of `v` in `shape`, to take gradients of.
fn leaf(v: Vec<f32>, shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The gradients of <out, g>, `g` in the shape of `out`.
fn grads_of(out: &Tensor, g: Vec<f32>) -> GradStore {
    let g = Tensor::from_vec(g, out.shape(), &Device::Cpu).unwrap();
    (out * &g).unwrap().sum_all().unwrap().backward().unwrap()
}

/// The gradient of `v` in `grads`, flattened.
fn grad(grads: &GradStore, v: &Var) -> Vec<f32> {
    flat(grads.get(v.as_tensor()).unwrap())
}

/// Runs `exe DIR args..` and asserts it succeeded.
fn run<T: ToString>(exe: &Path, dir: &Path, args: &[T]) {
    let ran = Command::new(exe)
        .arg(dir)
        .args(args.iter().map(|v| v.to_string()))
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

#[test]
fn scan_kernels_match_the_cpu_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = build(dir, "scan");
    // d = 40: a full warp and a partial one; chunk 32 over l = 70: three backward chunks.
    // Mamba-2's state of 128 and the 256 of some hybrids: one warp, chunk 4 over l = 8. Small,
    // because every emulated shuffle is two thread barriers.
    for (b, l, d, n, chunk) in [(2, 70, 40, 4, 32), (1, 8, 32, 128, 4), (1, 8, 32, 256, 4)] {
        check(&exe, dir, b, l, d, n, chunk);
    }
}

/// The state-passing kernels against the CPU op: the forward's states, and the adjoint as the
/// CPU op's gradient of <E, dE> with respect to the chunk states.
#[test]
fn state_passing_kernels_match_the_cpu_op() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = build(dir, "passing");
    let mut rng = Rng::new(11);
    // 3 x 70 threads in blocks of 64: three full blocks and a partial one; one chunk too.
    for (rows, c, m) in [(3, 5, 70), (2, 1, 9)] {
        let mut rand = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
        let s = rand(rows * c * m);
        // Decays in [0, 1), some exactly 0 (a document starting inside the chunk).
        let g: Vec<f32> = rand(rows * c)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i % 4 == 3 {
                    0.0
                } else {
                    1.0 / (1.0 + v.exp())
                }
            })
            .collect();
        let de = rand(rows * (c + 1) * m);
        write_f32(&dir.join("s.f32"), &s);
        write_f32(&dir.join("g.f32"), &g);
        write_f32(&dir.join("de.f32"), &de);
        run(&exe, dir, &[rows, c, m, 64]);

        let cpu = Device::Cpu;
        let sv = Var::from_tensor(&Tensor::from_vec(s, (rows, c, m), &cpu).unwrap()).unwrap();
        let gt = Tensor::from_vec(g, (rows, c), &cpu).unwrap();
        let e = pass_states(sv.as_tensor(), &gt).unwrap();
        let det = Tensor::from_vec(de, (rows, c + 1, m), &cpu).unwrap();
        let grads = (&e * &det).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_close("E", &read_f32(&dir.join("e.f32")), &flat(&e));
        let ds = flat(grads.get(sv.as_tensor()).unwrap());
        assert_close("dS", &read_f32(&dir.join("ds.f32")), &ds);
    }
}

/// The causal conv + SiLU kernels against the CPU op: the output and the gradients of the
/// input, taps and bias (of <out, g>), with documents starting inside (one at position 1, where
/// the window is shorter than its start), without resets, and over partial blocks.
#[test]
fn conv_kernels_match_the_cpu_op() {
    use mamba_model::layers::conv::causal_conv1d_silu;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = build(dir, "conv");
    let mut rng = Rng::new(13);
    for (b, l, d, k, resets) in [
        (2, 40, 24, 4, true),
        (3, 7, 70, 4, false),
        (1, 9, 5, 2, true),
    ] {
        let mut rand = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
        let x = rand(b * l * d);
        let w = rand(d * k);
        let bias = rand(d);
        let g = rand(b * l * d);
        // Documents start at t = 0, 1 and 17 of row 0 and at 30 of the others.
        let r: Vec<u8> = (0..b * l)
            .map(|i| {
                let first = i < l && [1, 17].contains(&(i % l));
                u8::from(resets && (first || (i >= l && i % l == 30)))
            })
            .collect();
        let mut starts = vec![0u32; b * l];
        for (i, s) in starts.iter_mut().enumerate() {
            let (row, t) = (i / l, i % l);
            *s = (0..=t).rev().find(|&u| r[row * l + u] != 0).unwrap_or(0) as u32;
        }
        let p: Vec<f32> = (0..d)
            .flat_map(|c| w[c * k..(c + 1) * k].iter().copied().chain([bias[c]]))
            .collect();
        write_f32(&dir.join("x.f32"), &x);
        write_f32(&dir.join("p.f32"), &p);
        write_f32(&dir.join("g.f32"), &g);
        write_u32(&dir.join("starts.u32"), &starts);
        run(&exe, dir, &[b, l, d, k, usize::from(resets), 64]);

        let (xv, wv, bv) = (leaf(x, &[b, l, d]), leaf(w, &[d, 1, k]), leaf(bias, &[d]));
        let rt = Tensor::from_vec(r, (b, l), &Device::Cpu).unwrap();
        let resets = resets.then_some(&rt);
        let out =
            causal_conv1d_silu(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), resets).unwrap();
        let grads = grads_of(&out, g);
        assert_close("out", &read_f32(&dir.join("out.f32")), &flat(&out));
        assert_close("dx", &read_f32(&dir.join("gx.f32")), &grad(&grads, &xv));
        let (dw, db) = (grad(&grads, &wv), grad(&grads, &bv));
        let want: Vec<f32> = (0..d)
            .flat_map(|c| dw[c * k..(c + 1) * k].iter().copied().chain([db[c]]))
            .collect();
        assert_close("d taps | d bias", &read_f32(&dir.join("gp.f32")), &want);
    }
}

/// The RMSNorm kernels against the CPU op: the output and the gradients of the input and the
/// weight, rows shorter and longer than a warp, not a multiple of it.
#[test]
fn norm_kernels_match_the_cpu_op() {
    use mamba_model::layers::norm::rms_norm;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = build(dir, "norm");
    let mut rng = Rng::new(17);
    for (rows, d) in [(5, 70), (3, 20), (2, 64)] {
        let mut rand = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
        let (x, w, g) = (rand(rows * d), rand(d), rand(rows * d));
        write_f32(&dir.join("x.f32"), &x);
        write_f32(&dir.join("w.f32"), &w);
        write_f32(&dir.join("g.f32"), &g);
        let eps = 1e-5;
        run(&exe, dir, &[rows as f64, d as f64, eps]);

        let (xv, wv) = (leaf(x, &[rows, d]), leaf(w, &[d]));
        let out = rms_norm(xv.as_tensor(), wv.as_tensor(), eps).unwrap();
        let grads = grads_of(&out, g);
        assert_close("out", &read_f32(&dir.join("out.f32")), &flat(&out));
        assert_close("dx", &read_f32(&dir.join("dx.f32")), &grad(&grads, &xv));
        assert_close("dw", &read_f32(&dir.join("dw.f32")), &grad(&grads, &wv));
    }
}

/// The cross-entropy kernels against the CPU op: the nll per row and the logits' gradient,
/// vocabularies shorter and longer than a warp, large logits (the max is subtracted).
#[test]
fn cross_entropy_kernels_match_the_cpu_op() {
    use mamba_model::loss::per_position_nll;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = build(dir, "loss");
    let mut rng = Rng::new(19);
    for (n, v) in [(6, 77), (3, 20), (2, 300)] {
        let x: Vec<f32> = (0..n * v)
            .map(|i| (rng.normal() * 3.0) as f32 + (i % 7) as f32 * 20.0)
            .collect();
        let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let t: Vec<u32> = (0..n).map(|i| ((i * 37 + 5) % v) as u32).collect();
        write_f32(&dir.join("x.f32"), &x);
        write_f32(&dir.join("g.f32"), &g);
        write_u32(&dir.join("t.u32"), &t);
        run(&exe, dir, &[n, v]);

        let xv = leaf(x, &[n, v]);
        let tt = Tensor::from_vec(t, n, &Device::Cpu).unwrap();
        let nll = per_position_nll(xv.as_tensor(), &tt).unwrap();
        let grads = grads_of(&nll, g);
        assert_close("nll", &read_f32(&dir.join("nll.f32")), &flat(&nll));
        assert_close(
            "d logits",
            &read_f32(&dir.join("dx.f32")),
            &grad(&grads, &xv),
        );
    }
}

/// Mamba-3's trapezoid kernels against the CPU op: y, the final state, and every gradient (of
/// <y, dy>), with documents starting inside (alpha and beta 0), ranks 1 and 3, state rows more
/// than a warp's lanes (P = 40) and over several backward spans.
#[test]
fn trapezoid_kernels_match_the_cpu_op() {
    use mamba_model::mixers::mamba3::trap_cpu::{final_state, trapezoid};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let exe = build(dir, "trap");
    let mut rng = Rng::new(13);
    for (b, l, h, r, p, n) in [(2, 37, 2, 1, 40, 8), (1, 9, 3, 3, 5, 6)] {
        let mut rand = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
        let qk = rand(b * l * h * 2 * r * n);
        let v = rand(b * l * h * r * p);
        let dy = rand(b * l * h * r * p);
        let coef: Vec<f32> = rand(b * l * h * 3)
            .iter()
            .enumerate()
            .map(|(i, x)| match (i / 3 / h) % l == 5 && i % 3 < 2 {
                true => 0.0,
                false => 1.0 / (1.0 + x.exp()),
            })
            .collect();
        for (name, data) in [("qk", &qk), ("v", &v), ("coef", &coef), ("dy", &dy)] {
            write_f32(&dir.join(format!("{name}.f32")), data);
        }
        run(&exe, dir, &[b, l, h, r, p, n]);

        let cpu = Device::Cpu;
        let var = |d: Vec<f32>, shape: &[usize]| {
            Var::from_tensor(&Tensor::from_vec(d, shape, &cpu).unwrap()).unwrap()
        };
        let qkv = var(qk, &[b, l, h, 2, r, n]);
        let vv = var(v, &[b, l, h, r, p]);
        let cv = var(coef, &[b, l, h, 3]);
        let y = trapezoid(qkv.as_tensor(), vv.as_tensor(), cv.as_tensor()).unwrap();
        let dyt = Tensor::from_vec(dy, (b, l, h, r, p), &cpu).unwrap();
        let grads = (&y * &dyt).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_close("y", &read_f32(&dir.join("y.f32")), &flat(&y));
        let state = final_state(qkv.as_tensor(), vv.as_tensor(), cv.as_tensor()).unwrap();
        assert_close("state", &read_f32(&dir.join("state.f32")), &flat(&state));
        for (name, x) in [("dqk", &qkv), ("dv", &vv), ("dcoef", &cv)] {
            let want = flat(grads.get(x.as_tensor()).unwrap());
            assert_close(name, &read_f32(&dir.join(format!("{name}.f32"))), &want);
        }
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
    run(exe, dir, &[b, l, d, n, 1, 1, 1, chunk]);

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
