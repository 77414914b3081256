//! The Mamba mixer (mamba_ssm `Mamba`, transformers `MambaMixer`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::Config;
use crate::conv::{causal_conv1d_silu, ConvMask};
use crate::ops::linear;
use crate::scan::{selective_scan, ScanOptions};
use crate::ssm::{ssm_fused, SsmWeights};

/// Parameters of one mixer, named as in transformers (`...mixer.in_proj.weight` etc.).
#[derive(Clone, Debug)]
pub struct Mixer {
    pub in_proj: Tensor,   // (2 di, d)
    pub conv_w: Tensor,    // (di, 1, k)
    pub conv_b: Tensor,    // (di)
    pub x_proj: Tensor,    // (r + 2n, di)
    pub dt_proj_w: Tensor, // (di, r)
    pub dt_proj_b: Tensor, // (di)
    pub a_log: Tensor,     // (di, n)
    pub d: Tensor,         // (di)
    pub out_proj: Tensor,  // (d, di)
    pub(crate) d_inner: usize,
    pub(crate) d_state: usize,
    pub(crate) dt_rank: usize,
}

impl Mixer {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (d, di, n, r, k) = (
            cfg.d_model,
            cfg.d_inner(),
            cfg.d_state,
            cfg.dt_rank(),
            cfg.d_conv,
        );
        Ok(Mixer {
            in_proj: vb.get((2 * di, d), "in_proj.weight")?,
            conv_w: vb.get((di, 1, k), "conv1d.weight")?,
            conv_b: vb.get(di, "conv1d.bias")?,
            x_proj: vb.get((r + 2 * n, di), "x_proj.weight")?,
            dt_proj_w: vb.get((di, r), "dt_proj.weight")?,
            dt_proj_b: vb.get(di, "dt_proj.bias")?,
            a_log: vb.get((di, n), "A_log")?,
            d: vb.get(di, "D")?,
            out_proj: vb.get((d, di), "out_proj.weight")?,
            d_inner: di,
            d_state: n,
            dt_rank: r,
        })
    }

    /// A = -exp(A_log), (di, n).
    pub fn a(&self) -> Result<Tensor> {
        self.a_log.exp()?.neg()
    }

    pub(crate) fn ssm_weights(&self) -> SsmWeights<'_> {
        SsmWeights {
            x_proj: &self.x_proj,
            dt_proj_w: &self.dt_proj_w,
            dt_proj_b: &self.dt_proj_b,
            a_log: &self.a_log,
            d: &self.d,
        }
    }

    /// The SSM path from separate ops: x_proj -> (dt, B, C) -> dt_proj -> selective scan gated
    /// by silu(z). u, z: (b, l, di) -> (b, l, di).
    pub(crate) fn ssm_ops(
        &self,
        u: &Tensor,
        z: &Tensor,
        resets: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (n, r) = (self.d_state, self.dt_rank);
        let xdbl = linear(u, &self.x_proj)?;
        let dt = xdbl.narrow(2, 0, r)?;
        let b = xdbl.narrow(2, r, n)?;
        let c = xdbl.narrow(2, r + n, n)?;
        let delta = linear(&dt, &self.dt_proj_w)?;
        selective_scan(
            u,
            &delta,
            &self.a()?,
            &b,
            &c,
            &self.d,
            &ScanOptions {
                delta_bias: Some(&self.dt_proj_b),
                delta_softplus: true,
                z: Some(z),
                resets,
                chunk: 0,
            },
        )
    }

    /// h: (b, l, d_model) normalised input -> (b, l, d_model). `resets`: (b, l) u8 document
    /// starts; `conv_mask` (built from the same resets) is only used off the CPU.
    pub fn forward(
        &self,
        h: &Tensor,
        resets: Option<&Tensor>,
        conv_mask: Option<&ConvMask>,
    ) -> Result<Tensor> {
        let di = self.d_inner;
        // Two matmuls instead of one plus narrow: x and z come out contiguous and their
        // gradients need no zero-padding.
        let x = linear(h, &self.in_proj.narrow(0, 0, di)?)?;
        let z = linear(h, &self.in_proj.narrow(0, di, di)?)?;
        let u = causal_conv1d_silu(&x, &self.conv_w, &self.conv_b, resets, conv_mask)?;
        // On the CPU the whole SSM path is one op (see `crate::ssm`).
        let y = match ssm_fused(&u, &z, &self.ssm_weights(), resets)? {
            Some(y) => y,
            None => self.ssm_ops(&u, &z, resets)?,
        };
        linear(&y, &self.out_proj)
    }
}
