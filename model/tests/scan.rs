//! The fused selective scan against the naive f64 reference: forward, gradients of every input
//! (autograd through the reference and finite differences), resets, chunked backward,
//! determinism across thread counts.

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use mamba_model::kernels::scan::reference::selective_scan_ref;
use mamba_model::kernels::scan::{selective_scan, ScanOptions};
use mamba_model::rng::SplitMix64 as Rng;

struct Case {
    u: Tensor,
    delta: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
    d: Tensor,
    bias: Tensor,
    z: Tensor,
    resets: Tensor,
    w: Tensor, // weights of the scalar loss sum(y * w)
}

fn case(seed: u64, bs: usize, l: usize, di: usize, n: usize) -> Case {
    let mut r = Rng::new(seed);
    let mut resets = vec![0u8; bs * l];
    for bi in 0..bs {
        for t in 1..l {
            if r.uniform() < 0.08 {
                resets[bi * l + t] = 1;
            }
        }
    }
    // A negative like -exp(A_log).
    let a = rand_in(&mut r, &[di, n], 0.2, 3.0).neg().unwrap();
    Case {
        u: randn(&mut r, &[bs, l, di], 1.0),
        delta: randn(&mut r, &[bs, l, di], 1.0),
        a,
        b: randn(&mut r, &[bs, l, n], 1.0),
        c: randn(&mut r, &[bs, l, n], 1.0),
        d: randn(&mut r, &[di], 1.0),
        bias: randn(&mut r, &[di], 0.5),
        z: randn(&mut r, &[bs, l, di], 1.0),
        resets: Tensor::from_vec(resets, (bs, l), &Device::Cpu).unwrap(),
        w: randn(&mut r, &[bs, l, di], 1.0),
    }
}

#[derive(Clone, Copy)]
struct Flags {
    z: bool,
    resets: bool,
    bias: bool,
    softplus: bool,
    chunk: usize,
}
const ALL: Flags = Flags {
    z: true,
    resets: true,
    bias: true,
    softplus: true,
    chunk: 0,
};

fn run(c: &Case, f: Flags, dtype: DType, fused: bool) -> (Tensor, Vec<Option<Tensor>>) {
    let vars: Vec<Var> = [&c.u, &c.delta, &c.a, &c.b, &c.c, &c.d, &c.bias, &c.z]
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap())
        .collect();
    let t: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let opts = ScanOptions {
        delta_bias: if f.bias { Some(t[6]) } else { None },
        delta_softplus: f.softplus,
        z: if f.z { Some(t[7]) } else { None },
        resets: if f.resets { Some(&c.resets) } else { None },
        chunk: f.chunk,
    };
    let y = if fused {
        selective_scan(t[0], t[1], t[2], t[3], t[4], t[5], &opts).unwrap()
    } else {
        selective_scan_ref(t[0], t[1], t[2], t[3], t[4], t[5], &opts).unwrap()
    };
    let loss = (&y * c.w.to_dtype(dtype).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = vars
        .iter()
        .map(|v| grads.get(v.as_tensor()).cloned())
        .collect();
    (y, g)
}

const NAMES: [&str; 8] = ["u", "delta", "A", "B", "C", "D", "delta_bias", "z"];

fn compare_with_reference(c: &Case, f: Flags) {
    let (y, g) = run(c, f, DType::F32, true);
    let (yr, gr) = run(c, f, DType::F64, false);
    assert_close("y", &y, &yr, 1e-5, 1e-4);
    for i in 0..8 {
        if (i == 6 && !f.bias) || (i == 7 && !f.z) {
            continue;
        }
        let a = g[i]
            .as_ref()
            .unwrap_or_else(|| panic!("no gradient for {}", NAMES[i]));
        let b = gr[i].as_ref().unwrap();
        // Gradients summed over many terms (A, B, C, D, bias) get a scale-aware tolerance.
        let scale = vec(b).iter().fold(0f64, |m, x| m.max(x.abs()));
        assert_close(&format!("d{}", NAMES[i]), a, b, 1e-5 * scale.max(1.0), 2e-4);
    }
}

#[test]
fn forward_and_gradients_match_reference() {
    let c = case(1, 2, 37, 40, 16);
    compare_with_reference(&c, ALL);
}

#[test]
fn without_options() {
    let mut c = case(2, 2, 23, 16, 16);
    // Without softplus dt must stay positive (a negative dt makes the recurrence explode).
    c.delta = (c.delta.abs().unwrap() * 0.5).unwrap();
    compare_with_reference(
        &c,
        Flags {
            z: false,
            resets: false,
            bias: false,
            softplus: false,
            chunk: 0,
        },
    );
    compare_with_reference(
        &c,
        Flags {
            z: false,
            resets: true,
            bias: true,
            softplus: true,
            chunk: 0,
        },
    );
}

#[test]
fn chunked_backward_matches_reference() {
    // chunk lengths that divide and do not divide the sequence, and one step per chunk
    let c = case(3, 2, 30, 20, 16);
    for chunk in [1, 5, 7, 29, 30, 31] {
        compare_with_reference(&c, Flags { chunk, ..ALL });
    }
}

#[test]
fn other_state_sizes() {
    for n in [4, 8, 32] {
        let c = case(4 + n as u64, 1, 19, 24, n);
        compare_with_reference(&c, Flags { chunk: 6, ..ALL });
    }
}

