//! Every training setting, declared once (nanoGPT's `learning_rate = 6e-4 # max learning rate`,
//! overridable from a file or the command line): its doc, its type, its default and its flag.
//! From the one table below [`settings!`] makes
//!
//! - [`TrainConfig`], the resolved settings: plain fields, saved in every checkpoint and printed
//!   by `--dry-run`, and its `Default` (the lowest configuration layer);
//! - [`TrainFlags`], each setting as an `Option` parsed from its flag (`mamba train` flattens
//!   it into its flags; the doc is the flag's help). It serializes to an object of only the
//!   flags given, the top layer of [`resolve`](super::config::resolve).
//!
//! A setting's name is its field's: the JSON key of `--config` files, `configs/*.json` and
//! checkpoints, and (in kebab case) its flag. Code that must name a setting as a string takes
//! [`key!`], which checks the name against [`TrainConfig`] when it compiles.

use mamba_model::config::preset_names;
use serde::{Deserialize, Serialize};

use super::choices::{DeviceSpec, ModelSize, Precision};
use mamba_model::LayerKind;

/// The name of a setting, as a string, checked against [`TrainConfig`]'s fields when it
/// compiles: `key!(vram)` is `"vram"`, `key!(vrma)` does not build.
macro_rules! key {
    ($name:ident) => {{
        let _ = |c: &$crate::train::settings::TrainConfig| {
            let _ = &c.$name;
        };
        stringify!($name)
    }};
}
pub(crate) use key;

/// The table's grammar, per setting: doc lines (the config field's doc and the flag's help),
/// serde attributes for the config field (what an older checkpoint lacks), then
/// `name: Type = default, flag: FlagType, #[arg(...)];`. The flag's type is the setting's, or
/// `String` for a value parsed (and refused with the allowed values) when the layers are
/// resolved; a setting without a flag has `#[arg(skip)]` and is set by files only.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $(#[serde($($serde:tt)*)])*
        $name:ident: $ty:ty = $default:expr, flag: $flag:ty, #[arg($($arg:tt)*)];
    )*) => {
        /// Every setting of a run (flat, as nanoGPT's), in the units of its flag.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TrainConfig {
            $($(#[doc = $doc])* $(#[serde($($serde)*)])* pub $name: $ty,)*
        }

        impl Default for TrainConfig {
            fn default() -> Self {
                TrainConfig {
                    $($name: $default,)*
                }
            }
        }

        /// The settings given on the command line (`None`: left to the lower layers), in the
        /// spelling of [`TrainConfig`]'s JSON.
        #[derive(clap::Args, Clone, Debug, Default, PartialEq, Serialize)]
        pub struct TrainFlags {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $name: Option<$flag>,
            )*
        }
    };
}

