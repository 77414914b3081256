//! The fused selective scan: one candle op with its own backward. It is the selection
//! mechanism of Gu & Dao 2023 (Alg. 2) run as a recurrence over time, per channel d and state
//! index n:
//!
//! ```text
//! dt_t   = softplus(delta_t + delta_bias)            (per channel; softplus optional)
//! h_t    = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t (h_{t-1} := 0 where reset_t)
//! y_t    = <C_t, h_t> + D * u_t
//! out_t  = y_t * silu(z_t)                           (when z is given)
//! ```
//! Shapes: u, delta, z: (batch, len, d_inner); A: (d_inner, d_state); B, C: (batch, len, d_state);
//! D, delta_bias: (d_inner); resets: (batch, len), nonzero at the first position of a document.
//!
//! The discretisation is the paper's (eq. 4) as mamba_ssm computes it: A_bar = exp(dt A) is
//! the zero-order hold, while B_bar u = dt B u replaces the exact ZOH term
//! (dt A)^-1 (exp(dt A) - 1) dt B u by its first-order (Euler) value, as the paper allows and
//! every released checkpoint was trained with.
//!
//! d_state must be one of [`SUPPORTED_D_STATE`]: the kernels keep a channel's state in a
//! fixed-size array (registers) and are compiled once per size; Mamba-1 models use 16, Mamba-2
//! models (whose SSD runs through this scan channel by channel) 128, some hybrids 256.
//!
//! Candle custom ops take at most three inputs, so the op sees packed tensors:
//! `(u, delta[, z])` stacked to (2|3, b, l, d), `[B | C]` as (b, l, 2n) and `[A | D | bias]` as
//! (d, n + 2). The backward is a second op returning all gradients in one flat buffer, which is
//! split back with views. Only `cpu_fwd` / `cuda_fwd` of [`ScanFwd`] / [`ScanBwd`] are
//! device-specific (`cpu.rs`; `cuda.rs` + `scan.cu` with the `cuda` feature), on the same
//! packed layout.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod math;
pub mod reference;

pub use math::exp_sub_inplace;
pub(crate) use math::{sigmoid, softplus_sigmoid, NoFma};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::layers::ops::{contiguous, read_cpu};

/// State sizes the kernels are compiled for.
pub const SUPPORTED_D_STATE: &[usize] = &[4, 8, 16, 32, 64, 128, 256];

/// Default checkpoint interval of the backward (time steps between stored states).
pub const DEFAULT_CHUNK: usize = 1024;

/// Optional parts of the scan.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions<'a> {
    /// Added to delta before the softplus, (d_inner).
    pub delta_bias: Option<&'a Tensor>,
    /// Apply softplus to delta + delta_bias.
    pub delta_softplus: bool,
    /// Gate: the output is multiplied by silu(z), (b, l, d_inner).
    pub z: Option<&'a Tensor>,
    /// Document starts, (b, l) of any dtype; nonzero zeroes the state before that step.
    pub resets: Option<&'a Tensor>,
    /// Backward checkpoint interval; 0 means [`DEFAULT_CHUNK`].
    pub chunk: usize,
}

/// Runs the fused selective scan (see the module docs) and returns `out`, (batch, len, d_inner).
/// Float inputs are all f32, or all bf16 or f16: then the state and the arithmetic stay f32 (as
/// in mamba_ssm) and only the output is rounded back to the inputs' type. Errors on shapes that
/// disagree (the message names the input) and on a d_state outside [`SUPPORTED_D_STATE`].
pub fn selective_scan(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: &Tensor,
    opts: &ScanOptions,
) -> Result<Tensor> {
    let dtype = u.dtype();
    if !matches!(dtype, DType::BF16 | DType::F16) {
        return Ok(selective_scan_f32(u, delta, a, b, c, d, opts, false)?.0);
    }
    let f = |t: &Tensor| t.to_dtype(DType::F32);
    let z = opts.z.map(f).transpose()?;
    let bias = opts.delta_bias.map(f).transpose()?;
    let opts = ScanOptions {
        z: z.as_ref(),
        delta_bias: bias.as_ref(),
        ..opts.clone()
    };
    let (u, delta, a, b, c, d) = (f(u)?, f(delta)?, f(a)?, f(b)?, f(c)?, f(d)?);
    selective_scan_f32(&u, &delta, &a, &b, &c, &d, &opts, false)?
        .0
        .to_dtype(dtype)
}

/// [`selective_scan`] of f32 inputs that also returns the state after the last position,
/// (batch, d_inner, d_state), as mamba_ssm's `return_last_state`: the prefill of generation.
/// Forward only (no gradient flows through it); off the CPU it runs on a CPU copy.
pub fn selective_scan_with_state(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: &Tensor,
    opts: &ScanOptions,
) -> Result<(Tensor, Tensor)> {
    let (y, h) = selective_scan_f32(u, delta, a, b, c, d, opts, true)?;
    let h = h.ok_or_else(|| candle_core::Error::Msg("selective_scan: no last state".into()))?;
    Ok((y, h))
}

