//! GGUF (version 3), the file llama.cpp, ollama and LM Studio run: a model's tensors under
//! llama.cpp's names and shape conventions (architectures `mamba` and `mamba2`), its
//! hyper-parameters as `{arch}.*` keys, and whatever else the caller adds (the tokenizer's
//! `tokenizer.ggml.*`). Written to a temporary name and renamed. candle's q8_0 blocks are
//! ggml's (an f16 scale amax / 127 and 32 rounded int8 values).
//!
//! What llama.cpp's converter keeps in f32 stays f32 here too (norms, biases, the conv, A and
//! D: its CPU kernels read them as f32); the projections, the embedding and the head take the
//! asked type, and a q8_0 tensor whose rows are not a multiple of 32 falls back to f16 as
//! there.

use std::io::Write;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::MambaLM;

/// The type a GGUF export gives its matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl std::str::FromStr for GgufType {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<GgufType, String> {
        match s {
            "f32" => Ok(GgufType::F32),
            "f16" => Ok(GgufType::F16),
            "bf16" => Ok(GgufType::Bf16),
            "q8_0" => Ok(GgufType::Q8_0),
            _ => Err(format!("unknown type `{s}` (valid: f32, f16, bf16, q8_0)")),
        }
    }
}

impl GgufType {
    /// llama.cpp's `general.file_type` (its LlamaFileType) for a file of this type.
    fn file_type(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q8_0 => 7,
            GgufType::Bf16 => 32,
        }
    }

    fn ggml(self) -> GgmlDType {
        match self {
            GgufType::F32 => GgmlDType::F32,
            GgufType::F16 => GgmlDType::F16,
            GgufType::Bf16 => GgmlDType::BF16,
            GgufType::Q8_0 => GgmlDType::Q8_0,
        }
    }
}

/// A metadata value of the types llama.cpp reads (it checks each key's type strictly).
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

/// A GGUF file being put together: its metadata and tensors, in writing order.
pub struct Gguf {
    meta: Vec<(String, Meta)>,
    tensors: Vec<(String, QTensor)>,
}

/// Bytes every tensor's data is aligned to (GGUF's default, `general.alignment` unset).
const ALIGN: usize = 32;

impl Gguf {
    /// `model` in llama.cpp's layout for its architecture, matrices in `ty`. Refuses what
    /// llama.cpp would compute differently (a model of several layer kinds, or a kind's own
    /// limits, see [`crate::config::LayerKind::gguf_limits`]).
    pub fn of_model(model: &MambaLM, ty: GgufType) -> Result<Gguf> {
        let cfg = model.config();
        if cfg.family != crate::config::Family::Mamba {
            return Err(Error::Config(format!(
                "export to llama.cpp of {} models is not supported yet; Mamba-1 and Mamba-2 models export",
                cfg.family.name()
            )));
        }
        let kind = cfg.kind().ok_or_else(|| {
            Error::Config(format!(
                "llama.cpp has no architecture for a model of several layer kinds ({})",
                cfg.arch_name()
            ))
        })?;
        kind.gguf_limits(cfg).map_err(Error::Config)?;
        let arch = kind.gguf_arch();
        let key = |k: &str| format!("{arch}.{k}");
        let mut g = Gguf {
            meta: vec![
                ("general.architecture".into(), Meta::Str(arch.into())),
                ("general.type".into(), Meta::Str("model".into())),
                ("general.file_type".into(), Meta::U32(ty.file_type())),
                ("general.quantization_version".into(), Meta::U32(2)),
                // A recurrent model has no position limit: llama.cpp's converter writes 2^20.
                (key("context_length"), Meta::U32(1 << 20)),
                (key("embedding_length"), Meta::U32(cfg.d_model as u32)),
                (key("feed_forward_length"), Meta::U32(0)),
                (key("attention.head_count"), Meta::U32(0)),
                (key("block_count"), Meta::U32(cfg.n_layer() as u32)),
                (
                    key("attention.layer_norm_rms_epsilon"),
                    Meta::F32(cfg.norm_eps as f32),
                ),
            ],
            tensors: vec![],
        };
        for (k, v) in kind.gguf_sizes(cfg) {
            g.meta.push((key(k), Meta::U32(v as u32)));
        }
        g.tensor("token_embd.weight", &model.embedding, ty)?;
        g.tensor("output_norm.weight", &model.norm_f, ty)?;
        if !cfg.tie_embeddings {
            g.tensor("output.weight", &model.head, ty)?;
        }
        for (i, layer) in model.layers.iter().enumerate() {
            g.tensor(&format!("blk.{i}.attn_norm.weight"), &layer.norm, ty)?;
            for (name, t) in layer.mixer.gguf_tensors()? {
                g.tensor(&format!("blk.{i}.{name}"), &t, ty)?;
            }
        }
        Ok(g)
    }

    /// Adds a metadata key (after the model's own).
    pub fn push_meta(&mut self, key: &str, value: Meta) {
        self.meta.push((key.to_string(), value));
    }

