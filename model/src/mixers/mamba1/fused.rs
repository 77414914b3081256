//! Mamba-1's SSM path as one autograd node on the CPU: x_proj -> split (dt, B, C) -> dt_proj
//! -> selective scan (softplus(delta + bias), D skip, SiLU(z) gate, document resets).
//!
//! Built from separate nodes, this path stacks u, delta and z into one packed scan input (a copy
//! forward, a split and three gradient accumulations backward), narrows x_proj's output three
//! ways and concatenates the parameters, and candle accumulates every node's gradient as
//! zeros + add. As one op the inputs are u, z and the five parameters packed in one flat vector;
//! the intermediates (dt, B|C, delta) stay inside the op for the backward, which calls the
//! scan kernel's backward and then the two projections' backward by hand.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::kernels::scan::{cpu, DEFAULT_CHUNK, SUPPORTED_D_STATE};
use crate::layers::linear::matmul_xwt;
use crate::layers::ops::{contiguous, read_cpu};

/// The Mamba-1 parameters its SSM path uses: the selection (x_proj, dt_proj) and the scan's A and D.
pub(crate) struct SelectiveSsm<'a> {
    /// (r + 2n, di)
    pub x_proj: &'a Tensor,
    /// (di, r)
    pub dt_proj_w: &'a Tensor,
    /// (di)
    pub dt_proj_b: &'a Tensor,
    /// (di, n)
    pub a_log: &'a Tensor,
    /// (di)
    pub d: &'a Tensor,
}

/// y = scan(u, dt_proj(x_proj(u)), ..) * silu(z), (b, l, di); `None` off the CPU, outside f32
/// or for a state size the kernel is not built for (the caller uses separate ops there).
/// `resets`: (b, l), nonzero at document starts.
pub(crate) fn fused_ssm(
    u: &Tensor,
    z: &Tensor,
    w: &SelectiveSsm,
    resets: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let (di, n) = w.a_log.dims2()?;
    let (di2, r) = w.dt_proj_w.dims2()?;
    let all = [u, z, w.x_proj, w.dt_proj_w, w.dt_proj_b, w.a_log, w.d];
    if !crate::kernels::cpu_fused(u.device())
        || all.iter().any(|t| t.dtype() != DType::F32)
        || !SUPPORTED_D_STATE.contains(&n)
    {
        return Ok(None);
    }
    let (b, l, di3) = u.dims3()?;
    if di2 != di
        || di3 != di
        || z.dims() != u.dims()
        || w.x_proj.dims() != [r + 2 * n, di]
        || w.dt_proj_b.dims() != [di]
        || w.d.dims() != [di]
    {
        candle_core::bail!(
            "ssm: inconsistent shapes for u {:?}, A_log {:?}",
            u.dims(),
            [di, n]
        )
    }
    let resets = match resets {
        Some(t) if t.dims() == [b, l] => Some(t.ne(0f64)?.flatten_all()?.to_vec1::<u8>()?),
        Some(t) => candle_core::bail!("ssm: resets {:?} for u {:?}", t.dims(), u.dims()),
        None => None,
    };
    let params = Tensor::cat(
        &[
            w.x_proj.flatten_all()?,
            w.dt_proj_w.flatten_all()?,
            w.dt_proj_b.clone(),
            w.a_log.flatten_all()?,
            w.d.clone(),
        ],
        0,
    )?;
    let op = SsmOp {
        di,
        n,
        r,
        resets,
        saved: Mutex::new(None),
    };
    Ok(Some(u.contiguous()?.apply_op3(
        &z.contiguous()?,
        &params,
        op,
    )?))
}

struct SsmOp {
    di: usize,
    n: usize,
    r: usize,
    resets: Option<Vec<u8>>,
    /// The forward's intermediates, taken by the backward.
    saved: Mutex<Option<Prepared>>,
}

/// What the scan kernel needs besides u and z.
struct Prepared {
    /// (m, r): the dt_proj input.
    dt: Vec<f32>,
    /// (m, 2n) = [B | C].
    bc: Vec<f32>,
    /// (m, di): dt_proj output before bias and softplus.
    delta: Vec<f32>,
    /// (di, n + 2) = [A | D | bias] with A = -exp(A_log).
    scan_params: Vec<f32>,
}

/// Offsets of the packed parameters: x_proj, dt_proj_w, dt_proj_b, A_log, D.
fn offsets(di: usize, n: usize, r: usize) -> [usize; 6] {
    let k = r + 2 * n;
    let o1 = k * di;
    let o2 = o1 + di * r;
    let o3 = o2 + di;
    let o4 = o3 + di * n;
    [0, o1, o2, o3, o4, o4 + di]
}

