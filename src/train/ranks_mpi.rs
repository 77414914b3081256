//! The MPI side of [`super::Ranks`]: the world communicator and the fixed-order sums.

use mpi::collective::CommunicatorCollectives;
#[cfg(feature = "nccl")]
use mpi::collective::Root as _;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

/// Values gathered per round when summing gradients: bounds the buffer to this many floats
/// per rank (64 MB at 4 ranks), whatever the model's size.
const CHUNK: usize = 1 << 22;

pub struct Group {
    world: SimpleCommunicator,
    /// The GPUs' communicator, made at the first sum of gradients on a GPU.
    #[cfg(feature = "nccl")]
    pub nccl: std::cell::OnceCell<super::nccl::Nccl>,
    // Dropped after `world`: dropping the universe finalises MPI.
    _universe: Universe,
}

impl Group {
    pub fn init() -> Result<Group, String> {
        // Only the training loop's thread calls MPI.
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or("MPI is already initialised")?;
        let (rank, size) = (universe.world().rank(), universe.world().size());
        // A panic on one rank (on any thread) must not leave the others waiting in a
        // collective: after the usual message, every rank is stopped.
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            eprintln!("error: rank {rank} of {size} panicked; stopping every rank");
            SimpleCommunicator::world().abort(101);
        }));
        Ok(Group {
            world: universe.world(),
            #[cfg(feature = "nccl")]
            nccl: std::cell::OnceCell::new(),
            _universe: universe,
        })
    }

    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// Every rank's `value`, in rank order.
    pub fn gather<T: Equivalence + Copy + Default>(&self, value: T) -> Vec<T> {
        let mut all = vec![T::default(); self.size()];
        self.world.all_gather_into(&value, &mut all[..]);
        all
    }

    /// The sum of every rank's `value`, added in rank order.
    pub fn sum_f64(&self, value: f64) -> f64 {
        self.gather(value).iter().sum()
    }

    /// Replaces `values` by their sum over the ranks, added in rank order (an all-gather, not
    /// MPI's all-reduce, whose order of addition is the library's choice).
    pub fn sum_f32(&self, values: &mut [f32]) -> Result<(), String> {
        let n = self.size();
        let mut gathered = vec![0.0f32; n * CHUNK.min(values.len())];
        for chunk in values.chunks_mut(CHUNK) {
            let len = chunk.len();
            let all = &mut gathered[..n * len];
            self.world.all_gather_into(&*chunk, all);
            for (i, x) in chunk.iter_mut().enumerate() {
                *x = (0..n).map(|r| all[r * len + i]).sum();
            }
        }
        Ok(())
    }

    /// Overwrites `bytes` with rank 0's.
    #[cfg(feature = "nccl")]
    pub fn broadcast_from_root(&self, bytes: &mut [u8]) {
        use mpi::topology::Communicator as _;
        self.world.process_at_rank(0).broadcast_into(bytes);
    }

    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
