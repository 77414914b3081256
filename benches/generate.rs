//! Decode benchmark: tokens/s of generation on the CPU for a 130m-shaped Mamba (d_model 768,
//! 24 layers, vocab 50280, random weights), batch 1, 64 new tokens after a prompt of 16 and
//! of 1024 tokens, with f32 weights, then with bf16 matrices (`generate --weights bf16`), then
//! decoding from 8-bit copies of them (`--weights int8`). The total time counts the prefill, as transformers' `generate` does; the
//! per-token decode time is the recurrent step alone and should not depend on the prompt.
//! Each prompt length also runs once through the candle forward (the prefill of longer
//! prompts) and the candle step, for comparison.
//!
//! ```text
//! nice -n -20 cargo bench --bench generate            # both prompt lengths, 3 runs each
//! cargo bench --bench generate -- 16 1024 4096        # other prompt lengths
//! BENCH_ARCH=mamba2 cargo bench --bench generate      # a 130m-shaped Mamba-2
//! BENCH_INIT=DIR cargo bench --bench generate         # the checkpoint in DIR (e.g. a hybrid)
//! ```

use std::time::Instant;

use candle_core::{DType, Device};
use mamba::generate::sampling::argmax;
use mamba_model::{Config, Decoder, LayerKind, MambaLM};

#[global_allocator]
static GLOBAL: mamba_model::MapAware<mimalloc::MiMalloc> =
    unsafe { mamba_model::MapAware::new(mimalloc::MiMalloc) };

const NEW_TOKENS: usize = 64;
const RUNS: usize = 3;

/// (prefill seconds, decode seconds for NEW_TOKENS - 1 steps) of one greedy generation.
fn generate_once(model: &MambaLM, dec: &Decoder, prompt: &[u32]) -> (f64, f64) {
    let vocab = model.config().vocab_size;
    let t0 = Instant::now();
    let (mut state, l) = dec.prefill(&[prompt]).unwrap();
    let mut next = argmax(&l[0][..vocab]) as u32;
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    // The first new token came from the prefill; each further one is one step.
    for _ in 1..NEW_TOKENS {
        let l = dec.step(&[next], &mut state).unwrap();
        next = argmax(&l[0][..vocab]) as u32;
    }
    (prefill, t1.elapsed().as_secs_f64())
}

fn main() {
    let lens: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let lens = if lens.is_empty() {
        vec![16, 1024]
    } else {
        lens
    };
    let arch: LayerKind = std::env::var("BENCH_ARCH")
        .map(|s| s.parse().expect("BENCH_ARCH is mamba1 or mamba2"))
        .unwrap_or_default();
    let t = Instant::now();
    let (model, _) = match std::env::var("BENCH_INIT") {
        Ok(dir) => MambaLM::load(dir, &Device::Cpu).unwrap(),
        Err(_) => MambaLM::init(&Config::of(arch, 768, 24, 50280), 0, &Device::Cpu).unwrap(),
    };
    let cfg = model.config().clone();
    println!(
        "{} (d_model {}, {} layers): {} parameters, made in {:.1} s; {} threads",
        cfg.arch_name(),
        cfg.d_model,
        cfg.n_layer(),
        MambaLM::num_params(&cfg),
        t.elapsed().as_secs_f64(),
        candle_core::utils::get_num_threads()
    );
    let f32_model = model.detach();
    let bf16_model = model.into_weight_dtype(DType::BF16).unwrap();
    for (weights, model, int8) in [
        ("f32", &f32_model, false),
        ("bf16", &bf16_model, false),
        ("int8", &bf16_model, true),
    ] {
        println!("{weights} weights");
        let dec = match int8 {
            true => model.decoder_int8().unwrap(),
            false => model.decoder().unwrap(),
        };
        run(model, &dec, &lens);
    }
}

/// The runs of every prompt length with one model and decoder.
fn run(model: &MambaLM, dec: &Decoder, lens: &[usize]) {
    println!("prompt  new  run   prefill s  decode ms/token   total s   tokens/s (with prefill)");
    for &len in lens {
        let vocab = model.config().vocab_size as u32;
        let prompt: Vec<u32> = (0..len as u32).map(|i| (i * 7919 + 13) % vocab).collect();
        generate_once(model, dec, &prompt[..len.min(8)]); // warm-up
        let mut best = f64::INFINITY;
        for run in 0..RUNS {
            let (prefill, decode) = generate_once(model, dec, &prompt);
            let total = prefill + decode;
            best = best.min(total);
            println!(
                "{len:>6} {NEW_TOKENS:>4} {run:>4} {prefill:>11.3} {:>16.2} {total:>9.2} {:>10.2}",
                decode * 1e3 / (NEW_TOKENS - 1) as f64,
                NEW_TOKENS as f64 / total
            );
        }
        let (prefill, decode) = generate_once(model, &model.candle_decoder(), &prompt);
        println!(
            "prompt {len}: best {:.2} tokens/s; through the candle forward and step: prefill \
             {prefill:.3} s, {:.2} ms/token",
            NEW_TOKENS as f64 / best,
            decode * 1e3 / (NEW_TOKENS - 1) as f64
        );
    }
}
