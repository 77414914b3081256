//! The resolved training configuration and its layers, later wins: built-in defaults < model
//! preset (`configs/models.json`) < VRAM profile (`configs/vram.json`) < training profile
//! (`configs/training.json`) < a `--config` JSON file < command-line flags. The preset files
//! are compiled in, so the binary works from any directory. The result is saved in every
//! checkpoint. The settings themselves (names, types, defaults, flags) are declared once, in
//! [`settings`](super::settings); here are the layers and the range checks.

use serde_json::{Map, Value};

pub use super::choices::{ConfigError, DeviceSpec, ModelSize, Precision};
use super::settings::key;
pub use super::settings::{TrainConfig, TrainFlags};
pub use mamba_model::LayerKind;

const VRAM: &str = include_str!("../../configs/vram.json");
const TRAINING: &str = include_str!("../../configs/training.json");

impl TrainConfig {
    /// Windows per micro-batch over all ranks: what decides the batches a run sees.
    pub fn global_batch(&self) -> usize {
        self.batch_size * self.ranks.max(1)
    }

    /// A hash of every setting but the GPU's number (ranks use one GPU each), to check that
    /// data-parallel ranks agree.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let same = TrainConfig {
            device: match self.device {
                DeviceSpec::Cpu => DeviceSpec::Cpu,
                DeviceSpec::Cuda(_) => DeviceSpec::Cuda(None),
            },
            ..self.clone()
        };
        // DefaultHasher::new() has fixed keys: the same in every process of one build.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&same)
            .unwrap_or_default()
            .hash(&mut h);
        h.finish()
    }
}

/// The VRAM profiles and their sizes in GiB (configs/vram.json).
pub fn vram_profiles() -> Vec<(String, f64)> {
    table(VRAM)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.get(key!(vram_gb))?.as_f64()?)))
        .collect()
}

fn table(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn names(t: &Map<String, Value>) -> String {
    t.keys()
        .filter(|k| !k.starts_with('_'))
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

fn entry<'a>(
    t: &'a Map<String, Value>,
    what: &'static str,
    name: &str,
) -> Result<&'a Map<String, Value>, ConfigError> {
    t.get(name)
        .filter(|_| !name.starts_with('_'))
        .and_then(Value::as_object)
        .ok_or_else(|| ConfigError::Unknown {
            what,
            name: name.into(),
            allowed: names(t),
        })
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        if k != "train" && !k.starts_with('_') {
            into.insert(k.clone(), v.clone());
        }
    }
}

/// Resolves the layers. `file` is the parsed `--config` file (an object), `flags` the flags
/// given on the command line (an object of only those set).
pub fn resolve(
    file: &Map<String, Value>,
    flags: &Map<String, Value>,
) -> Result<TrainConfig, ConfigError> {
    let pick = |k: &str| flags.get(k).or_else(|| file.get(k)).cloned();
    let defaults = TrainConfig::default();
    let size = match pick(key!(model_size)) {
        Some(Value::String(s)) => s.parse()?,
        _ => defaults.model_size,
    };
    let vram = pick(key!(vram)).and_then(|v| v.as_str().map(String::from));
    let profile = pick(key!(profile))
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or(defaults.profile.clone());

    let mut out = match serde_json::to_value(&defaults) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    merge(&mut out, &size.preset().train);
    if let Some(v) = &vram {
        if v == "auto" {
            return Err(ConfigError::Range {
                name: key!(vram),
                value: "auto".into(),
                allowed: format!(
                    "{} (auto reads free GPU memory and needs a CUDA build)",
                    names(&table(VRAM))
                ),
            });
        }
        merge(&mut out, entry(&table(VRAM), "VRAM profile", v)?);
    }
    merge(
        &mut out,
        entry(&table(TRAINING), "training profile", &profile)?,
    );
    merge(&mut out, file);
    merge(&mut out, flags);
    let cfg: TrainConfig =
        serde_json::from_value(Value::Object(out)).map_err(|e| ConfigError::File {
            path: "configuration".into(),
            reason: e.to_string(),
        })?;
    cfg.validate()?;
    Ok(cfg)
}

fn check<T: PartialOrd + std::fmt::Display>(
    name: &'static str,
    v: T,
    lo: T,
    hi: T,
    allowed: &str,
) -> Result<(), ConfigError> {
    if v >= lo && v <= hi {
        return Ok(());
    }
    Err(ConfigError::Range {
        name,
        value: v.to_string(),
        allowed: allowed.into(),
    })
}

/// [`check`] of a setting, named by its field.
macro_rules! check {
    ($cfg:ident.$name:ident, $lo:expr, $hi:expr, $allowed:expr) => {
        check(stringify!($name), $cfg.$name, $lo, $hi, $allowed)
    };
}

