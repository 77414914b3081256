//! Loading with the checkpoint file mapped (`MapAware` installed, as the `mamba` binary does):
//! the weights equal the file's as the safetensors crate reads them, training writes never
//! reach the file, a save over the mapped file leaves the loaded model whole, a mapped tensor
//! that grows moves out, and the maps go when the last tensor does, on whatever thread. One
//! test: the count of live maps is process-wide.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use mamba_model::io::mapped::live_maps;
use mamba_model::io::safetensors::{read_f32, Load};
use mamba_model::{AdamW, AdamWConfig, Config, MambaLM, MapAware};

#[global_allocator]
static GLOBAL: MapAware<std::alloc::System> = unsafe { MapAware::new(std::alloc::System) };

fn logits(model: &MambaLM) -> Vec<f32> {
    let ids = Tensor::new(&[[3u32, 1, 4, 1, 5, 9, 2, 6]], &Device::Cpu).unwrap();
    let out = model.forward(&ids, None).unwrap();
    out.flatten_all().unwrap().to_vec1().unwrap()
}

/// Every tensor of `dir/model.safetensors` as the safetensors crate reads it.
fn file_tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32);
            let vals = v.data().chunks_exact(4);
            (
                name,
                vals.map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn model_tensors(model: &MambaLM) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = model
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn weights_stay_in_a_map_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::preset("tiny", 70).unwrap();
    let (original, _) = MambaLM::init(&cfg, 9, &Device::Cpu).unwrap();
    original.save(dir.path()).unwrap();
    let on_disk = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let (read, _) = MambaLM::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(live_maps(), 0, "a plain load reads");
    assert_eq!(model_tensors(&read), file_tensors(dir.path()));

    let (model, varmap) = MambaLM::load_mapped(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(live_maps(), 1, "the loaded weights map the file");
    assert_eq!(model_tensors(&model), file_tensors(dir.path()));
    let before = logits(&model);
    assert_eq!(before, logits(&original));

    // Training writes into the mapped parameters: copy-on-write, the file stays as it was.
    let mut opt = AdamW::from_varmap(&varmap, AdamWConfig::default()).unwrap();
    let ids = Tensor::new(&[[3u32, 1, 4, 1, 5, 9, 2, 6]], &Device::Cpu).unwrap();
    opt.backward_step(&model.loss(&ids, &ids, None, None).unwrap())
        .unwrap();
    let trained = logits(&model);
    assert_ne!(trained, before);
    let path = dir.path().join("model.safetensors");
    assert_eq!(std::fs::read(&path).unwrap(), on_disk);

    // Saving over the mapped file replaces it; the loaded model still reads its own weights.
    model.save(dir.path()).unwrap();
    assert_eq!(logits(&model), trained);
    let (reloaded, _) = MambaLM::load_mapped(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(live_maps(), 2);
    assert_eq!(logits(&reloaded), trained);
    std::thread::spawn(move || drop((model, varmap, opt, reloaded)))
        .join()
        .unwrap();
    assert_eq!(live_maps(), 0, "the maps go with their last tensor");

    // A mapped tensor that grows is moved into the allocator's memory, values intact.
    let (mut tensors, _) = read_f32(&dir.path().join("model.safetensors"), Load::Map).unwrap();
    assert_eq!(live_maps(), 1);
    let first = tensors.remove(0).1.data;
    let mut grown = first.clone();
    grown.push(7.0);
    drop(tensors);
    assert_eq!(live_maps(), 1, "`first` still maps the file");
    let mut moved = first;
    moved.push(7.0);
    assert_eq!(live_maps(), 0);
    assert_eq!(moved, grown);

    // bf16 copies: the f32 matrices go, the vectors keep the map until they go too.
    let (model, varmap) = MambaLM::load_mapped(dir.path(), &Device::Cpu).unwrap();
    drop(varmap);
    let half = model.into_weight_dtype(DType::BF16).unwrap();
    assert_eq!(live_maps(), 1);
    drop(half);
    assert_eq!(live_maps(), 0);

    // Shards: one map per file.
    let sharded = dir.path().join("sharded");
    original.save_sharded(&sharded, 40_000).unwrap();
    let shards = std::fs::read_dir(&sharded)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("safetensors".as_ref()))
        .count();
    assert!(shards > 1);
    let (model, _) = MambaLM::load_mapped(&sharded, &Device::Cpu).unwrap();
    assert_eq!(live_maps(), shards);
    assert_eq!(logits(&model), logits(&original));
    drop(model);
    assert_eq!(live_maps(), 0);

    // A file whose data is not aligned for f32 (legal, if unusual) is read, not mapped.
    let odd = dir.path().join("odd.safetensors");
    let header = br#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}  "#;
    assert_ne!(header.len() % 4, 0);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    for v in [1.5f32, -2.0, 0.25] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&odd, bytes).unwrap();
    let (read, _) = read_f32(&odd, Load::Map).unwrap();
    assert_eq!(read[0].1.data, [1.5, -2.0, 0.25]);
    assert_eq!(live_maps(), 0);
}