#[allow(clippy::too_many_arguments)]
fn selective_scan_f32(
    u: &Tensor,
    delta: &Tensor,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    d: &Tensor,
    opts: &ScanOptions,
    last_state: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (bs, l, di) = u.dims3()?;
    let (di2, n) = a.dims2()?;
    let check = |name: &str, t: &Tensor, want: &[usize]| -> Result<()> {
        if t.dims() != want {
            candle_core::bail!(
                "selective_scan: {name} has shape {:?}, expected {:?} (u is {:?}, A is {:?})",
                t.dims(),
                want,
                u.dims(),
                a.dims()
            )
        }
        if t.dtype() != DType::F32 {
            candle_core::bail!("selective_scan: {name} must be f32, got {:?}", t.dtype())
        }
        Ok(())
    };
    if di2 != di {
        candle_core::bail!(
            "selective_scan: A is {:?} but u has {di} channels",
            a.dims()
        )
    }
    if !SUPPORTED_D_STATE.contains(&n) {
        candle_core::bail!("selective_scan: d_state {n} not supported ({SUPPORTED_D_STATE:?})")
    }
    check("u", u, &[bs, l, di])?;
    check("delta", delta, &[bs, l, di])?;
    check("A", a, &[di, n])?;
    check("B", b, &[bs, l, n])?;
    check("C", c, &[bs, l, n])?;
    check("D", d, &[di])?;
    if last_state && !u.device().is_cpu() {
        // The state is read once per prompt: compute it where the kernel writes it.
        let cpu = |t: &Tensor| t.to_device(&candle_core::Device::Cpu);
        let (z, bias, r) = (
            opts.z.map(cpu).transpose()?,
            opts.delta_bias.map(cpu).transpose()?,
            opts.resets.map(cpu).transpose()?,
        );
        let o = ScanOptions {
            z: z.as_ref(),
            delta_bias: bias.as_ref(),
            resets: r.as_ref(),
            ..opts.clone()
        };
        let (u2, delta, a2, b2, c2, d2) =
            (cpu(u)?, cpu(delta)?, cpu(a)?, cpu(b)?, cpu(c)?, cpu(d)?);
        let (y, h) = selective_scan_f32(&u2, &delta, &a2, &b2, &c2, &d2, &o, true)?;
        let back = |t: Tensor| t.to_device(u.device());
        return Ok((back(y)?, h.map(back).transpose()?));
    }
    if let Some(z) = opts.z {
        check("z", z, &[bs, l, di])?;
    }
    if let Some(bias) = opts.delta_bias {
        check("delta_bias", bias, &[di])?;
    }
    let resets = match opts.resets {
        Some(r) => {
            if r.dims() != [bs, l] {
                candle_core::bail!(
                    "selective_scan: resets has shape {:?}, expected {:?}",
                    r.dims(),
                    [bs, l]
                )
            }
            Some(r.ne(0f64)?.detach())
        }
        None => None,
    };
    let bias = match opts.delta_bias {
        Some(t) => t.clone(),
        None => Tensor::zeros(di, DType::F32, u.device())?,
    };
    let x = match opts.z {
        Some(z) => Tensor::stack(&[u, delta, z], 0)?,
        None => Tensor::stack(&[u, delta], 0)?,
    };
    let bc = Tensor::cat(&[b, c], 2)?.contiguous()?;
    let params = Tensor::cat(&[a.clone(), d.unsqueeze(1)?, bias.unsqueeze(1)?], 1)?.contiguous()?;
    let op = ScanFwd {
        n,
        softplus: opts.delta_softplus,
        has_z: opts.z.is_some(),
        resets,
        chunk: if opts.chunk == 0 {
            DEFAULT_CHUNK
        } else {
            opts.chunk
        },
        last_state,
    };
    if !last_state {
        return Ok((x.apply_op3(&bc, &params, op)?, None));
    }
    let flat = x.apply_op3_no_bwd(&bc, &params, &op)?;
    let y = flat.narrow(0, 0, bs * l * di)?.reshape((bs, l, di))?;
    let h = flat
        .narrow(0, bs * l * di, bs * di * n)?
        .reshape((bs, di, n))?;
    Ok((y, Some(h)))
}

/// The forward op. Inputs: x = (2|3, b, l, d), bc = (b, l, 2n), params = (d, n + 2).
#[derive(Clone, Debug)]
pub struct ScanFwd {
    n: usize,
    softplus: bool,
    has_z: bool,
    /// (b, l) u8 mask, nonzero = reset.
    resets: Option<Tensor>,
    chunk: usize,
    /// Output `[y | last state]` flat (forward only, CPU only).
    last_state: bool,
}

/// The backward op: same inputs as [`ScanFwd`], the output gradient kept in the op.
#[derive(Clone, Debug)]
pub struct ScanBwd {
    fwd: ScanFwd,
    grad: Tensor,
}

