//! See `mamba_pipeline::fuzzing::dataset`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_pipeline::fuzzing::dataset(data));
