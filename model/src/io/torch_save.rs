//! Writing PyTorch's checkpoint file (`torch.save` of a state dict: a zip, stored, of a pickle
//! of an OrderedDict of tensors and one raw little-endian storage per tensor), which mamba_ssm's
//! `MambaLMHeadModel.from_pretrained` reads with `torch.load`. Only f32 tensors, each its own
//! storage; the pickle uses protocol 2 and nothing but what rebuilds tensors.

use std::io::Write;
use std::path::Path;

use candle_core::Tensor;
use zip::write::SimpleFileOptions;

use crate::error::{Error, Result};

/// Pickle opcodes of protocol 2 used here.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

/// The pickle of an OrderedDict of `tensors`, storage i holding tensor i.
fn pickle(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut p = vec![op::PROTO, 2];
    let global = |p: &mut Vec<u8>, module: &str, name: &str| {
        p.push(op::GLOBAL);
        p.extend(format!("{module}\n{name}\n").bytes());
    };
    let text = |p: &mut Vec<u8>, s: &str| {
        p.push(op::BINUNICODE);
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.bytes());
    };
    let int = |p: &mut Vec<u8>, v: usize| -> Result<()> {
        let v =
            i32::try_from(v).map_err(|_| Error::Config(format!("{v} too large for a pickle")))?;
        p.push(op::BININT);
        p.extend(v.to_le_bytes());
        Ok(())
    };
    let ints = |p: &mut Vec<u8>, vs: &[usize]| -> Result<()> {
        p.push(op::MARK);
        for &v in vs {
            int(p, v)?;
        }
        p.push(op::TUPLE);
        Ok(())
    };
    let ordered_dict = |p: &mut Vec<u8>| {
        global(p, "collections", "OrderedDict");
        p.extend([op::EMPTY_TUPLE, op::REDUCE]);
    };
    ordered_dict(&mut p);
    p.push(op::MARK);
    for (i, (name, t)) in tensors.iter().enumerate() {
        text(&mut p, name);
        global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(op::MARK);
        // The storage, by persistent id: ('storage', torch.FloatStorage, key, 'cpu', numel).
        p.push(op::MARK);
        text(&mut p, "storage");
        global(&mut p, "torch", "FloatStorage");
        text(&mut p, &i.to_string());
        text(&mut p, "cpu");
        int(&mut p, t.elem_count())?;
        p.extend([op::TUPLE, op::BINPERSID]);
        int(&mut p, 0)?;
        let dims = t.dims();
        let strides: Vec<usize> = (0..dims.len())
            .map(|d| dims[d + 1..].iter().product())
            .collect();
        ints(&mut p, dims)?;
        ints(&mut p, &strides)?;
        p.push(op::NEWFALSE);
        ordered_dict(&mut p);
        p.extend([op::TUPLE, op::REDUCE]);
    }
    p.extend([op::SETITEMS, op::STOP]);
    Ok(p)
}

/// Writes `tensors` (f32, in this order) to `path` as `torch.save` of their state dict: under
/// a temporary name, then renamed.
pub fn save(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let tmp = path.with_extension("bin.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut z = zip::ZipWriter::new(file);
    let stored = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    let io = |e: std::io::Error| Error::io(&tmp, e);
    let zerr = |e: zip::result::ZipError| Error::file(&tmp, e);
    let entry = |z: &mut zip::ZipWriter<std::fs::File>, name: &str, bytes: &[u8]| -> Result<()> {
        z.start_file(format!("archive/{name}"), stored)
            .map_err(zerr)?;
        z.write_all(bytes).map_err(io)
    };
    entry(&mut z, "data.pkl", &pickle(tensors)?)?;
    entry(&mut z, "byteorder", b"little")?;
    for (i, (name, t)) in tensors.iter().enumerate() {
        let values = t
            .flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::tensor(&tmp, name, e))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        entry(&mut z, &format!("data/{i}"), &bytes)?;
    }
    entry(&mut z, "version", b"3\n")?;
    z.finish().map_err(zerr)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
