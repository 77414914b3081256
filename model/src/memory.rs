//! The memory a training step takes on its device, as `metrics.jsonl` reports it: the step's
//! peak of live tensor bytes. On the CPU, [`Counting`] (installed as the program's allocator)
//! counts the bytes of large allocations, which in a step are tensor storage; on a CUDA GPU the
//! device's memory pool, which candle allocates from, keeps its own high-water mark.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use candle_core::{Device, Result};

/// Allocations from this size up are counted: tensor storage. Below it are the graph's nodes,
/// shapes and strings, which come and go in every op and would only add noise.
pub const COUNTED_FROM: usize = 4096;

static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// A global allocator that counts the live bytes of large allocations and their peak:
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: Counting<System> = Counting::new(System);
/// ```
pub struct Counting<A>(A);

impl<A> Counting<A> {
    pub const fn new(inner: A) -> Counting<A> {
        Counting(inner)
    }
}

/// Marks the counter as installed (a load first: every allocation passes here, and a store
/// each time would bounce the line between cores).
fn installed() {
    if !COUNTING.load(Relaxed) {
        COUNTING.store(true, Relaxed);
    }
}

fn grew(n: usize) {
    if n >= COUNTED_FROM {
        let now = LIVE.fetch_add(n as u64, Relaxed) + n as u64;
        PEAK.fetch_max(now, Relaxed);
    }
}

fn shrank(n: usize) {
    if n >= COUNTED_FROM {
        LIVE.fetch_sub(n as u64, Relaxed);
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        installed();
        let p = self.0.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        installed();
        let p = self.0.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        self.0.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = self.0.realloc(ptr, layout, new_size);
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

/// Starts a new peak on `dev`: from now, [`peak_bytes`] is the most that is live at once.
pub fn reset_peak(dev: &Device) -> Result<()> {
    match dev {
        Device::Cpu => {
            PEAK.store(LIVE.load(Relaxed), Relaxed);
            Ok(())
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => cuda::reset_peak(d),
        _ => Ok(()),
    }
}

/// The most tensor memory live on `dev` at once since [`reset_peak`]; `None` where it is not
/// known (a CPU program without [`Counting`], a device without a pool).
pub fn peak_bytes(dev: &Device) -> Result<Option<u64>> {
    match dev {
        Device::Cpu => Ok(COUNTING.load(Relaxed).then(|| PEAK.load(Relaxed))),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => cuda::peak_bytes(d),
        _ => Ok(None),
    }
}

/// Tensor bytes live on the CPU now (0 without [`Counting`]).
pub fn live_bytes() -> u64 {
    LIVE.load(Relaxed)
}

/// The default memory pool of the GPU, from which candle's stream-ordered allocations come.
#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::sys::{
        self, CUmemPool_attribute as Attr, CUmemoryPool,
    };
    use candle_core::cuda_backend::CudaDevice;
    use candle_core::Result;

    fn check(r: sys::CUresult, what: &str) -> Result<()> {
        match r {
            sys::CUresult::CUDA_SUCCESS => Ok(()),
            e => candle_core::bail!("{what}: {e:?}"),
        }
    }

    fn pool(d: &CudaDevice) -> Result<CUmemoryPool> {
        let ctx = d.cuda_stream().context().clone();
        ctx.bind_to_thread().map_err(candle_core::Error::wrap)?;
        let mut pool: CUmemoryPool = std::ptr::null_mut();
        // Safety: the device handle is the context's; `pool` is written by the call.
        check(
            unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) },
            "the GPU's memory pool",
        )?;
        Ok(pool)
    }

    /// Zeroes the pool's high-water mark (the driver sets it to what is in use now). The pool
    /// also keeps what a step frees for the next one instead of returning it to the driver
    /// at every synchronisation: a step allocates the same sizes every time.
    pub fn reset_peak(d: &CudaDevice) -> Result<()> {
        let pool = pool(d)?;
        let mut zero: u64 = 0;
        let mut keep: u64 = u64::MAX;
        // Safety: both attributes take a u64 value.
        unsafe {
            check(
                sys::cuMemPoolSetAttribute(
                    pool,
                    Attr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    (&mut keep as *mut u64).cast(),
                ),
                "keeping the pool's memory",
            )?;
            check(
                sys::cuMemPoolSetAttribute(
                    pool,
                    Attr::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    (&mut zero as *mut u64).cast(),
                ),
                "resetting the pool's peak",
            )
        }
    }

    pub fn peak_bytes(d: &CudaDevice) -> Result<Option<u64>> {
        let pool = pool(d)?;
        d.cuda_stream()
            .synchronize()
            .map_err(candle_core::Error::wrap)?;
        let mut high: u64 = 0;
        // Safety: the attribute is a u64.
        check(
            unsafe {
                sys::cuMemPoolGetAttribute(
                    pool,
                    Attr::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                    (&mut high as *mut u64).cast(),
                )
            },
            "reading the pool's peak",
        )?;
        Ok(Some(high))
    }
}
