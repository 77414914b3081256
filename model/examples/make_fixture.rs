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
use mamba_model::mamba2::{Mamba2Config, Mamba2LM};
use mamba_model::{Config, MambaLM};

/// Must match `ours_config()` in tests/parity.rs.
fn config(tie_embeddings: bool) -> Config {
    Config {
        tie_embeddings,
        ..Config::new(32, 2, 61)
    }
}
const SEED: u64 = 1234;

/// Must match `ours_config()` in tests/mamba2.rs (seed 77).
fn mamba2_config() -> Mamba2Config {
    Mamba2Config {
        d_model: 32,
        n_layer: 2,
        vocab_size: 40,
        d_state: 8,
        d_conv: 4,
        expand: 2,
        head_dim: 16,
        n_groups: 2,
        norm_eps: 1e-5,
        dt_limit: (0.0, f64::INFINITY),
        tie_embeddings: true,
    }
}

fn main() -> mamba_model::Result<()> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (tied, name) in [(true, "ours_tiny"), (false, "ours_untied")] {
        let (model, _) = MambaLM::init(&config(tied), SEED, &Device::Cpu)?;
        let dir = fixtures.join(name);
        model.save(&dir)?;
        println!("wrote {}", dir.display());
    }
    let (m2, _) = Mamba2LM::init(&mamba2_config(), 77, &Device::Cpu)?;
    let dir = fixtures.join("ours_mamba2");
    m2.save(&dir)?;
    println!("wrote {}", dir.display());
    Ok(())
}
