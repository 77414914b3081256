//! See `mamba_pipeline::fuzzing::pdf`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_pipeline::fuzzing::pdf(data));
