//! `--dry-run` memory estimate: parameters, gradients, optimizer moments and activations of
//! one micro-batch, against the VRAM profile's budget.

use mamba_model::lora::LoraConfig;
use mamba_model::{Config, MambaLM};

use super::config::{DeviceSpec, Precision, TrainConfig};
use super::metrics::gib;

/// Bytes of each part of a training step's peak memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub params: u64,
    pub grads: u64,
    pub optimizer: u64,
    /// What backward keeps until it ends.
    pub activations: u64,
    /// What exists only while one part of backward runs: the largest of a layer's recomputed
    /// part and the head's block of logits.
    pub workspace: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.params + self.grads + self.optimizer + self.activations + self.workspace
    }
}

/// The peak of a training step, as `mem_peak_bytes` measures it. Parameters, gradients and
/// both AdamW moments are f32; with `grad_accum` above 1 the running sum of the gradients
/// is held beside the next micro-batch's.
///
/// On the path a GPU computes (`--device cuda`, or any run sized by a VRAM profile) each
/// block keeps the tensors between its recomputed parts in the compute dtype (see
/// `mamba_model::layers::recompute`), and in half precision each layer's matrices cast to it;
/// one part's or the head's intermediates exist at a time. With checkpointing only each
/// block's input is kept, and one block is rebuilt at a time. On the CPU's fused ops backward
/// keeps each layer's activations (its kind's `activations_per_token`) and the logits.
/// With `lora`, the base is frozen: see [`with_adapters`].
pub fn estimate(cfg: &TrainConfig, model: &Config, lora: Option<&LoraConfig>) -> Estimate {
    let p = MambaLM::num_params(model) as u64;
    let half = cfg.precision != Precision::Fp32;
    let e: u64 = if half { 2 } else { 4 };
    let gpu_path = cfg.device != DeviceSpec::Cpu
        || cfg.vram.is_some()
        || mamba_model::kernels::computes_as_gpu();
    let (activations, workspace) = match gpu_path {
        true => gpu_activations(cfg, model, e),
        false => (cpu_activations(cfg, model, e), 0),
    };
    let accumulated = if cfg.grad_accum > 1 { 4 * p } else { 0 };
    match lora {
        None => Estimate {
            params: 4 * p,
            grads: 4 * p + accumulated,
            optimizer: 8 * p,
            activations,
            workspace,
        },
        Some(l) => with_adapters(
            cfg,
            model,
            l,
            activations + 4 * (cfg.batch_size * cfg.seq_len) as u64 * adapted_inputs(model, l),
            workspace,
        ),
    }
}

/// (kept, workspace) bytes on the path a GPU computes.
fn gpu_activations(cfg: &TrainConfig, model: &Config, e: u64) -> (u64, u64) {
    let tokens = (cfg.batch_size * cfg.seq_len) as u64;
    let d = model.d_model as u64;
    let block = mamba_model::block_kept_per_token(model, e);
    let per_layer: Vec<u64> = model
        .layers
        .iter()
        .map(|k| block + k.gpu_kept_per_token(model, e, cfg.seq_len))
        .collect();
    let casts = layer_matrices(model).map(|n| if e < 4 { e * n } else { 0 });
    let (kept, casts) = match cfg.grad_checkpointing {
        true => (
            model.n_layer() as u64 * 4 * d + per_layer.iter().max().unwrap_or(&0),
            casts.max().unwrap_or(0),
        ),
        false => (per_layer.iter().sum(), casts.sum()),
    };
    // The embedding's output starts the residual stream.
    let kept = tokens * (4 * d + kept) + casts;
    let part_tokens = cfg
        .batch_size
        .min(mamba_model::layers::recompute::rows_per_part(cfg.seq_len))
        * cfg.seq_len;
    let part = model
        .layers
        .iter()
        .map(|k| k.gpu_part_per_token(model))
        .max()
        .unwrap_or(0);
    let head = mamba_model::head_bytes(model, tokens as usize, e);
    (kept, (part_tokens as u64 * part).max(head))
}

/// Elements of the matrices of each layer (what half precision casts per layer), from its
/// kind's parameter table.
fn layer_matrices(model: &Config) -> impl Iterator<Item = u64> + '_ {
    model.layers.iter().map(move |k| {
        k.table(model)
            .iter()
            .filter(|q| q.init.is_matrix())
            .map(|q| q.shape.iter().product::<usize>() as u64)
            .sum()
    })
}

/// Bytes backward keeps on the CPU's fused ops: each layer's activations (with checkpointing
/// every block's input and one block's activations) and the logits with their gradient.
fn cpu_activations(cfg: &TrainConfig, model: &Config, e: u64) -> u64 {
    let tokens = (cfg.batch_size * cfg.seq_len) as u64;
    let d = model.d_model as u64;
    let per_layer = model
        .layers
        .iter()
        .map(|k| k.activations_per_token(model, false, cfg.seq_len));
    let layers = model.n_layer() as u64;
    let kept = match cfg.grad_checkpointing {
        true => layers * d + per_layer.max().unwrap_or(0),
        false => per_layer.sum(),
    };
    let logits = 2 * model.padded_vocab() as u64;
    tokens * (kept + logits) * e
}

