//! The fine-tuning the pretrained fixtures go through, shared by `tests/pretrained.rs` and
//! `examples/finetune_fixtures.rs` (which writes the checkpoints transformers then checks):
//! three AdamW steps on two fixed windows of token ids, at a learning rate high enough that
//! every parameter visibly moves.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mamba_model::rng::SplitMix64;
use mamba_model::{AdamW, AdamWConfig, MambaLM};

/// Tokens of the fixtures' tokenizer (the models have 304 rows, mamba_ssm's config says 300).
pub const TOKENS: usize = 300;

/// Fine-tunes `model` in place and returns the losses of its steps.
pub fn finetune(model: &MambaLM, varmap: &VarMap) -> Vec<f32> {
    let mut rng = SplitMix64::new(99);
    let ids: Vec<u32> = (0..2 * 17).map(|_| rng.below(TOKENS) as u32).collect();
    let ids = Tensor::from_vec(ids, (2, 17), &Device::Cpu).unwrap();
    let (x, y) = (ids.narrow(1, 0, 16).unwrap(), ids.narrow(1, 1, 16).unwrap());
    let cfg = AdamWConfig {
        lr: 1e-2,
        ..Default::default()
    };
    let mut opt = AdamW::from_varmap(varmap, cfg).unwrap();
    (0..3)
        .map(|_| {
            let loss = model.loss(&x, &y, None, None).unwrap();
            opt.backward_step(&loss).unwrap();
            loss.to_scalar::<f32>().unwrap()
        })
        .collect()
}