fn f32_vec(s: CpuStorage) -> Result<Vec<f32>> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("ssm: expected f32"),
    }
}

impl SsmOp {
    fn dims(&self, ul: &Layout) -> Result<cpu::Dims> {
        let (b, l, d) = ul.shape().dims3()?;
        Ok(cpu::Dims {
            b,
            l,
            d,
            n: self.n,
            softplus: true,
            chunk: DEFAULT_CHUNK,
        })
    }

    /// x_proj and dt_proj forward, and the scan's parameter block.
    fn prepare(
        &self,
        us: &CpuStorage,
        ul: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<Prepared> {
        let (di, n, r) = (self.di, self.n, self.r);
        let k = r + 2 * n;
        let p = contiguous::<f32>(ps, pl, "ssm: parameters")?;
        let off = offsets(di, n, r);
        if p.len() != off[5] {
            candle_core::bail!("ssm: {} packed parameters, expected {}", p.len(), off[5])
        }
        let po = pl.start_offset();
        let xw = Layout::contiguous_with_offset((k, di), po);
        let (xdbl, m, _) = matmul_xwt(us, ul, ps, &xw)?;
        let xdbl = f32_vec(xdbl)?;
        let mut dt = Vec::with_capacity(m * r);
        let mut bc = Vec::with_capacity(m * 2 * n);
        for row in xdbl.chunks(k) {
            dt.extend_from_slice(&row[..r]);
            bc.extend_from_slice(&row[r..]);
        }
        let dtw = Layout::contiguous_with_offset((di, r), po + off[1]);
        let dts = CpuStorage::F32(dt);
        let (delta, _, _) = matmul_xwt(&dts, &Layout::contiguous((m, r)), ps, &dtw)?;
        let mut scan_params = vec![0f32; di * (n + 2)];
        for (c, row) in scan_params.chunks_mut(n + 2).enumerate() {
            for j in 0..n {
                row[j] = -p[off[3] + c * n + j].exp();
            }
            row[n] = p[off[4] + c];
            row[n + 1] = p[off[2] + c];
        }
        Ok(Prepared {
            dt: f32_vec(dts)?,
            bc,
            delta: f32_vec(delta)?,
            scan_params,
        })
    }
}

impl CustomOp3 for SsmOp {
    fn name(&self) -> &'static str {
        "mixer-ssm"
    }

    fn cpu_fwd(
        &self,
        us: &CpuStorage,
        ul: &Layout,
        zs: &CpuStorage,
        zl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(ul)?;
        let prep = self.prepare(us, ul, ps, pl)?;
        let inp = cpu::Inputs {
            u: contiguous::<f32>(us, ul, "ssm: u")?,
            delta: &prep.delta,
            z: Some(contiguous::<f32>(zs, zl, "ssm: z")?),
            bc: &prep.bc,
            params: &prep.scan_params,
            resets: self.resets.as_deref(),
        };
        let y = cpu::forward(&dm, &inp, None);
        if let Ok(mut slot) = self.saved.lock() {
            *slot = Some(prep);
        }
        Ok((CpuStorage::F32(y), ul.shape().clone()))
    }