impl TrainConfig {
    /// Every value within its range; the error names the value and the range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check!(self.seq_len, 1, 1 << 20, "1..=1048576")?;
        check!(self.batch_size, 1, 4096, "1..=4096")?;
        check!(self.grad_accum, 1, 4096, "1..=4096")?;
        check!(self.lr, 1e-12, 1.0, "(0, 1]")?;
        check!(self.min_lr, 0.0, self.lr, "[0, lr]")?;
        check!(self.max_steps, 1, u64::MAX, "1 or more")?;
        check!(self.warmup_steps, 0, 1 << 40, "0..=2^40")?;
        check!(self.weight_decay, 0.0, 1.0, "[0, 1]")?;
        check!(self.beta1, 0.0, 0.999_999, "[0, 1)")?;
        check!(self.beta2, 0.0, 0.999_999, "[0, 1)")?;
        check!(self.grad_clip, 1e-12, f64::MAX, "> 0")?;
        check!(self.eval_every, 1, u64::MAX, "1 or more")?;
        check!(self.eval_batches, 1, 100_000, "1..=100000")?;
        check!(self.save_every, 1, u64::MAX, "1 or more")?;
        check!(self.log_every, 1, u64::MAX, "1 or more")?;
        check!(self.shuffle_buffer, 0, 1 << 20, "0..=1048576")?;
        check!(self.prefetch, 1, 1024, "1..=1024")?;
        check!(self.reader_threads, 1, 64, "1..=64")?;
        check!(self.lora_rank, 0, 4096, "0..=4096")?;
        check!(self.mimo_rank, 0, 64, "0..=64")?;
        if self.mimo_rank > 0 && self.arch != mamba_model::LayerKind::Mamba3 {
            return Err(ConfigError::Range {
                name: "mimo_rank",
                value: self.mimo_rank.to_string(),
                allowed: "0 unless --arch mamba3".into(),
            });
        }
        check!(self.lora_dropout, 0.0, 0.99, "[0, 0.99]")?;
        if let Some(alpha) = self.lora_alpha {
            check("lora_alpha", alpha, 1e-6, 1e6, "(0, 1e6]")?;
        }
        if !["bf16", "f32"].contains(&self.lora_base_dtype.as_str()) {
            return Err(ConfigError::Range {
                name: "lora_base_dtype",
                value: self.lora_base_dtype.clone(),
                allowed: "bf16 or f32".into(),
            });
        }
        Ok(())
    }

    /// A new model of the preset, architecture (and MIMO rank) for a vocabulary of `vocab`.
    pub fn new_model(&self, vocab: usize) -> mamba_model::Config {
        mamba_model::Config {
            mimo_rank: self.mimo_rank,
            ..self.model_size.config(self.arch, vocab)
        }
    }

    /// Tokens per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.grad_accum * self.seq_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn layers_apply_in_order() {
        let none = Map::new();
        let base = resolve(&none, &obj(json!({"model_size": "tiny"}))).unwrap();
        assert_eq!(base.seq_len, 128); // model preset over the defaults
        assert_eq!(base.lr, 3e-4); // default training profile
        let v = resolve(&none, &obj(json!({"vram": "8gb"}))).unwrap();
        assert_eq!((v.batch_size, v.grad_accum), (8, 2));
        assert_eq!(v.precision, Precision::Fp16);
        assert!(!v.grad_checkpointing);
        let file = obj(json!({"vram": "8gb", "batch_size": 3, "profile": "fast"}));
        let f = resolve(&file, &none).unwrap();
        assert_eq!((f.batch_size, f.grad_accum, f.lr), (3, 2, 1e-3));
        let flags = obj(json!({"batch_size": 5, "lr": 2e-4}));
        let g = resolve(&file, &flags).unwrap();
        assert_eq!((g.batch_size, g.lr, g.grad_accum), (5, 2e-4, 2));
    }

    #[test]
    fn every_profile_and_example_resolves() {
        for v in ["8gb", "12gb", "16gb", "24gb", "32gb", "48gb"] {
            let c = resolve(&Map::new(), &obj(json!({ "vram": v }))).unwrap();
            assert_eq!(c.vram_gb, Some(v.trim_end_matches("gb").parse().unwrap()));
        }
        for p in ["default", "fast", "careful"] {
            resolve(&Map::new(), &obj(json!({ "profile": p }))).unwrap();
        }
        for ex in [
            include_str!("../../configs/example_8gb.json"),
            include_str!("../../configs/example_24gb.json"),
        ] {
            resolve(&obj(serde_json::from_str(ex).unwrap()), &Map::new()).unwrap();
        }
    }

    #[test]
    fn bad_values_name_the_value_and_range() {
        let none = Map::new();
        let e = resolve(&none, &obj(json!({"batch_size": 0}))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "batch_size = 0 is out of range (allowed: 1..=4096)"
        );
        let e = resolve(&none, &obj(json!({"vram": "10gb"}))).unwrap_err();
        assert!(e.to_string().contains("`10gb`") && e.to_string().contains("12gb"));
        let e = resolve(&none, &obj(json!({"precision": "fp8"}))).unwrap_err();
        assert!(e.to_string().contains("fp8") && e.to_string().contains("bf16"));
        let e = resolve(&obj(json!({"batch": 3})), &none).unwrap_err();
        assert!(e.to_string().contains("batch"), "{e}");
        let e = resolve(&none, &obj(json!({"min_lr": 1.0}))).unwrap_err();
        assert!(e.to_string().contains("min_lr = 1"), "{e}");
        let e = resolve(&none, &obj(json!({"device": "gpu"}))).unwrap_err();
        assert!(e.to_string().contains("cuda:N"), "{e}");
    }
}
