//! `--dry-run` memory estimate: parameters, gradients, optimizer moments and activations of
//! one micro-batch, against the VRAM profile's budget.

use mamba_model::{Config, MambaLM};

use super::config::{DeviceSpec, Precision, TrainConfig};

/// Bytes of each part of a training step's memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub params: u64,
    pub grads: u64,
    pub optimizer: u64,
    pub activations: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.params + self.grads + self.optimizer + self.activations
    }
}

/// Parameters, gradients and both AdamW moments are f32 (low precision only changes compute,
/// which adds a half-size copy of the weights). Activations are what backward keeps per token
/// and layer: the residual, the norm output, in_proj's 2*d_inner, the conv and SiLU outputs,
/// x_proj's dt_rank + 2N, dt before and after softplus, the scan output and the gate (Mamba-2:
/// in_proj's z, xBC and dt, the conv and SiLU outputs, dt per head and per channel, the scan's
/// packed inputs and output, the gate and the norm); plus the logits and their gradient. With
/// checkpointing only each block's input is kept, and one block's activations are rebuilt at a
/// time.
pub fn estimate(cfg: &TrainConfig, model: &Config) -> Estimate {
    let p = MambaLM::num_params(model) as u64;
    let half = cfg.precision != Precision::Fp32;
    let elem: u64 = if half { 2 } else { 4 };
    let tokens = (cfg.batch_size * cfg.seq_len) as u64;
    let d = model.d_model as u64;
    // On a GPU (or sized for one) the SSM may take its chunked form, which keeps more.
    let chunked = !(cfg.device == DeviceSpec::Cpu && cfg.vram.is_none());
    let per_layer = model
        .layers
        .iter()
        .map(|k| k.activations_per_token(model, chunked));
    let layers = model.n_layer() as u64;
    let kept = match cfg.grad_checkpointing {
        // Every block's input, and one block's activations rebuilt at a time.
        true => layers * d + per_layer.max().unwrap_or(0),
        false => per_layer.sum(),
    };
    let logits = 2 * model.padded_vocab() as u64;
    Estimate {
        params: 4 * p + if half { 2 * p } else { 0 },
        grads: 4 * p,
        optimizer: 8 * p,
        activations: tokens * (kept + logits) * elem,
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// The table printed by `--dry-run`; `budget_gb` is the VRAM profile's size in GiB.
pub fn render(e: &Estimate, params: usize, budget_gb: Option<f64>) -> String {
    let mut s = format!("memory estimate ({params} parameters)\n");
    for (k, v) in [
        ("params", e.params),
        ("grads", e.grads),
        ("optimizer", e.optimizer),
        ("activations", e.activations),
        ("total", e.total()),
    ] {
        s += &format!("  {k:<12} {:>12}\n", gib(v));
    }
    match budget_gb {
        Some(gb) => {
            // Profiles are in GiB, as a GPU sold as "8 GB" has 8 GiB.
            let budget = (gb * (1u64 << 30) as f64) as u64;
            let verdict = if e.total() <= budget {
                "fits"
            } else {
                "DOES NOT FIT"
            };
            s += &format!(
                "  budget       {:>12}  ({gb} GB profile): {verdict}\n",
                gib(budget)
            );
        }
        None => s += "  budget       none (no VRAM profile)\n",
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpointing_and_half_precision_cut_activations() {
        let model = Config::new(768, 12, 32768);
        let mut cfg = TrainConfig {
            batch_size: 4,
            seq_len: 2048,
            ..Default::default()
        };
        let full = estimate(&cfg, &model);
        let p = MambaLM::num_params(&model) as u64;
        assert_eq!(full.params, 4 * p);
        assert_eq!(full.optimizer, 8 * p);
        cfg.grad_checkpointing = true;
        let ck = estimate(&cfg, &model);
        assert!(ck.activations < full.activations / 2);
        cfg.precision = Precision::Bf16;
        let half = estimate(&cfg, &model);
        assert_eq!(half.activations * 2, ck.activations);
        let text = render(&half, MambaLM::num_params(&model), Some(8.0));
        assert!(text.contains("activations") && text.contains("8 GB profile"));
    }
}
