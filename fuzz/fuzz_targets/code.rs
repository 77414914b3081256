//! See `mamba_pipeline::fuzzing::code`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mamba_pipeline::fuzzing::code(data));