/// A LoRA run: the frozen base's matrices at `--lora-base-dtype` (the rest f32), widened to
/// f32 one matrix at a time; gradients and moments for the adapters only.
fn with_adapters(
    cfg: &TrainConfig,
    model: &Config,
    l: &LoraConfig,
    activations: u64,
    workspace: u64,
) -> Estimate {
    let matrix_bytes: u64 = if cfg.lora_base_dtype == "f32" { 4 } else { 2 };
    let (mut base, mut widest) = (0u64, 0u64);
    for (_, p) in MambaLM::params(model) {
        let n = p.shape.iter().product::<usize>() as u64;
        match p.init.is_matrix() {
            true => {
                base += matrix_bytes * n;
                widest = widest.max(4 * n);
            }
            false => base += 4 * n,
        }
    }
    let a = adapter_params(model, l);
    Estimate {
        params: base + widest + 4 * a,
        grads: 4 * a,
        optimizer: 8 * a,
        activations,
        workspace,
    }
}

/// Parameters of the adapters `l` puts on `model`: r (in + out) per adapted projection.
pub fn adapter_params(model: &Config, l: &LoraConfig) -> u64 {
    l.adapted(model)
        .into_iter()
        .map(|(_, _, [out, inp])| (l.rank * (inp + out)) as u64)
        .sum()
}

/// f32 values the adapters keep per token: each adapted projection's down-projection (r),
/// and with dropout its dropped-out input too.
fn adapted_inputs(model: &Config, l: &LoraConfig) -> u64 {
    l.adapted(model)
        .into_iter()
        .map(|(_, _, [_, inp])| l.rank as u64 + if l.dropout > 0.0 { inp as u64 } else { 0 })
        .sum()
}

/// Bytes of a VRAM profile of `gb` GiB (a GPU sold as "8 GB" has 8 GiB).
pub fn budget_bytes(gb: f64) -> u64 {
    (gb * (1u64 << 30) as f64) as u64
}

/// Refuses a run sized by a VRAM profile whose estimated peak (`total` of a configuration) is
/// over the profile's budget, naming what fits instead: a smaller micro-batch with more
/// accumulation (the same tokens per step), with or without checkpointing; else a smaller
/// model or a larger profile.
pub fn check_fit(cfg: &TrainConfig, total: impl Fn(&TrainConfig) -> u64) -> Result<(), String> {
    let Some(gb) = cfg.vram_gb else {
        return Ok(());
    };
    let (budget, need) = (budget_bytes(gb), total(cfg));
    if need <= budget {
        return Ok(());
    }
    let name = cfg.vram.as_deref().unwrap_or("the VRAM profile");
    let head = format!(
        "--vram {name}: a step of this run needs an estimated {} at its peak, over the \
         profile's {}",
        gib(need),
        gib(budget)
    );
    let sequences = cfg.batch_size * cfg.grad_accum;
    let fits = |checkpointing: bool| {
        (1..=cfg.batch_size).rev().find_map(|b| {
            let c = TrainConfig {
                batch_size: b,
                grad_accum: sequences.div_ceil(b),
                grad_checkpointing: checkpointing,
                ..cfg.clone()
            };
            (total(&c) <= budget).then_some(c)
        })
    };
    let flags = |c: &TrainConfig| {
        let ck = match c.grad_checkpointing && !cfg.grad_checkpointing {
            true => " --grad-checkpointing",
            false => "",
        };
        format!(
            "--batch-size {} --grad-accum {}{ck}",
            c.batch_size, c.grad_accum
        )
    };
    let advice = match (fits(cfg.grad_checkpointing), fits(true)) {
        (Some(c), _) | (None, Some(c)) => format!("it fits with {}", flags(&c)),
        (None, None) => "even one sequence a micro-batch with --grad-checkpointing does not \
                         fit: use a smaller --model-size, a shorter --seq-len or a larger \
                         --vram profile"
            .into(),
    };
    Err(format!("{head}; {advice}"))
}

