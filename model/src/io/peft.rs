//! LoRA adapters in PEFT's format: a folder with `adapter_config.json` and
//! `adapter_model.safetensors` (A and B under `base_model.model.<module>.lora_{A,B}.weight`),
//! which PEFT's `PeftModel.from_pretrained(base, folder)` loads.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use serde_json::{json, Value};

use super::safetensors::{read_safetensors, write_safetensors};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lora::{Adapters, LoraConfig};

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Writes `adapters` into `dir` (created if missing); `base` is recorded as the base model.
/// Each file is written under a temporary name and renamed.
pub fn save(dir: &Path, adapters: &Adapters, base: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let c = &adapters.cfg;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": c.rank,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "target_modules": c.targets,
        "use_rslora": c.rslora,
        "use_dora": false,
        "fan_in_fan_out": false,
        "bias": "none",
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::file(dir, e))?;
    let path = dir.join(ADAPTER_CONFIG);
    let tmp = dir.join(format!("{ADAPTER_CONFIG}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &adapters.file_named(), &[])
}

/// Reads the adapter in `dir` for a base model of config `model`. A PEFT option this tool
/// does not compute (DoRA, biases, per-module ranks, ...) is refused by name.
pub fn load(dir: &Path, model: &Config, device: &Device) -> Result<Adapters> {
    let cpath = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cpath).map_err(|e| Error::io(&cpath, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::file(&cpath, e))?;
    let lcfg = config_of(&v).map_err(|m| Error::file(&cpath, m))?;
    let wpath = dir.join(ADAPTER_WEIGHTS);
    let (tensors, _) = read_safetensors(&wpath, device)?;
    let tensors: BTreeMap<_, _> = tensors.into_iter().collect();
    Adapters::from_tensors(model, lcfg, tensors).map_err(|e| Error::file(&wpath, e))
}

/// The LoRA settings of a PEFT `adapter_config.json`.
fn config_of(v: &Value) -> std::result::Result<LoraConfig, String> {
    let peft_type = v["peft_type"].as_str().unwrap_or("");
    if peft_type != "LORA" {
        return Err(format!(
            "peft_type is {peft_type:?}; only LORA adapters load here"
        ));
    }
    let refuse = |key: &str, why: &str| -> std::result::Result<(), String> {
        let set = match &v[key] {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => s != "none",
            Value::Object(o) => !o.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Number(_) => true,
        };
        match set {
            true => Err(format!("{key} is set ({why}); this tool cannot apply it")),
            false => Ok(()),
        }
    };
    refuse("use_dora", "DoRA")?;
    refuse("fan_in_fan_out", "Conv1D-style weights")?;
    refuse("bias", "trained biases")?;
    refuse("modules_to_save", "fully trained modules")?;
    refuse("rank_pattern", "per-module ranks")?;
    refuse("alpha_pattern", "per-module alphas")?;
    refuse("layers_to_transform", "adapters on some layers only")?;
    refuse("lora_bias", "trained biases")?;
    refuse("target_parameters", "adapters on parameters")?;
    let rank = v["r"].as_u64().ok_or("no rank r")? as usize;
    let targets = match &v["target_modules"] {
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("target_modules is not a list of names")?,
        Value::String(s) => {
            return Err(format!(
                "target_modules is the pattern {s:?}; list the module names instead"
            ))
        }
        _ => return Err("no target_modules".into()),
    };
    Ok(LoraConfig {
        rank,
        alpha: v["lora_alpha"].as_f64().ok_or("no lora_alpha")?,
        dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
        targets,
        rslora: v["use_rslora"].as_bool().unwrap_or(false),
    })
}
