//! The settings that take one of a few values, parsed once from their flag or JSON spelling
//! (which is also how a checkpoint saves them), so the rest of the code matches on types.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;
use mamba_model::config::{preset_names, Preset};
use serde::{Deserialize, Serialize};

/// A setting that is out of range, unknown, or in a file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} = {value} is out of range (allowed: {allowed})")]
    Range {
        name: &'static str,
        value: String,
        allowed: String,
    },
    #[error("unknown {what} `{name}` (allowed: {allowed})")]
    Unknown {
        what: &'static str,
        name: String,
        allowed: String,
    },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

/// Serialised as its flag spelling, read back through [`FromStr`] (so a bad value in a
/// `--config` file gets the same message as on the command line).
macro_rules! as_string {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = ConfigError;
            fn try_from(s: String) -> Result<Self, ConfigError> {
                s.parse()
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
}

/// Compute precision of the matmuls; parameters and optimizer state stay f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    const ALL: [(Precision, &'static str); 3] = [
        (Precision::Fp32, "fp32"),
        (Precision::Bf16, "bf16"),
        (Precision::Fp16, "fp16"),
    ];

    /// The candle dtype the matmuls run in.
    pub fn dtype(self) -> DType {
        match self {
            Precision::Fp32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::Fp16 => DType::F16,
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("fp32", |x| x.1)
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|x| x.0)
            .ok_or_else(|| ConfigError::Unknown {
                what: "precision",
                name: s.into(),
                allowed: "fp32, bf16, fp16".into(),
            })
    }
}

as_string!(Precision);

/// Where a run computes: `cpu`, `cuda` (the first GPU) or `cuda:N`. `cuda` and `cuda:0` are
/// the same GPU but keep their spelling, as saved configs have it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(Option<usize>),
}

impl DeviceSpec {
    /// The GPU number, `None` on the CPU.
    pub fn ordinal(self) -> Option<usize> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(n) => Some(n.unwrap_or(0)),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(None) => f.write_str("cuda"),
            DeviceSpec::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "cpu" => return Ok(DeviceSpec::Cpu),
            "cuda" => return Ok(DeviceSpec::Cuda(None)),
            _ => {}
        }
        match s.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(n)) => Ok(DeviceSpec::Cuda(Some(n))),
            _ => Err(ConfigError::Unknown {
                what: "device",
                name: s.into(),
                allowed: "cpu, cuda, cuda:N".into(),
            }),
        }
    }
}

as_string!(DeviceSpec);

/// A model size preset of `configs/models.json`, by name.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelSize(&'static Preset);

impl ModelSize {
    pub fn preset(self) -> &'static Preset {
        self.0
    }

    /// The model of this size and architecture for a vocabulary of `vocab`.
    pub fn config(self, arch: mamba_model::LayerKind, vocab: usize) -> mamba_model::Config {
        mamba_model::Config::of(arch, self.0.d_model, self.0.n_layer, vocab)
    }
}

impl Default for ModelSize {
    fn default() -> Self {
        // The table is compiled in; a test resolves every default.
        "small"
            .parse()
            .expect("configs/models.json defines the `small` preset")
    }
}

impl fmt::Display for ModelSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0.name)
    }
}

impl FromStr for ModelSize {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Preset::named(s)
            .map(ModelSize)
            .map_err(|_| ConfigError::Unknown {
                what: "model size",
                name: s.into(),
                allowed: preset_names().join(", "),
            })
    }
}

as_string!(ModelSize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_bad_ones_are_named() {
        for s in ["fp32", "bf16", "fp16"] {
            let p: Precision = s.parse().unwrap();
            assert_eq!(serde_json::to_value(p).unwrap(), s);
        }
        assert_eq!(Precision::Fp16.dtype(), DType::F16);
        for s in ["cpu", "cuda", "cuda:0", "cuda:3"] {
            let d: DeviceSpec = serde_json::from_value(s.into()).unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap().ordinal(), Some(0));
        let e = serde_json::from_value::<DeviceSpec>("gpu".into()).unwrap_err();
        assert!(e.to_string().contains("`gpu`") && e.to_string().contains("cuda:N"));
        let e = "huge".parse::<ModelSize>().unwrap_err().to_string();
        assert!(e.contains("`huge`") && e.contains("tiny, small"), "{e}");
        assert_eq!(ModelSize::default().to_string(), "small");
    }
}
