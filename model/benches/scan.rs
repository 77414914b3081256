//! The selective scan alone, forward + backward: fused op vs the naive step-by-step reference
//! (candle ops, f32). Shape: batch 4, seq 256, d_inner 512, d_state 16 (the train_step bench).
//!
//! cargo bench -p mamba-model --bench scan        (env: BENCH_ITERS, default 7)

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use mamba_model::kernels::scan::reference::selective_scan_ref;
use mamba_model::kernels::scan::{selective_scan, ScanOptions};

fn main() -> candle_core::Result<()> {
    let (b, l, d, n) = (4, env_usize("BENCH_SEQ", 256), 512, 16);
    let iters = env_usize("BENCH_ITERS", 7);
    let dev = Device::Cpu;
    let var = |shape: &[usize], scale: f64, shift: f64| -> candle_core::Result<Var> {
        let t = (Tensor::randn(0f32, 1f32, shape, &dev)? * scale)? + shift;
        Var::from_tensor(&t?.to_dtype(DType::F32)?)
    };
    let u = var(&[b, l, d], 1.0, 0.0)?;
    let delta = var(&[b, l, d], 1.0, -2.0)?;
    let a = var(&[d, n], 0.5, -2.0)?;
    let bm = var(&[b, l, n], 1.0, 0.0)?;
    let cm = var(&[b, l, n], 1.0, 0.0)?;
    let dd = var(&[d], 1.0, 0.0)?;
    let bias = var(&[d], 0.1, 0.0)?;
    let z = var(&[b, l, d], 1.0, 0.0)?;
    let resets: Vec<u8> = (0..b * l)
        .map(|i| (i % l).is_multiple_of(100) as u8)
        .collect();
    let resets = Tensor::from_vec(resets, (b, l), &dev)?;
    let opts = ScanOptions {
        delta_bias: Some(bias.as_tensor()),
        delta_softplus: true,
        z: Some(z.as_tensor()),
        resets: Some(&resets),
        chunk: 0,
    };
    println!(
        "scan: batch {b}, seq {l}, d_inner {d}, d_state {n}, {} threads",
        rayon::current_num_threads()
    );
    let run = |fused: bool, iters: usize| -> candle_core::Result<(f64, f64)> {
        let (mut tf, mut tb) = (vec![], vec![]);
        for i in 0..iters + 1 {
            let f = if fused {
                selective_scan
            } else {
                selective_scan_ref
            };
            let (y, t1) = time(|| f(u.as_tensor(), delta.as_tensor(), &a, &bm, &cm, &dd, &opts));
            let loss = y?.sum_all()?;
            let (g, t2) = time(|| loss.backward());
            g?;
            if i > 0 {
                tf.push(t1);
                tb.push(t2);
            }
        }
        Ok((median(&mut tf), median(&mut tb)))
    };
    let (f1, b1) = run(true, iters)?;
    println!(
        "  fused:     forward {:.2} ms, backward {:.2} ms, total {:.2} ms",
        f1 * 1e3,
        b1 * 1e3,
        (f1 + b1) * 1e3
    );
    // The kernels alone, without candle's autograd around them.
    {
        use mamba_model::kernels::scan::cpu;
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (uu, dl, zz) = (v(&u), v(&delta), v(&z));
        let bc = v(&Tensor::cat(&[bm.as_tensor(), cm.as_tensor()], 2)?);
        let params = v(&Tensor::cat(
            &[a.as_tensor().clone(), dd.unsqueeze(1)?, bias.unsqueeze(1)?],
            1,
        )?);
        let rs = resets.flatten_all()?.to_vec1::<u8>()?;
        let inp = cpu::Inputs {
            u: &uu,
            delta: &dl,
            z: Some(&zz),
            bc: &bc,
            params: &params,
            resets: Some(&rs),
        };
        let dm = cpu::Dims {
            b,
            l,
            d,
            n,
            softplus: true,
            chunk: mamba_model::kernels::scan::DEFAULT_CHUNK,
        };
        let g = vec![1f32; b * l * d];
        let (mut tf, mut tb) = (vec![], vec![]);
        for _ in 0..iters {
            tf.push(time(|| cpu::forward(&dm, &inp, None)).1);
            tb.push(time(|| cpu::backward(&dm, &inp, &g)).1);
        }
        let (kf, kb) = (median(&mut tf), median(&mut tb));
        println!(
            "  kernels only: forward {:.2} ms, backward {:.2} ms",
            kf * 1e3,
            kb * 1e3
        );
    }
    let (f2, b2) = run(false, 2.min(iters).max(1))?;
    println!(
        "  reference: forward {:.2} ms, backward {:.2} ms, total {:.2} ms",
        f2 * 1e3,
        b2 * 1e3,
        (f2 + b2) * 1e3
    );
    println!("  speed-up (fwd+bwd): {:.1}x", (f2 + b2) / (f1 + b1));
    println!("  peak RSS (VmHWM): {:.0} MiB", peak_rss_mib());
    Ok(())
}
