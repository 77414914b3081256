//! GPU-dependent defaults, settled before the configuration is resolved: `--vram auto` becomes
//! the largest VRAM profile that fits the GPU's free memory, and on a GPU of compute capability
//! 8.0 or newer the precision defaults to bf16 (same memory as fp16, no loss scaling needed).
//! An explicit `--precision` or `precision` in `--config` always wins.

use serde_json::{Map, Value};

use super::config::{self, DeviceSpec};
use super::settings::key;

/// Free memory (bytes) and compute capability (major) of a CUDA device.
pub struct GpuInfo {
    pub free_bytes: u64,
    pub major: i32,
}

/// Applies the GPU defaults to `flags` (the command line's settings) for the device that
/// `flags` or `file` name; `need` is the estimated peak of a run of the given flags (`None`
/// if they do not resolve). Returns notes to print; an error names the flag and what to do.
pub fn apply_defaults(
    file: &Map<String, Value>,
    flags: &mut Map<String, Value>,
    query: impl Fn(DeviceSpec) -> Result<GpuInfo, String>,
    need: impl Fn(&Map<String, Value>) -> Option<u64>,
) -> Result<Vec<String>, String> {
    let pick = |k: &str| flags.get(k).or_else(|| file.get(k)).and_then(Value::as_str);
    let device = match pick(key!(device)) {
        Some(d) => d.parse().map_err(|e: config::ConfigError| e.to_string())?,
        None => DeviceSpec::Cpu,
    };
    let auto = pick(key!(vram)) == Some("auto");
    let precision = key!(precision);
    let explicit_precision = flags.contains_key(precision) || file.contains_key(precision);
    if device == DeviceSpec::Cpu {
        return match auto {
            true => {
                Err("--vram auto reads the GPU's free memory: use it with --device cuda".into())
            }
            false => Ok(Vec::new()),
        };
    }
    let gpu = query(device)?;
    let mut notes = Vec::new();
    if auto {
        let free_gib = gpu.free_bytes as f64 / (1u64 << 30) as f64;
        // The largest profile within the free memory whose run of this model fits it.
        let fits = |name: &str, gb: f64| {
            let mut f = flags.clone();
            f.insert(key!(vram).into(), Value::from(name));
            gb <= free_gib && need(&f).is_some_and(|b| b <= gpu.free_bytes)
        };
        let fit = config::vram_profiles()
            .into_iter()
            .filter(|(name, gb)| fits(name, *gb))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let Some((name, _)) = fit else {
            return Err(format!(
                "--vram auto: {free_gib:.1} GiB free on {device}, where no profile's run of \
                 this model fits (--dry-run --vram 8gb shows what the smallest needs)"
            ));
        };
        notes.push(format!(
            "--vram auto: {free_gib:.1} GiB free on {device}: profile {name}"
        ));
        flags.insert(key!(vram).into(), Value::from(name));
    }
    if !explicit_precision && gpu.major >= 8 {
        notes.push(format!(
            "precision bf16 (compute capability {}.x)",
            gpu.major
        ));
        flags.insert(precision.into(), Value::from("bf16"));
    }
    Ok(notes)
}

/// Asks the driver about `device` (`cuda` or `cuda:N`).
#[cfg(feature = "cuda")]
pub fn query(device: DeviceSpec) -> Result<GpuInfo, String> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaContext};
    let ordinal = device.ordinal().unwrap_or(0);
    let err = |e: &dyn std::fmt::Debug| format!("--device {device}: no usable GPU ({e:?})");
    let ctx = CudaContext::new(ordinal).map_err(|e| err(&e))?;
    ctx.bind_to_thread().map_err(|e| err(&e))?;
    let (free, _total) = result::mem_get_info().map_err(|e| err(&e))?;
    let major = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .map_err(|e| err(&e))?;
    Ok(GpuInfo {
        free_bytes: free as u64,
        major,
    })
}

/// Without CUDA there is no GPU to ask.
#[cfg(not(feature = "cuda"))]
pub fn query(device: DeviceSpec) -> Result<GpuInfo, String> {
    Err(no_cuda(device))
}

/// What a build without CUDA says to `--device cuda`.
#[cfg(not(feature = "cuda"))]
pub fn no_cuda(device: DeviceSpec) -> String {
    format!(
        "--device {device}: this build has no CUDA support (build with --features cuda, see \
         scripts/cuda-build.sh); use --device cpu"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// A run that needs 1 GiB whatever its flags.
    fn any(_: &Map<String, Value>) -> Option<u64> {
        Some(1 << 30)
    }

    fn h200(_: DeviceSpec) -> Result<GpuInfo, String> {
        Ok(GpuInfo {
            free_bytes: 20 << 30,
            major: 9,
        })
    }

    #[test]
    fn auto_picks_the_largest_profile_that_fits_and_bf16() {
        let mut flags = obj(json!({"device": "cuda", "vram": "auto"}));
        let notes = apply_defaults(&Map::new(), &mut flags, h200, any).unwrap();
        assert_eq!(flags["vram"], "16gb", "{notes:?}");
        assert_eq!(flags["precision"], "bf16");
        // An explicit precision stays; an old GPU keeps the profile's.
        let mut flags = obj(json!({"device": "cuda:0", "precision": "fp16"}));
        apply_defaults(&Map::new(), &mut flags, h200, any).unwrap();
        assert_eq!(flags["precision"], "fp16");
        let t4 = |_: DeviceSpec| {
            Ok(GpuInfo {
                free_bytes: 15 << 30,
                major: 7,
            })
        };
        let mut flags = obj(json!({"vram": "auto"}));
        apply_defaults(&obj(json!({"device": "cuda"})), &mut flags, t4, any).unwrap();
        assert_eq!(flags["vram"], "12gb");
        assert!(!flags.contains_key("precision"));
    }

    #[test]
    fn auto_picks_by_what_the_run_of_the_model_needs() {
        // 20 GiB free: 24gb is too large by its size alone; with a model whose 16gb run
        // needs 21 GiB, 12gb is the largest that fits.
        let heavy = |f: &Map<String, Value>| match f["vram"].as_str() {
            Some("16gb") => Some(21 << 30),
            _ => Some(10 << 30),
        };
        let mut flags = obj(json!({"device": "cuda", "vram": "auto"}));
        apply_defaults(&Map::new(), &mut flags, h200, heavy).unwrap();
        assert_eq!(flags["vram"], "12gb");
    }

    #[test]
    fn auto_without_a_gpu_is_refused() {
        let mut flags = obj(json!({"vram": "auto"}));
        let e = apply_defaults(&Map::new(), &mut flags, h200, any).unwrap_err();
        assert!(e.contains("--device cuda"), "{e}");
        let tiny = |_: DeviceSpec| {
            Ok(GpuInfo {
                free_bytes: 1 << 30,
                major: 9,
            })
        };
        let mut flags = obj(json!({"vram": "auto", "device": "cuda"}));
        let e = apply_defaults(&Map::new(), &mut flags, tiny, any).unwrap_err();
        assert!(e.contains("no profile's run of this model fits"), "{e}");
        let mut flags = obj(json!({"device": "cpu"}));
        assert!(apply_defaults(&Map::new(), &mut flags, h200, any)
            .unwrap()
            .is_empty());
        assert!(flags.get("precision").is_none());
    }
}