impl ScanFwd {
    fn dims(&self, l1: &Layout, l2: &Layout, l3: &Layout) -> Result<cpu::Dims> {
        let s = if self.has_z { 3 } else { 2 };
        let (s1, b, l, d) = l1.shape().dims4()?;
        if s1 != s {
            candle_core::bail!("selective_scan: packed input has {s1} parts, expected {s}")
        }
        if l2.shape().dims() != [b, l, 2 * self.n] || l3.shape().dims() != [d, self.n + 2] {
            candle_core::bail!(
                "selective_scan: packed shapes {:?} {:?} {:?} inconsistent",
                l1.shape(),
                l2.shape(),
                l3.shape()
            )
        }
        Ok(cpu::Dims {
            b,
            l,
            d,
            n: self.n,
            softplus: self.softplus,
            chunk: self.chunk,
        })
    }

    fn resets_vec(&self) -> Result<Option<Vec<u8>>> {
        match &self.resets {
            Some(r) => Ok(Some(r.to_dtype(DType::U8)?.flatten_all()?.to_vec1::<u8>()?)),
            None => Ok(None),
        }
    }
}

fn inputs<'a>(
    dm: &cpu::Dims,
    has_z: bool,
    x: &'a [f32],
    bc: &'a [f32],
    params: &'a [f32],
    resets: Option<&'a [u8]>,
) -> cpu::Inputs<'a> {
    let bld = dm.b * dm.l * dm.d;
    cpu::Inputs {
        u: &x[..bld],
        delta: &x[bld..2 * bld],
        z: if has_z {
            Some(&x[2 * bld..3 * bld])
        } else {
            None
        },
        bc,
        params,
        resets,
    }
}

impl CustomOp3 for ScanFwd {
    fn name(&self) -> &'static str {
        "selective-scan"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(l1, l2, l3)?;
        let x = contiguous::<f32>(s1, l1, "selective_scan: u/delta/z")?;
        let bc = contiguous::<f32>(s2, l2, "selective_scan: B/C")?;
        let params = contiguous::<f32>(s3, l3, "selective_scan: A/D/bias")?;
        let resets = self.resets_vec()?;
        let inp = inputs(&dm, self.has_z, x, bc, params, resets.as_deref());
        if self.last_state {
            let mut last = vec![0f32; dm.b * dm.d * dm.n];
            let mut y = cpu::forward(&dm, &inp, Some(&mut last));
            y.extend_from_slice(&last);
            let len = y.len();
            return Ok((CpuStorage::F32(y), Shape::from(len)));
        }
        let y = cpu::forward(&dm, &inp, None);
        Ok((CpuStorage::F32(y), Shape::from((dm.b, dm.l, dm.d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dm = self.dims(l1, l2, l3)?;
        let ops = cuda::Operands {
            x: (s1, l1),
            bc: (s2, l2),
            params: (s3, l3),
        };
        cuda::forward(&dm, self.has_z, self.resets.as_ref(), &ops)
    }

    fn bwd(
        &self,
        x: &Tensor,
        bc: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = ScanBwd {
            fwd: self.clone(),
            grad: grad_res.contiguous()?,
        };
        let flat = x.apply_op3_no_bwd(bc, params, &op)?;
        let (s, b, l, d) = x.dims4()?;
        let n = self.n;
        let n1 = s * b * l * d;
        let n2 = b * l * 2 * n;
        let n3 = d * (n + 2);
        let gx = flat.narrow(0, 0, n1)?.reshape((s, b, l, d))?;
        let gbc = flat.narrow(0, n1, n2)?.reshape((b, l, 2 * n))?;
        let gp = flat.narrow(0, n1 + n2, n3)?.reshape((d, n + 2))?;
        Ok((Some(gx), Some(gbc), Some(gp)))
    }
}

impl CustomOp3 for ScanBwd {
    fn name(&self) -> &'static str {
        "selective-scan-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.fwd.dims(l1, l2, l3)?;
        let x = contiguous::<f32>(s1, l1, "selective_scan: u/delta/z")?;
        let bc = contiguous::<f32>(s2, l2, "selective_scan: B/C")?;
        let params = contiguous::<f32>(s3, l3, "selective_scan: A/D/bias")?;
        let resets = self.fwd.resets_vec()?;
        let inp = inputs(&dm, self.fwd.has_z, x, bc, params, resets.as_deref());
        if self.grad.dims() != [dm.b, dm.l, dm.d] {
            candle_core::bail!("selective_scan: gradient shape {:?}", self.grad.shape())
        }
        let grad = read_cpu(&self.grad, "selective_scan: output gradient");
        let gdata = grad.f32s()?;
        let out = cpu::backward(&dm, &inp, gdata);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dm = self.fwd.dims(l1, l2, l3)?;
        if self.grad.dims() != [dm.b, dm.l, dm.d] {
            candle_core::bail!("selective_scan: gradient shape {:?}", self.grad.dims())
        }
        let ops = cuda::Operands {
            x: (s1, l1),
            bc: (s2, l2),
            params: (s3, l3),
        };
        let resets = self.fwd.resets.as_ref();
        cuda::backward(&dm, self.fwd.has_z, resets, &self.grad, &ops)
    }
}