settings! {
    /// Architecture of a new model: mamba1 (selective SSM), mamba2 (SSD) or mamba3
    /// (trapezoidal, rotary) [default: mamba1; --init and --resume keep the checkpoint's]
    // Checkpoints from before Mamba-2 have no `arch`: they are Mamba-1.
    #[serde(default)]
    arch: LayerKind = LayerKind::Mamba1, flag: LayerKind, #[arg(long, value_name = "ARCH")];
    /// Mamba-3's MIMO rank R (0: SISO) of a new model [default: 0]
    #[serde(default)]
    mimo_rank: usize = 0, flag: usize, #[arg(long, value_name = "R")];
    /// Model preset (configs/models.json)
    model_size: ModelSize = ModelSize::default(), flag: String,
        #[arg(long, value_name = "NAME", help = preset_help())];
    /// VRAM profile: 8gb, 12gb, 16gb, 24gb, 32gb, 48gb (configs/vram.json; sizes in GiB, as a
    /// GPU sold as "8 GB" has 8 GiB), or auto (CUDA builds): the largest that fits the free memory
    vram: Option<String> = None, flag: String, #[arg(long, value_name = "NAME")];
    /// Training profile: default, fast, careful (configs/training.json)
    profile: String = "default".into(), flag: String, #[arg(long, value_name = "NAME")];
    /// Memory budget from the VRAM profile, in GiB (for `--dry-run`): the unit in which a
    /// GPU sold as "8 GB" has 8.
    vram_gb: Option<f64> = None, flag: f64, #[arg(skip)];
    /// Tokens per sequence
    seq_len: usize = 1024, flag: usize, #[arg(long)];
    /// Sequences per micro-batch
    // On each rank: a step of the whole run sees `batch_size x ranks` sequences per micro-batch.
    batch_size: usize = 8, flag: usize, #[arg(long)];
    /// Processes training data-parallel, each on `batch_size` windows of every global batch
    /// (set from the MPI launcher, not by a flag).
    // Configurations from before data parallelism are one process.
    #[serde(default = "one_rank")]
    ranks: usize = 1, flag: usize, #[arg(skip)];
    /// Micro-batches per optimizer step
    grad_accum: usize = 1, flag: usize, #[arg(long)];
    /// Compute precision of the matmuls: fp32, bf16, fp16 (parameters and optimizer stay f32)
    precision: Precision = Precision::Fp32, flag: String, #[arg(long)];
    /// Recompute each block in backward: less memory, one more forward per block
    // A bare switch: present sets true, absent leaves the layers' value.
    grad_checkpointing: bool = false, flag: bool,
        #[arg(long, num_args = 0, default_missing_value = "true")];
    /// Peak learning rate
    lr: f64 = 3e-4, flag: f64, #[arg(long)];
    /// Learning-rate floor at the end of the cosine
    min_lr: f64 = 3e-5, flag: f64, #[arg(long)];
    /// Linear warmup steps
    warmup_steps: u64 = 200, flag: u64, #[arg(long)];
    /// Optimizer steps to train for
    max_steps: u64 = 20000, flag: u64, #[arg(long)];
    /// AdamW weight decay (matrices only)
    weight_decay: f64 = 0.1, flag: f64, #[arg(long)];
    /// AdamW's first-moment decay
    beta1: f64 = 0.9, flag: f64, #[arg(skip)];
    /// AdamW's second-moment decay
    beta2: f64 = 0.95, flag: f64, #[arg(skip)];
    /// Global gradient-norm clip
    grad_clip: f64 = 1.0, flag: f64, #[arg(long)];
    /// Evaluate on the val split every N steps
    eval_every: u64 = 500, flag: u64, #[arg(long)];
    /// Val batches per evaluation
    eval_batches: usize = 20, flag: usize, #[arg(long)];
    /// Checkpoint every N steps
    save_every: u64 = 5000, flag: u64, #[arg(long)];
    /// Keep only the newest K periodic checkpoints (0: all)
    // `final/` is never removed.
    keep_last: usize = 0, flag: usize, #[arg(long, value_name = "K")];
    /// Print a log line every N steps
    log_every: u64 = 1, flag: u64, #[arg(long)];
    /// Seed of the initialisation and the data order
    seed: u64 = 0, flag: u64, #[arg(long)];
    /// Packed sequences held by the shuffle buffer
    shuffle_buffer: usize = 1024, flag: usize, #[arg(long)];
    /// Batches the loader prepares ahead
    prefetch: usize = 4, flag: usize, #[arg(long)];
    /// Threads decoding row groups
    reader_threads: usize = 2, flag: usize, #[arg(long)];
    /// The SSM and conv state start afresh at each packed document
    // The flag says the opposite, so its help is its own; present sets false.
    doc_reset: bool = true, flag: bool, #[arg(
        long = "no-doc-reset",
        num_args = 0,
        default_missing_value = "false",
        help = "Let packed documents see each other (no state reset at document starts)"
    )];
    /// cpu, cuda or cuda:N
    device: DeviceSpec = DeviceSpec::Cpu, flag: String, #[arg(long)];
    /// Train LoRA adapters of rank R on the frozen --init model instead of all its weights
    /// (0: full fine-tuning)
    // Checkpoints from before adapters trained every weight.
    #[serde(default)]
    lora_rank: usize = 0, flag: usize, #[arg(long, value_name = "R")];
    /// LoRA's alpha: the update is scaled by alpha / R [default: R]
    #[serde(default)]
    lora_alpha: Option<f64> = None, flag: f64, #[arg(long, value_name = "A")];
    /// Dropout on the adapters' input during training
    #[serde(default)]
    lora_dropout: f64 = 0.0, flag: f64, #[arg(long, value_name = "P")];
    /// Projections to adapt, comma-separated (e.g. in_proj,x_proj,out_proj) [default: those
    /// PEFT applies as we do: in_proj and x_proj (Mamba-1), in_proj (Mamba-2)]
    #[serde(default)]
    lora_targets: Option<String> = None, flag: String, #[arg(long, value_name = "LIST")];
    /// Dtype the frozen base is held in under adapters: bf16 or f32 (the math stays f32)
    #[serde(default = "bf16")]
    lora_base_dtype: String = bf16(), flag: String, #[arg(long, value_name = "DTYPE")];
}

fn bf16() -> String {
    "bf16".into()
}

fn one_rank() -> usize {
    1
}

/// `--model-size`'s help lists the names of the one preset table.
fn preset_help() -> String {
    format!(
        "Model preset: {} (configs/models.json)",
        preset_names().join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: TrainFlags,
    }

    fn given(args: &[&str]) -> serde_json::Value {
        let cli = Cli::try_parse_from(std::iter::once("train").chain(args.iter().copied()));
        serde_json::to_value(cli.unwrap().flags).unwrap()
    }

    #[test]
    fn only_the_flags_given_are_serialized_in_the_configs_spelling() {
        assert_eq!(given(&[]), serde_json::json!({}));
        assert_eq!(
            given(&["--lr", "1e-4", "--arch", "mamba2", "--precision", "bf16"]),
            serde_json::json!({"arch": "mamba2", "lr": 1e-4, "precision": "bf16"})
        );
        // Bare switches: present sets the setting, absent leaves it to the layers.
        assert_eq!(
            given(&["--grad-checkpointing", "--no-doc-reset"]),
            serde_json::json!({"grad_checkpointing": true, "doc_reset": false})
        );
        assert!(
            Cli::try_parse_from(["train", "--grad-checkpointing", "false"]).is_err(),
            "a switch takes no value"
        );
        // Settings without a flag have none.
        for flag in ["--ranks", "--vram-gb", "--beta1", "--beta2"] {
            assert!(Cli::try_parse_from(["train", flag, "1"]).is_err(), "{flag}");
        }
    }

    #[test]
    fn every_flag_is_a_setting_of_the_same_name() {
        use clap::CommandFactory;
        let defaults = serde_json::to_value(TrainConfig::default()).unwrap();
        let keys = defaults.as_object().unwrap();
        assert_eq!(keys.len(), 36);
        let cmd = Cli::command();
        let mut flagged = 0;
        for arg in cmd.get_arguments().filter(|a| a.get_id() != "help") {
            let id = arg.get_id().as_str();
            assert!(keys.contains_key(id), "--{id} is no setting");
            let long = arg.get_long().unwrap();
            let want = match id {
                "doc_reset" => "no-doc-reset".to_string(),
                _ => id.replace('_', "-"),
            };
            assert_eq!(long, want);
            flagged += 1;
        }
        // ranks, vram_gb, beta1 and beta2 are set by files (or the launcher) only.
        assert_eq!(flagged, keys.len() - 4);
        assert_eq!(key!(doc_reset), "doc_reset");
    }
}
