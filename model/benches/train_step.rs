//! Full training steps (forward, backward, AdamW) on CPU:
//! d_model 256, 4 layers, vocab 4096, seq 256, batch 4 (1024 tokens per step).
//!
//! cargo bench -p mamba-model --bench train_step
//! (env: BENCH_ITERS, default 7; BENCH_D, BENCH_LAYERS, BENCH_VOCAB, BENCH_SEQ, BENCH_BATCH;
//! BENCH_ARCH=mamba2 for Mamba-2, whose d_state is 128 and head_dim 64 unless BENCH_D_STATE,
//! BENCH_HEAD_DIM say otherwise; BENCH_ARCH=mamba3 for Mamba-3, MIMO of rank BENCH_MIMO=R;
//! BENCH_LORA=R trains LoRA adapters of rank R on the default
//! targets instead, the base frozen in bf16, or f32 with BENCH_LORA_BASE=f32; BENCH_INIT=DIR
//! trains the checkpoint in DIR instead, e.g. a hybrid made by `benches/hybrid_step.py`, without
//! document resets, as transformers' torch path computes it)

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use mamba_model::lora::{default_targets, Adapters, LoraConfig};
use mamba_model::rng::SplitMix64 as Rng;
use mamba_model::{AdamW, AdamWConfig, Config, LayerKind, MambaLM};

/// The allocator the `mamba` binary uses, so the bench measures what users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> mamba_model::Result<()> {
    // As `mamba train` does: keep freed memory rather than return it to the OS every step
    // (mi_option_purge_delay = -1; see src/main.rs).
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let d = env_usize("BENCH_D", 256);
    let layers = env_usize("BENCH_LAYERS", 4);
    let vocab = env_usize("BENCH_VOCAB", 4096);
    let seq = env_usize("BENCH_SEQ", 256);
    let batch = env_usize("BENCH_BATCH", 4);
    let iters = env_usize("BENCH_ITERS", 7);
    let dev = Device::Cpu;
    let arch: LayerKind = std::env::var("BENCH_ARCH")
        .map(|s| s.parse().expect("BENCH_ARCH is mamba1, mamba2 or mamba3"))
        .unwrap_or_default();
    let base = Config::of(arch, d, layers, vocab);
    let cfg = Config {
        d_state: env_usize("BENCH_D_STATE", base.d_state),
        head_dim: env_usize("BENCH_HEAD_DIM", base.head_dim),
        mimo_rank: env_usize("BENCH_MIMO", 0),
        ..base
    };
    let init = std::env::var("BENCH_INIT").ok();
    let (model, varmap) = match &init {
        Some(dir) => MambaLM::load(dir, &dev)?,
        None => MambaLM::init(&cfg, 0, &dev)?,
    };
    let cfg = model.config().clone();
    let (d, layers, vocab) = (cfg.d_model, cfg.n_layer(), cfg.vocab_size);
    let lora = env_usize("BENCH_LORA", 0);
    let (model, varmap) = match lora {
        0 => (model, varmap),
        r => {
            // The base's variables go: only the adapters train, as `mamba train --lora-rank`.
            drop(varmap);
            let base_dtype = match std::env::var("BENCH_LORA_BASE").as_deref() {
                Ok("f32") => DType::F32,
                _ => DType::BF16,
            };
            let base = model.into_weight_dtype(base_dtype)?;
            let lcfg = LoraConfig {
                rank: r,
                alpha: r as f64,
                dropout: 0.0,
                targets: default_targets(&cfg),
                rslora: false,
            };
            let (adapters, vm) = Adapters::init(&cfg, &lcfg, 0, &dev)?;
            println!(
                "  LoRA rank {r} on {}, base in {base_dtype:?}: {} trainable parameters",
                lcfg.targets.join(","),
                adapters.num_params()
            );
            (base.with_adapters(&adapters), vm)
        }
    };
    let mut opt = AdamW::from_varmap(&varmap, AdamWConfig::default())?;
    let mut rng = Rng::new(1);
    let n = batch * (seq + 1);
    let toks: Vec<u32> = (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect();
    let toks = Tensor::from_vec(toks, (batch, seq + 1), &dev)?;
    let x = toks.narrow(1, 0, seq)?.contiguous()?;
    let y = toks.narrow(1, 1, seq)?.contiguous()?;
    // Document resets every 100 tokens, as in packed training data.
    let resets: Vec<u8> = (0..batch * seq)
        .map(|i| (init.is_none() && (i % seq).is_multiple_of(100)) as u8)
        .collect();
    let resets = Tensor::from_vec(resets, (batch, seq), &dev)?;
    println!(
        "train_step: {}, d_model {d}, n_layer {layers}, d_state {}, vocab {vocab}, seq {seq}, batch {batch}, {} params, {} threads",
        cfg.arch_name(),
        cfg.d_state,
        MambaLM::num_params(&cfg),
        rayon::current_num_threads()
    );
    let (mut tf, mut tb, mut to, mut tt) = (vec![], vec![], vec![], vec![]);
    for i in 0..iters + 1 {
        let (loss, f) = time(|| model.loss(&x, &y, Some(&resets), None));
        let loss = loss?;
        let (grads, b) = time(|| loss.backward());
        let grads = grads?;
        let (r, o) = time(|| opt.step(&grads));
        r?;
        let l = loss.to_scalar::<f32>()?;
        if i == 0 {
            println!("  warmup step: {:.1} ms (loss {l:.3})", (f + b + o) * 1e3);
            continue;
        }
        tf.push(f);
        tb.push(b);
        to.push(o);
        tt.push(f + b + o);
    }
    let step = median(&mut tt);
    println!(
        "  median over {iters} steps: step {:.1} ms (forward {:.1}, backward {:.1}, AdamW {:.1})",
        step * 1e3,
        median(&mut tf) * 1e3,
        median(&mut tb) * 1e3,
        median(&mut to) * 1e3
    );
    println!("  tokens/s: {:.0}", (batch * seq) as f64 / step);
    println!("  peak RSS (VmHWM): {:.0} MiB", peak_rss_mib());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average at end (other processes compete for the cores): {}",
        load.trim()
    );
    Ok(())
}