#[test]
fn gradients_match_finite_differences() {
    // Central differences of the f64 reference (the function itself) against the fused op's
    // analytic gradients, at a few positions of every input.
    let c = case(5, 2, 13, 18, 16);
    let (_, g) = run(&c, Flags { chunk: 4, ..ALL }, DType::F32, true);
    let inputs = [&c.u, &c.delta, &c.a, &c.b, &c.c, &c.d, &c.bias, &c.z];
    let loss_of = |vals: &[Tensor]| -> f64 {
        let opts = ScanOptions {
            delta_bias: Some(&vals[6]),
            delta_softplus: true,
            z: Some(&vals[7]),
            resets: Some(&c.resets),
            chunk: 0,
        };
        let y = selective_scan_ref(
            &vals[0], &vals[1], &vals[2], &vals[3], &vals[4], &vals[5], &opts,
        )
        .unwrap();
        (y * &c.w)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let mut rng = Rng::new(99);
    let h = 1e-5;
    for i in 0..8 {
        let n = inputs[i].elem_count();
        let gv = vec(g[i].as_ref().unwrap());
        for _ in 0..4 {
            let k = (rng.next_u64() % n as u64) as usize;
            let mut plus: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
            let mut minus = plus.clone();
            let bump = |t: &Tensor, d: f64| {
                let mut v = vec(t);
                v[k] += d;
                Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
            };
            plus[i] = bump(inputs[i], h);
            minus[i] = bump(inputs[i], -h);
            let fd = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h);
            let err = (fd - gv[k]).abs();
            assert!(
                err <= 1e-3 * (1.0 + fd.abs()),
                "d{}[{k}]: finite difference {fd} vs fused {}",
                NAMES[i],
                gv[k]
            );
        }
    }
}

#[test]
fn fused_op_is_self_consistent_in_f32() {
    // Finite differences of the fused f32 op itself (loose: f32 rounding).
    let c = case(6, 1, 11, 16, 16);
    let (_, g) = run(&c, ALL, DType::F32, true);
    let base: Vec<Tensor> = [&c.u, &c.delta, &c.a, &c.b, &c.c, &c.d, &c.bias, &c.z]
        .iter()
        .map(|t| f32(t))
        .collect();
    let loss_of = |vals: &[Tensor]| -> f64 {
        let opts = ScanOptions {
            delta_bias: Some(&vals[6]),
            delta_softplus: true,
            z: Some(&vals[7]),
            resets: Some(&c.resets),
            chunk: 0,
        };
        let y = selective_scan(
            &vals[0], &vals[1], &vals[2], &vals[3], &vals[4], &vals[5], &opts,
        )
        .unwrap();
        vec(&y).iter().zip(vec(&c.w)).map(|(a, b)| a * b).sum()
    };
    let h = 1e-2;
    for i in 0..8 {
        let gv = vec(g[i].as_ref().unwrap());
        let k = base[i].elem_count() / 2;
        let bump = |d: f64| {
            let mut vals = base.clone();
            let mut v = vec(&vals[i]);
            v[k] += d;
            vals[i] = f32(&Tensor::from_vec(v, vals[i].dims(), &Device::Cpu).unwrap());
            loss_of(&vals)
        };
        let fd = (bump(h) - bump(-h)) / (2.0 * h);
        assert!(
            (fd - gv[k]).abs() <= 2e-2 * (1.0 + fd.abs()),
            "d{}[{k}]: fd {fd} vs {}",
            NAMES[i],
            gv[k]
        );
    }
}

#[test]
fn resets_equal_separate_sequences() {
    // One packed row with a reset at position 9 equals the two pieces run separately.
    let c = case(7, 1, 20, 16, 16);
    let mut r = vec![0u8; 20];
    r[9] = 1;
    let resets = Tensor::from_vec(r, (1, 20), &Device::Cpu).unwrap();
    let t: Vec<Tensor> = [&c.u, &c.delta, &c.a, &c.b, &c.c, &c.d, &c.bias, &c.z]
        .iter()
        .map(|t| f32(t))
        .collect();
    let go = |s: usize, len: usize, resets: Option<&Tensor>| {
        let sl = |x: &Tensor| x.narrow(1, s, len).unwrap().contiguous().unwrap();
        let z = sl(&t[7]);
        let opts = ScanOptions {
            delta_bias: Some(&t[6]),
            delta_softplus: true,
            z: Some(&z),
            resets,
            chunk: 0,
        };
        selective_scan(
            &sl(&t[0]),
            &sl(&t[1]),
            &t[2],
            &sl(&t[3]),
            &sl(&t[4]),
            &t[5],
            &opts,
        )
        .unwrap()
    };
    let packed = go(0, 20, Some(&resets));
    let a = go(0, 9, None);
    let b = go(9, 11, None);
    let joined = Tensor::cat(&[&a, &b], 1).unwrap();
    assert_eq!(vec(&packed), vec(&joined));
}

#[test]
fn deterministic_across_thread_counts() {
    let c = case(8, 3, 64, 72, 16);
    let go = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (y, g) = run(&c, Flags { chunk: 16, ..ALL }, DType::F32, true);
            let mut bits: Vec<u32> = vec(&y).iter().map(|x| (*x as f32).to_bits()).collect();
            for t in g.iter().flatten() {
                bits.extend(vec(t).iter().map(|x| (*x as f32).to_bits()));
            }
            bits
        })
    };
    let one = go(1);
    assert_eq!(one, go(2));
    assert_eq!(one, go(5));
}

#[test]
fn shape_errors_are_reported() {
    let c = case(9, 1, 5, 16, 16);
    let t: Vec<Tensor> = [&c.u, &c.delta, &c.a, &c.b, &c.c, &c.d]
        .iter()
        .map(|t| f32(t))
        .collect();
    let bad_b = t[3].narrow(2, 0, 8).unwrap();
    let e = selective_scan(
        &t[0],
        &t[1],
        &t[2],
        &bad_b,
        &t[4],
        &t[5],
        &ScanOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("B has shape"), "{e}");
}
