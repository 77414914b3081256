//! Fine-tunes the pretrained fixtures (`tests/fixtures/pretrained/`, made by
//! `make_pretrained_fixtures.py`, which runs this) and saves what transformers must load back:
//! `finetuned/` from the f32 layouts, saved in shards, and `finetuned_f16/` from the f16 one;
//! the hybrid fixtures (`make_hybrid_fixtures.py`, which runs this too), each saved in its
//! family's layout as `ours_<name>_tuned/`; and the Mamba-3 MIMO model of mamba_ssm's layout
//! written back in that layout by this tool, `ours_mamba_ssm_mamba3_mimo/`, for
//! `make_mamba3_fixtures.py` (which runs this too) to load with `torch.load`.
//!
//! ```sh
//! cargo run -p mamba-model --release --example finetune_fixtures
//! ```

#[path = "../tests/common/finetune.rs"]
mod finetune;

use candle_core::Device;
use mamba_model::MambaLM;

/// The hybrid fixtures, `hf_<name>/`.
pub const HYBRIDS: [&str; 3] = ["bamba", "granite_h", "nemotron_h"];

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
    let fixtures = dir.join("..");
    for name in HYBRIDS {
        let (model, varmap) = MambaLM::load(fixtures.join(format!("hf_{name}")), &Device::Cpu)?;
        let losses = finetune::finetune(&model, &varmap);
        model.save(fixtures.join(format!("ours_{name}_tuned")))?;
        println!("hf_{name} -> ours_{name}_tuned: losses {losses:?}");
    }
    let (m3, _) = MambaLM::load(fixtures.join("mamba_ssm_mamba3_mimo"), &Device::Cpu)?;
    m3.save_mamba_ssm(fixtures.join("ours_mamba_ssm_mamba3_mimo"))?;
    Ok(())
}
