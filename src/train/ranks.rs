//! Data-parallel training: `mpirun -np N mamba train ...` runs N ranks that each train on
//! their share of every global batch and average their gradients before every step.
//!
//! Every rank runs the same loader over the whole stream and keeps its rows of each batch of
//! `N * --batch-size` windows: the loader's position is global, so a checkpoint resumes at
//! any rank count with the same global batch, and N ranks see exactly the batches one process
//! with N times the batch sees. Reductions gather every rank's values and sum them in rank
//! order, so a run reproduces whatever the network's timing; with the `nccl` feature,
//! gradients on GPUs are summed by NCCL instead. Rank 0 alone writes checkpoints, metrics and
//! the progress bar. Without the `mpi` feature there is one rank.

use std::rc::Rc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::pack::Batch;

#[cfg(feature = "mpi")]
#[path = "ranks_mpi.rs"]
mod group;
#[cfg(feature = "nccl")]
#[path = "ranks_nccl.rs"]
mod nccl;

/// The ranks of this run: a cheap handle, one rank unless started by an MPI launcher. Not
/// `Send`: only the thread that joined calls MPI.
#[derive(Clone, Default)]
pub struct Ranks {
    #[cfg(feature = "mpi")]
    group: Option<Rc<group::Group>>,
    #[cfg(not(feature = "mpi"))]
    group: Option<Rc<std::convert::Infallible>>,
}

impl std::fmt::Debug for Ranks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} of {}", self.rank(), self.size())
    }
}

/// The number of processes an MPI launcher started, if this process was started by one:
/// Open MPI's mpirun, MPICH's (PMI), or Slurm's srun (its task count, with PMIx or PMI-2).
fn launched_size() -> Option<usize> {
    let var = |name: &str| std::env::var(name).ok()?.trim().parse::<usize>().ok();
    var("OMPI_COMM_WORLD_SIZE")
        .or_else(|| var("PMI_SIZE"))
        .or_else(|| var("SLURM_STEP_NUM_TASKS").filter(|_| var("SLURM_PROCID").is_some()))
}

impl Ranks {
    /// Joins the launcher's ranks when started by one (initialising MPI; it is finalised
    /// when the last handle is dropped), else a single rank.
    pub fn join() -> Result<Ranks, String> {
        match launched_size() {
            None | Some(0 | 1) => Ok(Ranks::default()),
            #[cfg(feature = "mpi")]
            Some(n) => {
                let group = group::Group::init()?;
                if group.size() != n {
                    // Each process would be a world of its own and train alone.
                    return Err(format!(
                        "the launcher started {n} processes but MPI joined {} of them: is this \
                         build's MPI the launcher's (srun needs --mpi=pmix with Open MPI)?",
                        group.size()
                    ));
                }
                Ok(Ranks {
                    group: Some(Rc::new(group)),
                })
            }
            #[cfg(not(feature = "mpi"))]
            Some(n) => Err(format!(
                "started as {n} MPI processes, but this build has no MPI: each would train \
                 alone; build with `cargo build --release --features mpi`"
            )),
        }
    }

    pub fn rank(&self) -> usize {
        match &self.group {
            #[cfg(feature = "mpi")]
            Some(g) => g.rank(),
            _ => 0,
        }
    }

    pub fn size(&self) -> usize {
        match &self.group {
            #[cfg(feature = "mpi")]
            Some(g) => g.size(),
            _ => 1,
        }
    }

    /// The GPU of this rank among those it sees: its number among the ranks on its machine
    /// (from the launcher), modulo the GPUs `CUDA_VISIBLE_DEVICES` leaves it; with one rank,
    /// none.
    pub fn local_gpu(&self) -> Option<usize> {
        if self.size() == 1 {
            return None;
        }
        let local: usize = [
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "MPI_LOCALRANKID",
            "SLURM_LOCALID",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())?;
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").map(|v| v.split(',').count());
        Some(local % visible.unwrap_or(usize::MAX).max(1))
    }

