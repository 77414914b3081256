//! Writes the seeded model used by the transformers parity test (`tests/parity.rs`) to
//! `model/tests/fixtures/ours_tiny/`. Run it, then `python model/tests/fixtures/make_fixtures.py`:
//!
//! ```sh
//! cargo run -p mamba-model --release --example make_fixture
//! ```
//! The test re-creates the same model and checks that saving it gives the committed bytes.

use candle_core::Device;
use mamba_model::{Config, MambaLM};

/// Must match `ours_config()` in tests/parity.rs.
fn config() -> Config {
    Config::new(32, 2, 61)
}
const SEED: u64 = 1234;

fn main() -> mamba_model::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ours_tiny");
    let (model, _) = MambaLM::init(&config(), SEED, &Device::Cpu)?;
    model.save(&dir)?;
    println!("wrote {}", dir.display());
    Ok(())
}