/// The table printed by `--dry-run`; `budget_gb` is the VRAM profile's size in GiB.
pub fn render(e: &Estimate, params: usize, budget_gb: Option<f64>) -> String {
    let mut s = format!("memory estimate ({params} parameters)\n");
    for (k, v) in [
        ("params", e.params),
        ("grads", e.grads),
        ("optimizer", e.optimizer),
        ("activations", e.activations),
        ("workspace", e.workspace),
        ("total", e.total()),
    ] {
        s += &format!("  {k:<12} {:>12}\n", gib(v));
    }
    match budget_gb {
        Some(gb) => {
            let budget = budget_bytes(gb);
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
        let full = estimate(&cfg, &model, None);
        let p = MambaLM::num_params(&model) as u64;
        assert_eq!(full.params, 4 * p);
        assert_eq!(full.optimizer, 8 * p);
        cfg.grad_checkpointing = true;
        let ck = estimate(&cfg, &model, None);
        assert!(ck.activations < full.activations / 2);
        cfg.precision = Precision::Bf16;
        let half = estimate(&cfg, &model, None);
        assert_eq!(half.activations * 2, ck.activations);
        let text = render(&half, MambaLM::num_params(&model), Some(8.0));
        assert!(text.contains("activations") && text.contains("8 GB profile"));
    }

    /// The configuration of `settings` (configuration keys).
    fn resolved(settings: serde_json::Value) -> TrainConfig {
        let flags = settings.as_object().cloned().unwrap_or_default();
        super::super::config::resolve(&serde_json::Map::new(), &flags).unwrap()
    }

    #[test]
    fn every_vram_profile_fits_the_model_its_users_train_with_room_to_spare() {
        // GPT-NeoX's vocabulary, the largest of the released checkpoints' tokenizers.
        for (vram, size) in [
            ("8gb", "small"),
            ("12gb", "small"),
            ("16gb", "medium"),
            ("24gb", "large"),
            ("32gb", "large"),
            ("48gb", "large"),
        ] {
            for arch in ["mamba1", "mamba2"] {
                let cfg = resolved(serde_json::json!({
                    "vram": vram, "model_size": size, "arch": arch, "seq_len": 2048
                }));
                let total = estimate(&cfg, &cfg.new_model(50280), None).total();
                let budget = budget_bytes(cfg.vram_gb.unwrap());
                assert!(
                    total as f64 <= 0.9 * budget as f64,
                    "{vram} {size} {arch}: {} of {}",
                    gib(total),
                    gib(budget)
                );
                assert!(check_fit(&cfg, |_| total).is_ok());
            }
        }
    }

    #[test]
    fn a_profile_that_cannot_fit_says_what_would() {
        let total = |c: &TrainConfig| estimate(c, &c.new_model(50280), None).total();
        // The large model's 24gb run on an 8 GB card: a smaller micro-batch fits.
        let mut cfg = resolved(serde_json::json!({"vram": "24gb", "model_size": "large"}));
        cfg.vram = Some("8gb".into());
        cfg.vram_gb = Some(8.0);
        let e = check_fit(&cfg, total).unwrap_err();
        assert!(
            e.starts_with("--vram 8gb: a step of this run needs an estimated"),
            "{e}"
        );
        let advice = e.split("it fits with ").nth(1).expect(&e);
        let b: usize = advice.split(' ').nth(1).unwrap().parse().unwrap();
        let fitted = TrainConfig {
            batch_size: b,
            grad_accum: 16usize.div_ceil(b),
            grad_checkpointing: advice.contains("--grad-checkpointing"),
            ..cfg.clone()
        };
        assert!(total(&fitted) <= budget_bytes(8.0), "{e}");
        assert!(b < cfg.batch_size, "{e}");
        // 780m at 8 GB: nothing does.
        let mut big = resolved(serde_json::json!({"vram": "8gb", "model_size": "780m"}));
        big.seq_len = 8192;
        let e = check_fit(&big, total).unwrap_err();
        assert!(e.contains("use a smaller --model-size"), "{e}");
    }

    #[test]
    fn adapters_count_the_frozen_base_at_its_dtype_and_train_little() {
        let model = Config::new(768, 12, 32768);
        let mut cfg = TrainConfig {
            batch_size: 1,
            seq_len: 512,
            lora_rank: 8,
            ..Default::default()
        };
        let l = super::super::adapters::config(&cfg, &model).unwrap();
        let full = estimate(&cfg, &model, None);
        let bf16 = estimate(&cfg, &model, Some(&l));
        let p = MambaLM::num_params(&model) as u64;
        let a = adapter_params(&model, &l);
        // in_proj (768 -> 3072) and x_proj (1536 -> 80) of 12 layers at rank 8.
        assert_eq!(a, 12 * 8 * ((768 + 3072) + (1536 + 80)));
        assert_eq!((bf16.grads, bf16.optimizer), (4 * a, 8 * a));
        let matrices: Vec<u64> = MambaLM::params(&model)
            .iter()
            .filter(|(_, q)| q.init.is_matrix())
            .map(|(_, q)| q.shape.iter().product::<usize>() as u64)
            .collect();
        let widest = matrices.iter().max().unwrap();
        cfg.lora_base_dtype = "f32".into();
        let f32 = estimate(&cfg, &model, Some(&l));
        // The base, one matrix widened to f32 at a time, the adapters.
        assert_eq!(f32.params, 4 * p + 4 * widest + 4 * a);
        assert_eq!(f32.params - bf16.params, 2 * matrices.iter().sum::<u64>());
        // Weights, gradients and moments: 16 bytes a parameter in full; 4 or 2 (and one widened matrix) under adapters.
        let state = |e: &Estimate| e.params + e.grads + e.optimizer;
        assert!(state(&f32) < state(&full) / 2, "{f32:?} vs {full:?}");
        assert!(state(&bf16) < state(&full) / 4, "{bf16:?} vs {full:?}");
        assert!(bf16.activations > full.activations);
    }
}
