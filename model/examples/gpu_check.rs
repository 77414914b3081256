//! GPU checks of the model crate (needs the `cuda` feature and a GPU), run by
//! `scripts/gpu-check.sh`:
//! - the CUDA selective scan, forward and every gradient, against the CPU op on the same random
//!   inputs (with z, softplus and document resets), in f32 and with bf16 inputs, and that two
//!   GPU runs give the same bits;
//! - Mamba-2's SSD on the GPU, through the scan (N = 128) and in the chunked form (with the
//!   state-passing kernels), against the CPU's, value and gradients, and the time of each
//!   one's forward + backward at a 130m layer's shape;
//! - the bf16 matmul throughput of this GPU (the denominator of model FLOPs utilisation).
//!
//! cargo run --release --features cuda -p mamba-model --example gpu_check

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use mamba_model::kernels::scan::{selective_scan, ScanOptions};
use mamba_model::mixers::mamba2::{ssd_chunked, ssd_scan};

type Res<T> = candle_core::Result<T>;

/// Largest |a - b| / (max |b| + tiny) over all elements.
fn rel_err(a: &Tensor, b: &Tensor) -> Res<f64> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / (scale + 1e-12))
}

/// Two GPU runs' tensors against the CPU's, one line each: within `tol` (see [`rel_err`]) and
/// the same bits in both runs. True when all pass.
fn compare(
    label: &str,
    names: &[&str],
    got: &[Vec<Tensor>; 2],
    want: &[Tensor],
    tol: f64,
) -> Res<bool> {
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        let e = rel_err(&got[0][i], &want[i])?;
        let same = rel_err(&got[0][i], &got[1][i])? == 0.0;
        let pass = e <= tol && same;
        ok &= pass;
        println!(
            "{label} {name:7} rel err {e:.2e} (<= {tol:.0e}) repeat bit-identical {same}: {}",
            if pass { "ok" } else { "FAIL" }
        );
    }
    Ok(ok)
}

struct Case {
    tensors: Vec<Tensor>, // u, delta, a, b, c, d, bias, z (f32, CPU)
    resets: Tensor,
    grad_out: Tensor,
}

fn case(b: usize, l: usize, d: usize, n: usize) -> Res<Case> {
    let cpu = Device::Cpu;
    let r = |shape: &[usize], scale: f64, shift: f64| -> Res<Tensor> {
        (Tensor::randn(0f32, 1f32, shape, &cpu)? * scale)? + shift
    };
    let tensors = vec![
        r(&[b, l, d], 1.0, 0.0)?,
        r(&[b, l, d], 1.0, -2.0)?,
        r(&[d, n], 0.5, -2.0)?,
        r(&[b, l, n], 1.0, 0.0)?,
        r(&[b, l, n], 1.0, 0.0)?,
        r(&[d], 1.0, 0.0)?,
        r(&[d], 0.1, 0.0)?,
        r(&[b, l, d], 1.0, 0.0)?,
    ];
    let resets: Vec<u8> = (0..b * l).map(|i| (i % l % 97 == 5) as u8).collect();
    Ok(Case {
        tensors,
        resets: Tensor::from_vec(resets, (b, l), &cpu)?,
        grad_out: r(&[b, l, d], 1.0, 0.0)?,
    })
}

/// Output and the gradients of all eight inputs, on `dev` with inputs cast to `dtype`.
fn run(c: &Case, dev: &Device, dtype: DType) -> Res<Vec<Tensor>> {
    let vars: Vec<Var> = c
        .tensors
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype)?.to_device(dev)?))
        .collect::<Res<_>>()?;
    let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let resets = c.resets.to_device(dev)?;
    let opts = ScanOptions {
        delta_bias: Some(t[6]),
        delta_softplus: true,
        z: Some(t[7]),
        resets: Some(&resets),
        chunk: 0,
    };
    let y = selective_scan(t[0], t[1], t[2], t[3], t[4], t[5], &opts)?;
    let g = c.grad_out.to_dtype(dtype)?.to_device(dev)?;
    let grads = (y.to_dtype(DType::F32)? * g.to_dtype(DType::F32)?)?
        .sum_all()?
        .backward()?;
    let mut out = vec![y];
    for v in &vars {
        out.push(grads.get(v.as_tensor()).cloned().unwrap_or(v.zeros_like()?));
    }
    Ok(out)
}

fn scan_check(gpu: &Device) -> Res<bool> {
    const NAMES: [&str; 9] = ["y", "du", "ddelta", "dA", "dB", "dC", "dD", "dbias", "dz"];
    let mut ok = true;
    for (b, l, d, n) in [
        (2, 300, 70, 16),
        (3, 129, 64, 4),
        (1, 2048, 96, 16),
        (2, 300, 64, 128),
    ] {
        let c = case(b, l, d, n)?;
        let want = run(&c, &Device::Cpu, DType::F32)?;
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
            // The reference sees the same (rounded) inputs as the GPU.
            let want = match dtype {
                DType::F32 => want.clone(),
                _ => {
                    let rounded = Case {
                        tensors: c
                            .tensors
                            .iter()
                            .map(|t| t.to_dtype(dtype)?.to_dtype(DType::F32))
                            .collect::<Res<_>>()?,
                        resets: c.resets.clone(),
                        grad_out: c.grad_out.to_dtype(dtype)?.to_dtype(DType::F32)?,
                    };
                    run(&rounded, &Device::Cpu, DType::F32)?
                }
            };
            let got = [run(&c, gpu, dtype)?, run(&c, gpu, dtype)?];
            let label = format!("scan b{b} l{l} d{d} n{n} {dtype:?}");
            ok &= compare(&label, &NAMES, &got, &want, tol)?;
        }
    }
    Ok(ok)
}

