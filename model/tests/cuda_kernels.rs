//! With the `cuda` feature: the selective-scan, SSD state-passing, causal conv, RMSNorm, cross-entropy and Mamba-3 trapezoid kernels compile with
//! NVRTC. This needs only the NVRTC library (`scripts/cuda-build.sh` sets it up), not a GPU;
//! the kernels are checked against the CPU ops on a GPU by `scripts/gpu-check.sh`.
#![cfg(feature = "cuda")]

#[test]
fn scan_kernels_compile_with_nvrtc() {
    let ptx = mamba_model::kernels::scan::cuda::ptx().unwrap_or_else(|e| panic!("{e}"));
    for n in [4, 8, 16, 32, 64, 128, 256] {
        for pass in ["fwd", "bwd"] {
            let entry = format!(".entry scan_{pass}_{n}(");
            assert!(ptx.contains(&entry), "{entry} missing from the PTX");
        }
    }
    for entry in ["scan_reduce_dbc", "scan_reduce_params"] {
        assert!(ptx.contains(&format!(".entry {entry}(")), "{entry} missing");
    }
}

#[test]
fn state_passing_kernels_compile_with_nvrtc() {
    let ptx = mamba_model::mixers::mamba2::passing::ptx().unwrap_or_else(|e| panic!("{e}"));
    for entry in ["pass_fwd", "pass_bwd"] {
        assert!(ptx.contains(&format!(".entry {entry}(")), "{entry} missing");
    }
}

#[test]
fn conv_kernels_compile_with_nvrtc() {
    let ptx = mamba_model::layers::conv_cuda::ptx().unwrap_or_else(|e| panic!("{e}"));
    for entry in [
        "conv_silu_fwd",
        "conv_silu_dpre",
        "conv_silu_dx",
        "conv_silu_dparams",
    ] {
        assert!(ptx.contains(&format!(".entry {entry}(")), "{entry} missing");
    }
}

#[test]
fn norm_kernels_compile_with_nvrtc() {
    let ptx = mamba_model::layers::norm_cuda::ptx().unwrap_or_else(|e| panic!("{e}"));
    for entry in ["rms_fwd", "rms_dx", "rms_dw"] {
        assert!(ptx.contains(&format!(".entry {entry}(")), "{entry} missing");
    }
}

#[test]
fn cross_entropy_kernels_compile_with_nvrtc() {
    let ptx = mamba_model::loss_cuda::ptx().unwrap_or_else(|e| panic!("{e}"));
    for entry in ["ce_fwd", "ce_bwd"] {
        assert!(ptx.contains(&format!(".entry {entry}(")), "{entry} missing");
    }
}

#[test]
fn trapezoid_kernels_compile_with_nvrtc() {
    let ptx = mamba_model::mixers::mamba3::trap_cuda::ptx().unwrap_or_else(|e| panic!("{e}"));
    for entry in ["trap_fwd", "trap_bwd"] {
        assert!(ptx.contains(&format!(".entry {entry}(")), "{entry} missing");
    }
}
