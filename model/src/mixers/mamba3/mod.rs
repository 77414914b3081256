//! Mamba-3 (Lahoti, Gu, Dao et al., ICLR 2026; mamba_ssm's `Mamba3`, SISO and MIMO): so far its
//! step-by-step definition, [`reference`], checked against mamba_ssm itself in value and every
//! gradient. The layer kind (param table, fused CPU op, CUDA kernels, generation, checkpoints)
//! builds on it.

pub mod reference;
pub mod trap_cpu;