/// SSD inputs x, dt, a, B, C, D (f32, CPU) of b sequences of l positions, h heads of p
/// channels, g groups, state n, with document resets.
fn ssd_inputs(b: usize, l: usize, h: usize, p: usize, g: usize, n: usize) -> Res<Vec<Tensor>> {
    let cpu = Device::Cpu;
    let r = |shape: &[usize], scale: f64| Tensor::randn(0f32, 1f32, shape, &cpu)? * scale;
    Ok(vec![
        r(&[b, l, h, p], 1.0)?,
        (r(&[b, l, h], 1.0)?.exp()? * 0.05)?,
        r(&[h], 1.0)?.abs()?.neg()?,
        r(&[b, l, g, n], 0.3)?,
        r(&[b, l, g, n], 0.3)?,
        r(&[h], 1.0)?,
    ])
}

/// Output and the gradients of the six inputs of the SSD in scan form (or chunked) on `dev`.
fn ssd_run(t: &[Tensor], resets: &Tensor, dev: &Device, chunked: bool) -> Res<Vec<Tensor>> {
    let vars: Vec<Var> = t
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(dev)?))
        .collect::<Res<_>>()?;
    let v: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let r = resets.to_device(dev)?;
    let y = match chunked {
        true => ssd_chunked(v[0], v[1], v[2], v[3], v[4], v[5], Some(&r), 64)?.0,
        false => ssd_scan(v[0], v[1], v[2], v[3], v[4], v[5], Some(&r), false)?.0,
    };
    let grads = y.sqr()?.sum_all()?.backward()?;
    let mut out = vec![y];
    for v in &vars {
        out.push(grads.get(v.as_tensor()).cloned().unwrap_or(v.zeros_like()?));
    }
    Ok(out)
}

fn ssd_check(gpu: &Device) -> Res<bool> {
    const NAMES: [&str; 7] = ["y", "dx", "ddt", "da", "dB", "dC", "dD"];
    let mut ok = true;
    for (b, l, h, p, g) in [(2, 300, 8, 64, 1), (1, 200, 4, 32, 2)] {
        let t = ssd_inputs(b, l, h, p, g, 128)?;
        let r: Vec<u8> = (0..b * l).map(|i| (i % l % 97 == 5) as u8).collect();
        let r = Tensor::from_vec(r, (b, l), &Device::Cpu)?;
        let want = ssd_run(&t, &r, &Device::Cpu, false)?;
        // The scan's kernels, and the chunked form (candle's products and the state-passing
        // kernels), each against the CPU's scan; the chunked form rounds differently.
        for (form, chunked, tol) in [("scan", false, 1e-5), ("chunked", true, 1e-4)] {
            let got = [
                ssd_run(&t, &r, gpu, chunked)?,
                ssd_run(&t, &r, gpu, chunked)?,
            ];
            let label = format!("ssd {form} b{b} l{l} h{h} p{p} g{g} n128");
            ok &= compare(&label, &NAMES, &got, &want, tol)?;
        }
    }
    // One 130m layer's SSD: 4 x 2048 positions, 24 heads of 64, state 128.
    let t = ssd_inputs(4, 2048, 24, 64, 1, 128)?;
    let r = Tensor::zeros((4, 2048), DType::U8, &Device::Cpu)?;
    for (name, chunked) in [("scan", false), ("chunked", true)] {
        ssd_run(&t, &r, gpu, chunked)?;
        gpu.synchronize()?;
        let mut times = vec![];
        for _ in 0..5 {
            let start = Instant::now();
            ssd_run(&t, &r, gpu, chunked)?;
            gpu.synchronize()?;
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        println!(
            "ssd {name} fwd+bwd b4 l2048 h24 p64 n128: {:.1} ms (median of 5)",
            times[2] * 1e3
        );
    }
    Ok(ok)
}

fn matmul_tflops(gpu: &Device) -> Res<f64> {
    let m = 8192;
    let a = Tensor::randn(0f32, 1f32, (m, m), gpu)?.to_dtype(DType::BF16)?;
    let b = Tensor::randn(0f32, 1f32, (m, m), gpu)?.to_dtype(DType::BF16)?;
    for _ in 0..3 {
        a.matmul(&b)?;
    }
    gpu.synchronize()?;
    let iters = 20;
    let start = Instant::now();
    for _ in 0..iters {
        a.matmul(&b)?;
    }
    gpu.synchronize()?;
    let secs = start.elapsed().as_secs_f64();
    Ok(2.0 * (m as f64).powi(3) * iters as f64 / secs / 1e12)
}

fn main() -> Res<()> {
    let gpu = Device::new_cuda(0)?;
    let ok = scan_check(&gpu)? & ssd_check(&gpu)?;
    println!("bf16 matmul 8192^3: {:.1} TFLOP/s", matmul_tflops(&gpu)?);
    println!("scan check: {}", if ok { "PASS" } else { "FAIL" });
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
