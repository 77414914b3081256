//! The chunked SSD's state passing (Dao & Gu 2024, section 6, step 3) as one op with its own
//! backward, on the CPU and on a GPU (`passing.cu`, compiled with NVRTC). With S_k the state
//! chunk k builds from its own inputs and g_k the decay across the whole chunk (0 where a new
//! document has started by its end), the state entering chunk k is
//!
//! ```text
//! E_0 = 0,   E_{k+1} = g_k E_k + S_k
//! ```
//!
//! and E_c is the state after the last chunk. Its adjoint runs the other way: with
//! A_c = dE_c and A_k = g_k A_{k+1} + dE_k, dS_k = A_{k+1} and dg_k = <A_{k+1}, E_k>. Each
//! element is one fixed chain of multiply-adds and dg one candle sum: the same bits every run,
//! at any thread count. As candle ops it would be several launches per chunk; here it is one
//! per pass.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::layers::ops::contiguous;

/// `states` (.., c, ..) and `decay` (.., c), the same leading dims, in any float dtype ->
/// (.., c + 1, ..) in states' dtype: entry k along the chunk dim is the state entering chunk k,
/// entry c the state after the last (arithmetic in f32, or f64 for f64 on the CPU).
pub fn pass_states(states: &Tensor, decay: &Tensor) -> Result<Tensor> {
    let at = decay.rank().saturating_sub(1);
    let dims = states.dims();
    if decay.rank() == 0 || states.rank() <= at || dims[..=at] != *decay.dims() {
        candle_core::bail!(
            "pass_states: states {:?} and decay {:?} disagree",
            dims,
            decay.dims()
        )
    }
    let rows: usize = dims[..at].iter().product();
    let (c, m) = (dims[at], dims[at + 1..].iter().product::<usize>());
    // f32 arithmetic, but f64 stays f64 on the CPU (the tests' exact references).
    let work = match states.dtype() {
        DType::F64 if states.device().is_cpu() => DType::F64,
        _ => DType::F32,
    };
    let s = states.to_dtype(work)?.reshape((rows, c, m))?;
    let g = decay.to_dtype(work)?.reshape((rows, c))?;
    let e = s
        .contiguous()?
        .apply_op2(&g.contiguous()?, Pass { reverse: false })?;
    let mut shape = dims.to_vec();
    shape[at] = c + 1;
    e.reshape(shape)?.to_dtype(states.dtype())
}

/// The forward (S, g) -> E, or with `reverse` its adjoint (dE, g) -> dS: (rows, c (+ 1), m),
/// f32 (or f64 on the CPU).
#[derive(Clone, Copy, Debug)]
struct Pass {
    reverse: bool,
}

impl Pass {
    /// (rows, c, m) and the output's shape, from the two inputs' layouts.
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<(usize, usize, usize, Shape)> {
        let (rows, c1, m) = l1.shape().dims3()?;
        let (rows2, c) = l2.shape().dims2()?;
        let (want, out) = match self.reverse {
            false => (c, c + 1),
            true => (c + 1, c),
        };
        if rows2 != rows || c1 != want {
            candle_core::bail!(
                "pass_states: shapes {:?} and {:?} disagree",
                l1.shape(),
                l2.shape()
            )
        }
        Ok((rows, c, m, Shape::from((rows, out, m))))
    }
}

impl CustomOp2 for Pass {
    fn name(&self) -> &'static str {
        match self.reverse {
            false => "pass-states",
            true => "pass-states-bwd",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, m, shape) = self.dims(l1, l2)?;
        let out = match s1 {
            CpuStorage::F64(_) => {
                CpuStorage::F64(self.cpu::<f64>((s1, l1), (s2, l2), c, m, &shape)?)
            }
            _ => CpuStorage::F32(self.cpu::<f32>((s1, l1), (s2, l2), c, m, &shape)?),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (rows, c, m, shape) = self.dims(l1, l2)?;
        cuda::launch(self.reverse, (s1, l1), (s2, l2), (rows, c, m), shape)
    }

