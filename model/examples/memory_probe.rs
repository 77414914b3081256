//! Where a training step's memory goes on the path a GPU computes, run on the CPU: the
//! measurements behind the memory model's coefficients (`LayerKind::gpu_part_per_token`,
//! `head_bytes`). A counting allocator measures live tensor storage around `loss_and_grads` and
//! AdamW; the bytes are above the parameters and optimizer state at the step's start.
//!
//!   cargo run --release -p mamba-model --example memory_probe -- ARCH D LAYERS BATCH SEQ VOCAB
//!
//! e.g. `mamba2 256 1 4 256 512`: bf16, one document reset per sequence. The recomputed parts'
//! workspace per token is (peak - kept - 4 x parameters) / tokens where a part, not the head,
//! sets the peak (a small vocabulary); the head's per logit, with a large one and d small.

use candle_core::{DType, Device, Tensor};
use mamba_model::memory::{self, Counting};
use mamba_model::{AdamW, AdamWConfig, Config, ForwardOptions, LayerKind, MambaLM};

#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting::new(std::alloc::System);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [arch, d, layers, b, l, v] = args.as_slice() else {
        return Err("usage: memory_probe ARCH D LAYERS BATCH SEQ VOCAB".into());
    };
    let kind: LayerKind = arch.parse()?;
    let (d, layers, b, l, v): (usize, usize, usize, usize, usize) = (
        d.parse()?,
        layers.parse()?,
        b.parse()?,
        l.parse()?,
        v.parse()?,
    );
    mamba_model::kernels::compute_as_gpu(true);
    let cfg = Config::of(kind, d, layers, v);
    let dev = Device::Cpu;
    let (model, varmap) = MambaLM::init(&cfg, 1, &dev)?;
    let mut opt = AdamW::from_varmap(&varmap, AdamWConfig::default())?;
    let ids: Vec<u32> = (0..b * l).map(|i| (i * 7 % v) as u32).collect();
    let ids = Tensor::from_vec(ids, (b, l), &dev)?;
    let resets: Vec<u8> = (0..b * l).map(|i| u8::from(i % l == l / 2)).collect();
    let resets = Tensor::from_vec(resets, (b, l), &dev)?;
    let fo = ForwardOptions {
        resets: Some(&resets),
        compute: DType::BF16,
        checkpointing: false,
    };
    println!("{} parameters, {} tokens", MambaLM::num_params(&cfg), b * l);
    // The first steps settle the allocator and the optimizer's moments; the third is reported.
    for step in 1..=3 {
        let base = memory::live_bytes();
        memory::reset_peak(&dev)?;
        let loss = model.loss_with(&ids, &ids, None, &fo)?;
        let kept = memory::live_bytes() - base;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        drop((grads, loss));
        let peak = memory::peak_bytes(&dev)?.unwrap_or(0) - base;
        if step == 3 {
            println!("kept after the forward: {kept} bytes; peak of the step: {peak} bytes");
        }
    }
    Ok(())
}
