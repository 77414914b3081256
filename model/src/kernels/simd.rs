//! What the CPU kernels share about the processor: the widest vector instructions it has,
//! detected once (each hot loop is compiled for AVX-512, AVX2+FMA and a baseline and picked by
//! [`isa`]), and the lane count their per-channel groups use.

/// Channels per group of the vectorised loops: one AVX-512 register of f32, two of AVX2.
pub const G: usize = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
    Base,
}

pub(crate) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(detect_isa)
}

fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var_os("MAMBA_SCAN_NO_SIMD").is_some() {
            return Isa::Base;
        }
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Base
}
