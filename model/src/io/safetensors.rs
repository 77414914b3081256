//! Safetensors files: one file, or shards listed by a `*.safetensors.index.json` as
//! transformers writes them past a size.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Writes named f32 tensors to a safetensors file with `{"format": "pt"}` metadata (what
/// transformers expects). The bytes depend only on the names and values.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    extra_metadata: &[(String, String)],
) -> Result<()> {
    let mut bufs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_device(&Device::Cpu)?;
        let v = t.to_vec1::<f32>()?;
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        bufs.push((name.clone(), tensors_shape(tensors, name), bytes));
    }
    let views = bufs
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::tensor(path, n, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), "pt".into());
    for (k, v) in extra_metadata {
        meta.insert(k.clone(), v.clone());
    }
    let bytes =
        safetensors::tensor::serialize(views, Some(meta)).map_err(|e| Error::file(path, e))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn tensors_shape(tensors: &[(String, Tensor)], name: &str) -> Vec<usize> {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.dims().to_vec())
        .unwrap_or_default()
}

/// Reads every tensor of a safetensors file as f32 on `device` (f16/bf16/f64 are converted).
pub fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::file(path, e))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| Error::file(path, e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(Error::tensor(
                    path,
                    &name,
                    format!("unsupported dtype {other:?}"),
                ))
            }
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_device(device))
            .map_err(|e| Error::tensor(path, &name, e))?;
        out.insert(name, t);
    }
    Ok((out, meta))
}

/// The index of a sharded checkpoint, as transformers names it.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Reads a sharded checkpoint from its `index` (`{"weight_map": {tensor: file}}`): every tensor
/// from the shard the index names, as f32 on `device`. Errors name the index or the shard.
pub fn read_sharded(index: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(index, e))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index, "no `weight_map` object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<&str> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains('\\'))
            .ok_or_else(|| Error::tensor(index, name, "shard is not a file name"))?;
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files.sort_unstable();
    let mut out = HashMap::new();
    for file in files {
        let path = dir.join(file);
        let (tensors, _) = read_safetensors(&path, device)?;
        for (name, t) in tensors {
            if map.get(&name).and_then(|f| f.as_str()) == Some(file) {
                out.insert(name, t);
            }
        }
    }
    if let Some(name) = map.keys().find(|n| !out.contains_key(*n)) {
        return Err(Error::tensor(
            index,
            name,
            "not in the shard the index names",
        ));
    }
    Ok(out)
}

/// Writes `tensors` (in order) as `dir/model.safetensors` when they fit in `max_bytes`, else as
/// shards `model-0000i-of-0000N.safetensors` of at most `max_bytes` each (a larger tensor gets
/// a shard of its own) with [`INDEX_FILE`], as transformers' `save_pretrained` does. Files of
/// the other layout left in `dir` by an earlier save are removed, so a load finds this one.
pub fn write_checkpoint_weights(
    dir: &Path,
    tensors: &[(String, Tensor)],
    max_bytes: usize,
) -> Result<()> {
    let size = |t: &Tensor| t.elem_count() * 4;
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut used = 0;
    for (name, t) in tensors {
        let last = shards.len() - 1;
        if used + size(t) > max_bytes && !shards[last].is_empty() {
            shards.push(Vec::new());
            used = 0;
        }
        used += size(t);
        let last = shards.len() - 1;
        shards[last].push((name.clone(), t.clone()));
    }
    remove_stale(dir, shards.len() == 1)?;
    if shards.len() == 1 {
        return write_safetensors(&dir.join("model.safetensors"), tensors, &[]);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        write_safetensors(&dir.join(&file), shard, &[])?;
        for (name, _) in shard {
            weight_map.insert(name.clone(), file.clone().into());
        }
    }
    let total: usize = tensors.iter().map(|(_, t)| size(t)).sum();
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let path = dir.join(INDEX_FILE);
    let text = serde_json::to_string_pretty(&index).map_err(|e| Error::file(&path, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
}

/// Removes earlier shards and index, and the single file when shards are written.
fn remove_stale(dir: &Path, single: bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let shard = name.starts_with("model-") && name.ends_with(".safetensors");
        let stale = shard || name == INDEX_FILE || (!single && name == "model.safetensors");
        if stale {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}
