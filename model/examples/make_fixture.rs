//! Writes the seeded models used by the transformers parity test (`tests/parity.rs`) to
//! `model/tests/fixtures/ours_tiny/`, (with an untied head) `ours_untied/` and a Mamba-2
//! `ours_mamba2/`. Run it, then `python model/tests/fixtures/make_fixtures.py`,
//! `make_untied_fixtures.py` and `make_mamba2_fixtures.py`:
//!
//! ```sh
//! cargo run -p mamba-model --release --example make_fixture
//! ```
//! The test re-creates the same model and checks that saving it gives the committed bytes.

use candle_core::Device;
#[path = "../tests/common/seeded.rs"]
mod seeded;

use mamba_model::MambaLM;

fn main() -> mamba_model::Result<()> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (tied, name) in [(true, "ours_tiny"), (false, "ours_untied")] {
        let (model, _) = MambaLM::init(&seeded::mamba1(tied), seeded::SEED, &Device::Cpu)?;
        let dir = fixtures.join(name);
        model.save(&dir)?;
        println!("wrote {}", dir.display());
    }
    let (m2, _) = MambaLM::init(&seeded::mamba2(), seeded::MAMBA2_SEED, &Device::Cpu)?;
    let dir = fixtures.join("ours_mamba2");
    m2.save(&dir)?;
    println!("wrote {}", dir.display());
    // Adapters over ours_tiny and ours_mamba2, for PEFT to load (make_lora_fixtures.py).
    for (cfg, targets, name) in [
        (
            seeded::mamba1(true),
            &["in_proj", "x_proj"][..],
            "ours_lora_mamba1",
        ),
        (seeded::mamba2(), &["in_proj"][..], "ours_lora_mamba2"),
    ] {
        let dir = fixtures.join(name);
        mamba_model::io::peft::save(&dir, &seeded::lora(&cfg, targets), "base")?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}