    /// Adds `t` as `name`: in `ty` where llama.cpp's converter would give it that type (a
    /// matrix named `.weight`, not a norm, not the conv), else in f32.
    fn tensor(&mut self, name: &str, t: &Tensor, ty: GgufType) -> Result<()> {
        let t = t.to_dtype(DType::F32)?.contiguous()?;
        let converted = name.ends_with(".weight")
            && t.rank() >= 2
            && !name.ends_with("_norm.weight")
            && !name.ends_with("ssm_conv1d.weight");
        let row = t.dims().last().copied().unwrap_or(0);
        let dtype = match (converted, ty) {
            (false, _) => GgmlDType::F32,
            (true, GgufType::Q8_0) if !row.is_multiple_of(32) => GgmlDType::F16,
            (true, ty) => ty.ggml(),
        };
        let q = QTensor::quantize(&t, dtype)?;
        self.tensors.push((name.to_string(), q));
        Ok(())
    }

    /// The file up to the tensors' data: header, metadata, tensor infos (dims innermost
    /// first, each tensor at its 32-byte aligned offset), padded to the alignment.
    fn header(&self) -> Vec<u8> {
        let mut w: Vec<u8> = Vec::new();
        w.extend(b"GGUF");
        w.extend(3u32.to_le_bytes());
        w.extend((self.tensors.len() as u64).to_le_bytes());
        w.extend((self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut w, k);
            put_meta(&mut w, v);
        }
        let mut offset = 0usize;
        for (name, q) in &self.tensors {
            put_str(&mut w, name);
            let dims = q.shape().dims();
            w.extend((dims.len() as u32).to_le_bytes());
            for &d in dims.iter().rev() {
                w.extend((d as u64).to_le_bytes());
            }
            w.extend(ggml_code(q.dtype()).to_le_bytes());
            w.extend((offset as u64).to_le_bytes());
            offset += q.storage_size_in_bytes().next_multiple_of(ALIGN);
        }
        w.resize(w.len().next_multiple_of(ALIGN), 0);
        w
    }

    /// Writes the file to `path` through a temporary name in the same folder, a tensor at a
    /// time.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("gguf.tmp");
        let written = self.write_to(&tmp);
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    fn write_to(&self, path: &Path) -> Result<()> {
        let io = |e| Error::io(path, e);
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(&self.header()).map_err(io)?;
        for (_, q) in &self.tensors {
            let data = q.data()?;
            let pad = data.len().next_multiple_of(ALIGN) - data.len();
            w.write_all(&data).map_err(io)?;
            w.write_all(&[0u8; ALIGN][..pad]).map_err(io)?;
        }
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }
}

/// ggml's type code of the types written here.
fn ggml_code(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F16 => 1,
        GgmlDType::Q8_0 => 8,
        GgmlDType::BF16 => 30,
        // F32, the only other type written here.
        _ => 0,
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    w.extend((s.len() as u64).to_le_bytes());
    w.extend(s.as_bytes());
}

/// A value with its GGUF type code first (u32 4, i32 5, f32 6, bool 7, string 8, array 9).
fn put_meta(w: &mut Vec<u8>, v: &Meta) {
    match v {
        Meta::U32(x) => {
            w.extend(4u32.to_le_bytes());
            w.extend(x.to_le_bytes());
        }
        Meta::F32(x) => {
            w.extend(6u32.to_le_bytes());
            w.extend(x.to_le_bytes());
        }
        Meta::Bool(x) => {
            w.extend(7u32.to_le_bytes());
            w.push(u8::from(*x));
        }
        Meta::Str(s) => {
            w.extend(8u32.to_le_bytes());
            put_str(w, s);
        }
        Meta::Strs(v) => {
            w.extend(9u32.to_le_bytes());
            w.extend(8u32.to_le_bytes());
            w.extend((v.len() as u64).to_le_bytes());
            v.iter().for_each(|s| put_str(w, s));
        }
        Meta::I32s(v) => {
            w.extend(9u32.to_le_bytes());
            w.extend(5u32.to_le_bytes());
            w.extend((v.len() as u64).to_le_bytes());
            v.iter().for_each(|x| w.extend(x.to_le_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, LayerKind};
    use candle_core::Device;

    fn refusal(cfg: Config) -> String {
        let (model, _) = MambaLM::init(&cfg, 1, &Device::Cpu).unwrap();
        match Gguf::of_model(&model, GgufType::F32) {
            Ok(_) => panic!("{:?} exported", cfg.layers),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn what_llama_cpp_cannot_compute_is_refused() {
        let m1 = Config::arch_preset(LayerKind::Mamba1, "tiny", 50).unwrap();
        let e = refusal(Config { expand: 3, ..m1 });
        assert!(e.contains("expand 2") && e.contains("expand 3"), "{e}");
        let m2 = Config::arch_preset(LayerKind::Mamba2, "tiny", 50).unwrap();
        let e = refusal(Config {
            dt_limit: (0.001, 0.1),
            ..m2.clone()
        });
        assert!(e.contains("time_step_limit"), "{e}");
        let e = refusal(Config {
            layers: vec![LayerKind::Mamba2, LayerKind::Mamba1],
            ..m2.clone()
        });
        assert!(e.contains("several layer kinds"), "{e}");
        // And what it can compute is not refused.
        let (model, _) = MambaLM::init(&m2, 1, &Device::Cpu).unwrap();
        assert!(Gguf::of_model(&model, GgufType::Q8_0).is_ok());
    }
}