    fn bwd(
        &self,
        u: &Tensor,
        z: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (di, n, r) = (self.di, self.n, self.r);
        let k = r + 2 * n;
        let (u, z, params) = (u.detach(), z.detach(), params.detach());
        let dm = self.dims(u.layout())?;
        let m = dm.b * dm.l;
        let saved = self.saved.lock().ok().and_then(|mut s| s.take());
        let prep = match saved {
            Some(p) => p,
            // A second backward over the same graph: run the projections again.
            None => {
                let (uc, pc) = (read_cpu(&u, "ssm: u"), read_cpu(&params, "ssm: parameters"));
                let ((us, ul), (ps, pl)) = (uc.storage()?, pc.storage()?);
                self.prepare(us, ul, ps, pl)?
            }
        };
        let grad = grad.contiguous()?;
        let (uc, zc, gc) = (
            read_cpu(&u, "ssm: u"),
            read_cpu(&z, "ssm: z"),
            read_cpu(&grad, "ssm: gradient"),
        );
        let inp = cpu::Inputs {
            u: uc.f32s()?,
            delta: &prep.delta,
            z: Some(zc.f32s()?),
            bc: &prep.bc,
            params: &prep.scan_params,
            resets: self.resets.as_deref(),
        };
        let flat = cpu::backward(&dm, &inp, gc.f32s()?);
        // flat = [du | ddelta | dz] (m, di) each, [dB | dC] (m, 2n), [dA | dD | dbias] (di, n+2).
        let bld = m * di;
        let (gx, rest) = flat.split_at(3 * bld);
        let (dbc, dpar) = rest.split_at(m * 2 * n);
        let dev = u.device();
        let ddelta = Tensor::from_slice(&gx[bld..2 * bld], (m, di), dev)?;
        let dz = Tensor::from_slice(&gx[2 * bld..], u.shape(), dev)?;
        let off = offsets(di, n, r);
        let dt_w = params.narrow(0, off[1], di * r)?.reshape((di, r))?;
        let x_proj = params.narrow(0, 0, k * di)?.reshape((k, di))?;
        let dt = Tensor::from_vec(prep.dt, (m, r), dev)?;
        // dt_proj backward.
        let d_dt_w = ddelta.t()?.matmul(&dt)?;
        let d_dt = ddelta.matmul(&dt_w)?.flatten_all()?.to_vec1::<f32>()?;
        // x_proj backward on d xdbl = [d dt | dB | dC].
        let mut dxdbl = Vec::with_capacity(m * k);
        for (a, b) in d_dt.chunks(r).zip(dbc.chunks(2 * n)) {
            dxdbl.extend_from_slice(a);
            dxdbl.extend_from_slice(b);
        }
        let dxdbl = Tensor::from_vec(dxdbl, (m, k), dev)?;
        let u2 = u.reshape((m, di))?;
        let d_x_proj = dxdbl.t()?.matmul(&u2)?;
        let du_scan = Tensor::from_slice(&gx[..bld], (m, di), dev)?;
        let du = (dxdbl.matmul(&x_proj)? + du_scan)?.reshape(u.shape())?;
        // dA_log = dA * A (A = -exp(A_log)); D and the bias come straight from the kernel.
        let mut d_a_log = vec![0f32; di * n];
        let (mut d_d, mut d_bias) = (vec![0f32; di], vec![0f32; di]);
        for c in 0..di {
            let g = &dpar[c * (n + 2)..(c + 1) * (n + 2)];
            let a = &prep.scan_params[c * (n + 2)..c * (n + 2) + n];
            for j in 0..n {
                d_a_log[c * n + j] = g[j] * a[j];
            }
            d_d[c] = g[n];
            d_bias[c] = g[n + 1];
        }
        let dparams = Tensor::cat(
            &[
                d_x_proj.flatten_all()?,
                d_dt_w.flatten_all()?,
                Tensor::from_vec(d_bias, di, dev)?,
                Tensor::from_vec(d_a_log, di * n, dev)?,
                Tensor::from_vec(d_d, di, dev)?,
            ],
            0,
        )?;
        Ok((Some(du), Some(dz), Some(dparams)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::MambaLM;
    use candle_core::{Device, Var};

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64::new(seed);
        (0..n)
            .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn matches_separate_ops_in_value_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = Config::new(16, 1, 32);
        let (model, _vars) = MambaLM::init(&cfg, 3, &dev)?;
        let crate::mixers::Mixer::Mamba1(mixer) = &model.layers[0].mixer else {
            unreachable!("a Mamba-1 config")
        };
        let (b, l, di) = (2, 9, cfg.d_inner());
        let u = Var::from_vec(rand(b * l * di, 1), (b, l, di), &dev)?;
        let z = Var::from_vec(rand(b * l * di, 2), (b, l, di), &dev)?;
        let resets = Tensor::from_vec(
            (0..b * l).map(|i| (i % l == 4) as u8).collect::<Vec<_>>(),
            (b, l),
            &dev,
        )?;
        let fused = fused_ssm(&u, &z, &mixer.ssm_weights(), Some(&resets))?
            .expect("cpu f32 takes the fused path");
        let plain = mixer.ssm_ops(&u, &z, Some(&resets), DType::F32)?;
        let diff = (&fused - &plain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");
        let coef = Tensor::from_vec(rand(b * l * di, 3), (b, l, di), &dev)?;
        let gf = (&fused * &coef)?.sum_all()?.backward()?;
        let gp = (plain * &coef)?.sum_all()?.backward()?;
        let w = mixer.ssm_weights();
        let all = [
            u.as_tensor(),
            z.as_tensor(),
            w.x_proj,
            w.dt_proj_w,
            w.dt_proj_b,
            w.a_log,
            w.d,
        ];
        for (i, t) in all.into_iter().enumerate() {
            let a = gf.get(t).expect("fused gradient");
            let p = gp.get(t).expect("plain gradient");
            let scale = p.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let d = (a - p)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                d < 1e-4 * scale,
                "gradient {i} differs by {d} (scale {scale})"
            );
        }
        // A second backward over the same graph runs the projections again and agrees.
        let again = (fused * &coef)?.sum_all()?.backward()?;
        let d = (again.get(w.x_proj).expect("x_proj") - gf.get(w.x_proj).expect("x_proj"))?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6, "second backward differs by {d}");
        Ok(())
    }
}
