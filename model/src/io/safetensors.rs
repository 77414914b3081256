//! Safetensors files: one file, or shards listed by a `*.safetensors.index.json` as
//! transformers writes them past a size.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::mapped::Mapping;
use crate::error::{Error, Result};

/// Writes named f32 tensors to a safetensors file with `{"format": "pt"}` metadata (what
/// transformers expects). The bytes depend only on the names and values. Each tensor becomes
/// bytes only as it is written, so a save takes one tensor's worth of memory, not the model's.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    extra_metadata: &[(String, String)],
) -> Result<()> {
    let failed = std::cell::RefCell::new(None);
    let views = tensors.iter().map(|(name, t)| {
        let view = Lazy {
            t,
            name,
            shape: t.dims().to_vec(),
            failed: &failed,
        };
        (name.clone(), view)
    });
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), "pt".into());
    for (k, v) in extra_metadata {
        meta.insert(k.clone(), v.clone());
    }
    // A new file renamed over the old one: a reader that maps the old file keeps it whole.
    let tmp = path.with_extension("safetensors.tmp");
    let written = safetensors::tensor::serialize_to_file(views, Some(meta), &tmp);
    if let Some((name, e)) = failed.into_inner() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::tensor(path, name, e));
    }
    written.map_err(|e| Error::file(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A tensor that becomes f32 little-endian bytes when the writer asks for them; a failure is
/// kept (the writer's interface has no error) and reported after the write.
struct Lazy<'a> {
    t: &'a Tensor,
    name: &'a str,
    shape: Vec<usize>,
    failed: &'a std::cell::RefCell<Option<(String, candle_core::Error)>>,
}

impl safetensors::View for Lazy<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let values = self
            .t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_device(&Device::Cpu))
            .and_then(|t| t.to_vec1::<f32>());
        match values {
            Ok(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Err(e) => {
                self.failed
                    .borrow_mut()
                    .get_or_insert((self.name.to_string(), e));
                vec![0; self.data_len()].into()
            }
        }
    }

    fn data_len(&self) -> usize {
        4 * self.t.elem_count()
    }
}

/// A tensor's f32 values as read from a file, to become a candle tensor (or a variable) without
/// another copy.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

/// A safetensors header's `__metadata__`.
pub type Metadata = HashMap<String, String>;

/// How a load holds f32 values: read into memory (what training needs, as it writes every
/// value), or left in a copy-on-write map of the file where [`super::mapped`] can (for runs
/// that only read the weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    Read,
    Map,
}

/// Largest safetensors header accepted (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Reads every tensor of a safetensors file as f32 values (f16, bf16 and f64 are converted),
/// one tensor at a time straight from the file, so memory holds the values once; with
/// [`Load::Map`], f32 values stay in a map of the file where [`super::mapped`] can. Also
/// returns the header's `__metadata__`. Errors name the file and, where it is one tensor's
/// fault, the tensor.
pub fn read_f32(path: &Path, load: Load) -> Result<(Vec<(String, HostTensor)>, Metadata)> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| Error::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| Error::file(path, "not a safetensors file (too short)"))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || 8 + n > file_len {
        return Err(Error::file(
            path,
            format!("not a safetensors file (header of {n} bytes)"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| Error::file(path, format!("header: {e}")))?;
    let data_len = file_len - 8 - n;
    let mut meta = HashMap::new();
    let mut entries = Vec::new();
    for (name, v) in &header {
        if name == "__metadata__" {
            for (k, x) in v.as_object().into_iter().flatten() {
                meta.insert(k.clone(), x.as_str().unwrap_or_default().to_string());
            }
            continue;
        }
        let bad = |m: &str| Error::tensor(path, name, m);
        let dtype = match v.get("dtype").and_then(|d| d.as_str()) {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("F64") => DType::F64,
            Some(d) => return Err(bad(&format!("unsupported dtype {d}"))),
            None => return Err(bad("no dtype")),
        };
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| bad("bad shape"))?;
        let offsets: Vec<u64> = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect())
            .ok_or_else(|| bad("bad data_offsets"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("bad data_offsets"));
        };
        // Checked: a hostile header must not overflow the size computation.
        let bytes = shape
            .iter()
            .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d));
        if end < begin || end > data_len || bytes != Some((end - begin) as usize) {
            return Err(bad(
                "data_offsets disagree with its shape or the file's length",
            ));
        }
        entries.push((begin, end, name.clone(), dtype, shape));
    }
    entries.sort_by_key(|e| e.0);
    // Tensors sharing bytes are refused (as the safetensors crate does): mapped, they would
    // be two tensors over the same memory.
    for pair in entries.windows(2) {
        let ((_, end, ..), (next, _, name, ..)) = (&pair[0], &pair[1]);
        if next < end {
            return Err(Error::tensor(path, name, "data overlaps another tensor's"));
        }
    }
    let map = match load {
        Load::Map => Mapping::new(&f, file_len),
        Load::Read => None,
    };
    let mut out = Vec::with_capacity(entries.len());
    for (begin, _, name, dtype, shape) in entries {
        let at = 8 + n + begin;
        let numel: usize = shape.iter().product();
        let mapped = map.as_ref().filter(|_| dtype == DType::F32);
        let data = match (dtype, mapped.and_then(|m| m.f32s(at as usize, numel))) {
            (_, Some(v)) => v,
            (DType::F32, None) => {
                let mut v = vec![0f32; numel];
                read_f32_at(&f, at, &mut v).map_err(io)?;
                v
            }
            (_, None) => {
                let mut bytes = vec![0u8; numel * dtype.size_in_bytes()];
                f.seek(SeekFrom::Start(at)).map_err(io)?;
                f.read_exact(&mut bytes).map_err(io)?;
                Tensor::from_raw_buffer(&bytes, dtype, &[numel], &Device::Cpu)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| Error::tensor(path, &name, e))?
            }
        };
        out.push((name, HostTensor { data, shape }));
    }
    Ok((out, meta))
}

