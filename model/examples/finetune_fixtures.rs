//! Fine-tunes the pretrained fixtures (`tests/fixtures/pretrained/`, made by
//! `make_pretrained_fixtures.py`, which runs this) and saves what transformers must load back:
//! `finetuned/` from the f32 layouts, saved in shards, and `finetuned_f16/` from the f16 one.
//!
//! ```sh
//! cargo run -p mamba-model --release --example finetune_fixtures
//! ```

#[path = "../tests/common/finetune.rs"]
mod finetune;

use candle_core::Device;
use mamba_model::MambaLM;

/// Shard size of the saved `finetuned/`: small enough to give several shards.
pub const SHARD_BYTES: usize = 40_000;

fn main() -> mamba_model::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pretrained");
    for (from, to, shard) in [
        ("padded", "finetuned", SHARD_BYTES),
        ("f16", "finetuned_f16", usize::MAX),
    ] {
        let (model, varmap) = MambaLM::load(dir.join(from), &Device::Cpu)?;
        let losses = finetune::finetune(&model, &varmap);
        model.save_sharded(dir.join(to), shard)?;
        println!("{from} -> {to}: losses {losses:?}");
    }
    Ok(())
}