    fn bwd(
        &self,
        _s: &Tensor,
        g: &Tensor,
        e: &Tensor,
        de: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ds = de
            .contiguous()?
            .apply_op2_no_bwd(g, &Pass { reverse: true })?;
        let dg = (&ds * e.narrow(1, 0, g.dim(1)?)?)?.sum(2)?;
        Ok((Some(ds), Some(dg)))
    }
}

impl Pass {
    /// Every row on the CPU, in parallel.
    fn cpu<T: WithDType>(
        &self,
        x: (&CpuStorage, &Layout),
        g: (&CpuStorage, &Layout),
        c: usize,
        m: usize,
        shape: &Shape,
    ) -> Result<Vec<T>> {
        let x = contiguous::<T>(x.0, x.1, "pass_states: states")?;
        let g = contiguous::<T>(g.0, g.1, "pass_states: decay")?;
        let mut out = vec![T::zero(); shape.elem_count()];
        let per_row = shape.dims()[1] * m;
        if per_row > 0 {
            let rows = out.par_chunks_mut(per_row).enumerate();
            rows.for_each(|(r, o)| match self.reverse {
                false => forward_row(&x[r * c * m..][..c * m], &g[r * c..][..c], o, m),
                true => backward_row(&x[r * (c + 1) * m..][..(c + 1) * m], &g[r * c..][..c], o, m),
            });
        }
        Ok(out)
    }
}

/// One row: s (c, m), g (c) -> e (c + 1, m).
fn forward_row<T: WithDType>(s: &[T], g: &[T], e: &mut [T], m: usize) {
    for (k, &gk) in g.iter().enumerate() {
        let (done, next) = e.split_at_mut((k + 1) * m);
        let prev = &done[k * m..];
        for ((o, &p), &sk) in next[..m].iter_mut().zip(prev).zip(&s[k * m..][..m]) {
            *o = gk * p + sk;
        }
    }
}

/// One row of the adjoint: de (c + 1, m), g (c) -> ds (c, m).
fn backward_row<T: WithDType>(de: &[T], g: &[T], ds: &mut [T], m: usize) {
    let c = g.len();
    let mut a = de[c * m..].to_vec();
    for k in (0..c).rev() {
        ds[k * m..][..m].copy_from_slice(&a);
        for (ak, &d) in a.iter_mut().zip(&de[k * m..][..m]) {
            *ak = g[k] * *ak + d;
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, Layout, Result, Shape};

    use crate::kernels::nvrtc::{int, view, Kernels};

    static KERNELS: Kernels = Kernels::new(
        include_str!("passing.cu"),
        "SSD state passing",
        "mamba2_state_passing",
    );

    /// The kernels as PTX, or NVRTC's log if they do not compile.
    pub fn ptx() -> std::result::Result<&'static str, String> {
        KERNELS.ptx()
    }

    /// Runs `pass_fwd` (or `pass_bwd`) over (rows, c, m) into a new buffer of `shape`.
    pub fn launch(
        reverse: bool,
        x: (&CudaStorage, &Layout),
        g: (&CudaStorage, &Layout),
        (rows, c, m): (usize, usize, usize),
        shape: Shape,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = x.0.device.clone();
        // Zeros: what an empty launch (no rows, no elements) leaves.
        let mut out = dev.alloc_zeros::<f32>(shape.elem_count())?;
        if rows * m > 0 {
            let int = |v| int(v, "pass_states");
            let (ri, ci, mi) = (int(rows)?, int(c)?, int(m)?);
            let name = if reverse { "pass_bwd" } else { "pass_fwd" };
            let func = KERNELS.func(&dev, name)?;
            let xs = view(x.0, x.1, "pass_states: states")?;
            let gs = view(g.0, g.1, "pass_states: decay")?;
            let mut builder = func.builder();
            builder.arg(&xs).arg(&gs).arg(&mut out);
            builder.arg(&ri).arg(&ci).arg(&mi);
            let cfg = LaunchConfig::for_num_elems(int(rows * m)? as u32);
            unsafe { builder.launch(cfg) }.w()?;
        }
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}

#[cfg(feature = "cuda")]
pub use cuda::ptx;
