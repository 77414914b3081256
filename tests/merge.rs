//! `mamba merge`: a PEFT adapter merged into its base equals PEFT's `merge_and_unload`
//! (model/tests/fixtures/make_lora_fixtures.py), written as a checkpoint the other commands
//! read; a mismatched adapter or an occupied output is a usage error naming it.

mod common;
use common::*;

use candle_core::Device;

#[test]
fn merge_equals_peft_merge_and_unload() {
    let fixtures = repo().join("model/tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    for (base, name) in [("hf_tiny", "mamba1"), ("hf_mamba2", "mamba2")] {
        let out = tmp.path().join(name);
        let adapter = fixtures.join(format!("lora_{name}"));
        let shown = ok(&mamba(&[
            "merge",
            s(&fixtures.join(base)),
            s(&adapter),
            s(&out),
        ]));
        assert!(shown.contains("merged"), "{shown}");
        let ours =
            candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
        let peft = candle_core::safetensors::load(
            fixtures.join(format!("lora_{name}_merged.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(ours.len(), peft.len(), "{name}: tensors");
        for (n, want) in &peft {
            let got = &ours[n];
            let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            let d = d.to_scalar::<f32>().unwrap();
            assert!(d < 1e-5, "{name} {n}: differs from PEFT's merge by {d}");
        }
        assert!(!tmp.path().join(format!(".{name}.writing")).exists());
    }
    // An occupied output, and an adapter made for another model, are refused by name.
    let base = fixtures.join("hf_tiny");
    let out = mamba(&[
        "merge",
        s(&base),
        s(&fixtures.join("lora_mamba1")),
        s(&tmp.path().join("mamba1")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not an empty directory"), "{err}");
    let out = mamba(&[
        "merge",
        s(&base),
        s(&fixtures.join("lora_mamba2")),
        s(&tmp.path().join("x")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("adapter_model.safetensors"), "{err}");
    assert!(!tmp.path().join("x").exists());
}
