//! Writes the seeded models used by the transformers parity test (`tests/parity.rs`) to
//! `model/tests/fixtures/ours_tiny/` and (with an untied head) `ours_untied/`. Run it, then
//! `python model/tests/fixtures/make_fixtures.py` and `make_untied_fixtures.py`:
//!
//! ```sh
//! cargo run -p mamba-model --release --example make_fixture
//! ```
//! The test re-creates the same model and checks that saving it gives the committed bytes.

use candle_core::Device;
use mamba_model::{Config, MambaLM};

/// Must match `ours_config()` in tests/parity.rs.
fn config(tie_embeddings: bool) -> Config {
    Config {
        tie_embeddings,
        ..Config::new(32, 2, 61)
    }
}
const SEED: u64 = 1234;

fn main() -> mamba_model::Result<()> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (tied, name) in [(true, "ours_tiny"), (false, "ours_untied")] {
        let (model, _) = MambaLM::init(&config(tied), SEED, &Device::Cpu)?;
        let dir = fixtures.join(name);
        model.save(&dir)?;
        println!("wrote {}", dir.display());
    }
    Ok(())
}
