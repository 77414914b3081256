#![allow(dead_code)]
use candle_core::{DType, Device, Tensor};
use mamba_model::rng::SplitMix64 as Rng;

/// Token ids (b, l) drawn uniformly below `vocab`.
pub fn ids(rng: &mut Rng, b: usize, l: usize, vocab: usize) -> Tensor {
    let v: Vec<u32> = (0..b * l)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect();
    Tensor::from_vec(v, (b, l), &Device::Cpu).unwrap()
}

pub fn randn(rng: &mut Rng, shape: &[usize], scale: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.normal() * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn rand_in(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.uniform_in(lo, hi)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn f32(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap()
}

pub fn vec(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// max |a - b| / (atol + rtol * |b|) must be <= 1.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (av, bv) = (vec(a), vec(b));
    let mut worst = 0f64;
    let mut at = 0;
    for i in 0..av.len() {
        let e = (av[i] - bv[i]).abs() / (atol + rtol * bv[i].abs());
        assert!(
            e.is_finite(),
            "{what}: non-finite at {i}: {} vs {}",
            av[i],
            bv[i]
        );
        if e > worst {
            worst = e;
            at = i;
        }
    }
    assert!(
        worst <= 1.0,
        "{what}: mismatch at flat index {at}: {} vs {} (ratio {worst})",
        av.get(at).copied().unwrap_or(0.0),
        bv.get(at).copied().unwrap_or(0.0)
    );
}

/// A reference training run stored by a fixture script: `batches` (steps, b, 17) of ids and
/// the reference's loss at each step.
pub fn load_curve(path: &std::path::Path) -> (Tensor, Vec<f64>) {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let batches = t["batches"].to_dtype(DType::U32).unwrap();
    (batches, t["losses"].to_vec1::<f64>().unwrap())
}

/// One AdamW step of `model` per stored batch (16 inputs, the next 16 ids as targets), each
/// step's loss within `tol` (relative) of the reference's, which `whose` names in failures.
pub fn follow_curve(
    model: &mamba_model::MambaLM,
    opt: &mut mamba_model::AdamW,
    (batches, want): &(Tensor, Vec<f64>),
    tol: f64,
    whose: &str,
) {
    for (step, w) in want.iter().enumerate() {
        let ids = batches.get(step).unwrap();
        let (x, y) = (ids.narrow(1, 0, 16).unwrap(), ids.narrow(1, 1, 16).unwrap());
        let loss = model.loss(&x, &y, None, None).unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (got - w).abs() <= tol * w,
            "{whose}, step {step}: {got} vs {w}"
        );
        opt.backward_step(&loss).unwrap();
    }
}

/// Every file of `a` has the bytes of the same file in `b`, and `b` has no other file.
pub fn same_files(a: &std::path::Path, b: &std::path::Path, skip: &[&str]) {
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !skip.contains(&n.as_str()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b), "{} vs {}", a.display(), b.display());
    for n in names(a) {
        let same = std::fs::read(a.join(&n)).unwrap() == std::fs::read(b.join(&n)).unwrap();
        assert!(
            same,
            "{} differs from the committed {}",
            a.join(&n).display(),
            b.display()
        );
    }
}