/// Fills `v` with the little-endian f32 values at byte `at` of `f`, in pieces read side by side
/// on the thread pool: the first write to each fresh page of `v` makes the kernel zero it, most
/// of the time of a load, and that work splits across cores.
fn read_f32_at(f: &std::fs::File, at: u64, v: &mut [f32]) -> std::io::Result<()> {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;
    const PIECE: usize = 1 << 20; // values: 4 MiB
    v.par_chunks_mut(PIECE)
        .enumerate()
        .try_for_each(|(i, piece)| {
            // Safety: any bytes are a valid f32; the slice covers exactly the piece's bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(piece.as_mut_ptr() as *mut u8, piece.len() * 4)
            };
            f.read_exact_at(bytes, at + (i * PIECE * 4) as u64)?;
            // The format is little-endian (a no-op on the machines we run on).
            piece
                .iter_mut()
                .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
            Ok(())
        })
}

/// Reads every tensor of a safetensors file as f32 on `device` (f16/bf16/f64 are converted).
pub fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let (tensors, meta) = read_f32(path, Load::Read)?;
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let t =
            Tensor::from_vec(t.data, t.shape, device).map_err(|e| Error::tensor(path, &name, e))?;
        out.insert(name, t);
    }
    Ok((out, meta))
}

/// The index of a sharded checkpoint, as transformers names it.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Reads a sharded checkpoint from its `index` (`{"weight_map": {tensor: file}}`): every tensor
/// from the shard the index names, as f32 values. Errors name the index or the shard.
pub fn read_sharded(index: &Path, load: Load) -> Result<HashMap<String, HostTensor>> {
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
        let (tensors, _) = read_f32(&path, load)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = Tensor::arange(0f32, 6., &Device::Cpu)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        write_safetensors(&path, &[("w".into(), t)], &[]).unwrap();
        let (read, meta) = read_f32(&path, Load::Read).unwrap();
        assert_eq!(read[0].1.data, [0., 1., 2., 3., 4., 5.]);
        assert_eq!(
            (read[0].1.shape.as_slice(), meta["format"].as_str()),
            (&[2, 3][..], "pt")
        );
        let bytes = std::fs::read(&path).unwrap();
        // Truncated in the data, in the header, before the header's length.
        for cut in [bytes.len() - 4, 20, 3] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let e = read_f32(&path, Load::Read).unwrap_err().to_string();
            assert!(e.contains("w.safetensors"), "{e}");
        }
        // Two tensors over the same bytes.
        let two = [("a", [0, 8]), ("b", [4, 12])].map(|(n, [b, e])| {
            format!(r#""{n}":{{"dtype":"F32","shape":[2],"data_offsets":[{b},{e}]}}"#)
        });
        let header = format!("{{{}}}", two.join(","));
        let mut overlapping = (header.len() as u64).to_le_bytes().to_vec();
        overlapping.extend(header.bytes().chain([0u8; 12]));
        std::fs::write(&path, overlapping).unwrap();
        let e = read_f32(&path, Load::Map).unwrap_err().to_string();
        assert!(e.contains("tensor `b`") && e.contains("overlaps"), "{e}");
        // A header whose offsets disagree with the shape.
        let text = String::from_utf8_lossy(&bytes).replace("[2,3]", "[3,3]");
        std::fs::write(&path, text.as_bytes()).unwrap();
        let e = read_f32(&path, Load::Read).unwrap_err().to_string();
        assert!(
            e.contains("tensor `w`") && e.contains("data_offsets"),
            "{e}"
        );
    }
}