    /// Rank 0 writes checkpoints, metrics and the progress bar.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// The first rank whose `value()` differs from rank 0's, if any (every rank must call it;
    /// with one rank `value` is not computed).
    pub fn first_different<E>(
        &self,
        value: impl FnOnce() -> Result<u64, E>,
    ) -> Result<Option<usize>, E> {
        match &self.group {
            #[cfg(feature = "mpi")]
            Some(g) => {
                let all = g.gather(value()?);
                Ok(all.iter().position(|v| *v != all[0]))
            }
            // One rank: nothing to compare, nothing to compute.
            _ => {
                let _ = value;
                Ok(None)
            }
        }
    }

    /// This rank's rows of a global batch.
    pub fn share(&self, batch: Batch) -> Batch {
        let n = self.size();
        if n == 1 {
            return batch;
        }
        let rows = batch.batch_size / n;
        batch.rows(self.rank() * rows, (self.rank() + 1) * rows)
    }

    /// This rank's share of `batch` when its rows split evenly over the ranks, else all of it.
    pub fn share_whole(&self, batch: Batch) -> Batch {
        match batch.batch_size.is_multiple_of(self.size()) {
            true => self.share(batch),
            false => batch,
        }
    }

    /// The mean of `value` over the ranks (the same on every rank).
    pub fn mean(&self, value: f64) -> f64 {
        match &self.group {
            #[cfg(feature = "mpi")]
            Some(g) => g.sum_f64(value) / g.size() as f64,
            _ => value,
        }
    }

    /// Replaces every gradient by its mean over the ranks. A variable without a gradient on
    /// this rank counts as zeros, so every rank sends the same layout.
    pub fn average(&self, grads: &mut GradStore, vars: &[Var]) -> candle_core::Result<()> {
        let n = self.size();
        if n == 1 {
            return Ok(());
        }
        #[cfg(feature = "nccl")]
        if let (Some(g), Some(v)) = (&self.group, vars.first()) {
            if let candle_core::Device::Cuda(dev) = v.device() {
                return self.average_on_gpus(g, dev, grads, vars);
            }
        }
        let mut flat = Vec::new();
        for v in vars {
            match grads.get(v.as_tensor()) {
                Some(g) => flat.extend(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
                None => flat.resize(flat.len() + v.elem_count(), 0.0),
            }
        }
        self.sum_f32(&mut flat)?;
        let scale = 1.0 / n as f32;
        let mut at = 0;
        for v in vars {
            let t = v.as_tensor();
            let count = t.elem_count();
            let mean: Vec<f32> = flat[at..at + count].iter().map(|x| x * scale).collect();
            at += count;
            let grad = Tensor::from_vec(mean, t.shape(), t.device())?.to_dtype(t.dtype())?;
            grads.insert(t, grad);
        }
        Ok(())
    }

    /// [`Ranks::average`] with NCCL: the gradients never leave the GPUs.
    #[cfg(feature = "nccl")]
    fn average_on_gpus(
        &self,
        g: &group::Group,
        dev: &candle_core::CudaDevice,
        grads: &mut GradStore,
        vars: &[Var],
    ) -> candle_core::Result<()> {
        let nccl = match g.nccl.get() {
            Some(nccl) => nccl,
            None => {
                let made = nccl::Nccl::new(g, dev).map_err(candle_core::Error::msg)?;
                g.nccl.get_or_init(|| made)
            }
        };
        let flat = vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(grad) => grad.to_dtype(DType::F32)?.flatten_all(),
                None => Tensor::zeros(v.elem_count(), DType::F32, v.device()),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mean = (nccl.sum(&Tensor::cat(&flat, 0)?)? / self.size() as f64)?;
        let mut at = 0;
        for v in vars {
            let t = v.as_tensor();
            let grad = mean.narrow(0, at, t.elem_count())?.reshape(t.shape())?;
            at += t.elem_count();
            grads.insert(t, grad.to_dtype(t.dtype())?);
        }
        Ok(())
    }

    fn sum_f32(&self, _values: &mut [f32]) -> candle_core::Result<()> {
        match &self.group {
            #[cfg(feature = "mpi")]
            Some(g) => g.sum_f32(_values).map_err(candle_core::Error::msg),
            _ => Ok(()),
        }
    }

    /// Stops every rank (an error on one would leave the others waiting forever).
    pub fn abort(&self, code: i32) {
        #[cfg(feature = "mpi")]
        if let Some(g) = &self.group {
            g.abort(code);
        }
        let _ = code;
    }
}
