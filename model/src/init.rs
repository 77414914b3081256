//! Seeded, deterministic initialisation matching mamba_ssm's `Mamba` / `MambaLMHeadModel`:
//!
//! * embedding ~ N(0, initializer_range = 0.02)
//! * in_proj, x_proj: PyTorch `nn.Linear` default, U(+-1/sqrt(fan_in))
//! * out_proj: the same, then divided by sqrt(n_layer) (rescale_prenorm_residual)
//! * conv1d weight and bias: PyTorch `nn.Conv1d` default, U(+-1/sqrt(d_conv)) (fan_in = 1 * d_conv)
//! * dt_proj.weight ~ U(+-dt_scale * dt_rank^-0.5); dt_proj.bias = softplus^-1(dt) with
//!   dt = exp(U(log dt_min, log dt_max)) floored at dt_init_floor
//! * A_log[c, i] = log(i + 1); D = 1; RMSNorm weights = 1
//!
//! and mamba_ssm's `Mamba2`, which differs in two parameters: one A per head, A_log = log(U(1, 16));
//! dt_bias drawn as dt_proj.bias above.
//!
//! Every tensor has its own random stream derived from (seed, tensor name), so the values do not
//! depend on creation order.

use crate::config::Config;
use crate::layers::params::Init;
use crate::rng::SplitMix64;

/// softplus^-1(y) = y + log(-expm1(-y)).
pub fn inv_softplus(y: f64) -> f64 {
    y + (-(-y).exp_m1()).ln()
}

/// Initial value of one parameter, initialised as `init` says (named as in
/// [`crate::model::MambaLM::params`]: the name seeds its random stream).
pub fn init_values(cfg: &Config, init: Init, name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let mut rng = SplitMix64::for_tensor(seed, name);
    let mut uniform = |bound: f64, scale: f64| -> Vec<f32> {
        (0..numel)
            .map(|_| (rng.uniform_in(-bound, bound) * scale) as f32)
            .collect()
    };
    // nn.Linear's bound: fan_in is the last dimension.
    let fan_in = shape.last().copied().unwrap_or(1).max(1) as f64;
    match init {
        Init::Embedding => (0..numel)
            .map(|_| (rng.normal() * cfg.initializer_range) as f32)
            .collect(),
        Init::Ones => vec![1.0; numel],
        Init::InvRank => vec![1.0 / cfg.mimo_rank.max(1) as f32; numel],
        Init::ALogUniform => (0..numel)
            .map(|_| rng.uniform_in(1.0, 16.0).ln() as f32)
            .collect(),
        Init::ALogRange => {
            let n = shape.last().copied().unwrap_or(1).max(1);
            (0..numel)
                .map(|i| (((i % n) + 1) as f64).ln() as f32)
                .collect()
        }
        Init::DtProj => uniform(cfg.dt_scale * (cfg.dt_rank() as f64).powf(-0.5), 1.0),
        Init::DtBias => {
            let (lo, hi) = (cfg.dt_min.ln(), cfg.dt_max.ln());
            (0..numel)
                .map(|_| {
                    let dt = rng.uniform_in(lo, hi).exp().max(cfg.dt_init_floor);
                    inv_softplus(dt) as f32
                })
                .collect()
        }
        // fan_in = (in_channels / groups) * kernel = d_conv
        Init::Conv => uniform(1.0 / (cfg.d_conv as f64).sqrt(), 1.0),
        Init::OutProj => {
            let scale = match cfg.rescale_prenorm_residual {
                true => 1.0 / (cfg.n_layer() as f64).sqrt(),
                false => 1.0,
            };
            uniform(1.0 / fan_in.sqrt(), scale)
        }
        Init::Linear => uniform(1.0 / fan_in.sqrt(), 1.0),
    }
}
