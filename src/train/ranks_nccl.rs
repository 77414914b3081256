//! Gradients on GPUs, summed by NCCL across the ranks (one GPU each). The communicator is made
//! from an id rank 0 creates and broadcasts over MPI. NCCL's ring sums in the same order on
//! every step for a given set of GPUs, so a run reproduces on the same machines.

use candle_core::cuda_backend::cudarc::nccl::{self, Comm, Id, ReduceOp};
use candle_core::{CudaStorage, CustomOp1, Layout, Shape, Tensor};

pub struct Nccl {
    comm: Comm,
}

impl Nccl {
    /// Joins the ranks' communicator on `device` (collective: every rank calls it).
    pub fn new(
        group: &super::group::Group,
        device: &candle_core::CudaDevice,
    ) -> Result<Nccl, String> {
        let fail = |e: nccl::result::NcclError| format!("NCCL: {e:?}");
        let mut id = [0u8; 128];
        if group.rank() == 0 {
            let ours = Id::new().map_err(fail)?;
            for (b, c) in id.iter_mut().zip(ours.internal()) {
                *b = *c as u8;
            }
        }
        group.broadcast_from_root(&mut id);
        let id = Id::uninit(id.map(|b| b as core::ffi::c_char));
        let comm = Comm::from_rank(device.cuda_stream(), group.rank(), group.size(), id);
        Ok(Nccl {
            comm: comm.map_err(fail)?,
        })
    }

    /// The sum over the ranks of an f32 tensor on this rank's GPU.
    pub fn sum(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        t.contiguous()?
            .apply_op1_no_bwd(&AllReduce { comm: &self.comm })
    }
}

struct AllReduce<'a> {
    comm: &'a Comm,
}

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("NCCL sums tensors on GPUs only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("NCCL sums contiguous tensors only")
        };
        let input = s.as_cuda_slice::<f32>()?.slice(a..b);
        let dev = s.device.clone();
        // Safety: every element is written by the all-reduce before it is read.
        let mut out = unsafe { dev.alloc::<f32>(b - a) }?;
        self.comm
            .all_reduce(&input, &mut out, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::msg(format!("NCCL all-reduce: {e:?}")))?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), l.shape().clone()))
    }
}
