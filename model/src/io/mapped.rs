//! Weights that point into the checkpoint file: f32 tensors read as `Vec<f32>`s over a private
//! memory map of a safetensors file, so a load costs page-table entries for pages the page
//! cache already holds, instead of fresh memory (which the kernel zeroes first, most of a
//! plain load's time) and a copy. candle's CPU tensors own a `Vec`; such a `Vec` is fine to
//! read, write (the map is copy-on-write: the file never changes) and move, but its memory
//! must never reach the allocator's `free`. [`MapAware`], installed as the program's global
//! allocator, sees to that: it recognises pointers into a live map, counts the `Vec`s still
//! using each map and unmaps it when the last one goes. Without it (a program that does not
//! install it) nothing is mapped and files are read as before.
//!
//! Only for runs that read the weights (generate, eval): training writes every parameter, and
//! each first write to a page of the map copies that page alone. A file rewritten in place
//! while mapped (`cp` over it, truncated) changes or faults the reader; our own writers write a
//! temporary file and rename it, which leaves a mapped file as it was.

use std::alloc::{GlobalAlloc, Layout};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;

/// A global allocator that passes everything to `A` except the memory of mapped files.
/// Install it to let loads map checkpoint files:
///
/// ```ignore
/// #[global_allocator]
/// static GLOBAL: MapAware<System> = unsafe { MapAware::new(System) };
/// ```
pub struct MapAware<A>(A);

impl<A> MapAware<A> {
    /// # Safety
    /// Only as the program's `#[global_allocator]`: its first allocation turns mapping on,
    /// and the memory of a map must then reach this allocator's `dealloc`, no other.
    pub const unsafe fn new(inner: A) -> MapAware<A> {
        MapAware(inner)
    }
}

/// Set by the first allocation through [`MapAware`]: mapping is safe only then.
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn installed() {
    // Read first: a store on every allocation would bounce the line between cores.
    if !INSTALLED.load(SeqCst) {
        INSTALLED.store(true, SeqCst);
    }
}

/// Live maps, at most this many at once (a load past it reads instead).
const SLOTS: usize = 64;

/// One live map: its address range and how many `Vec`s (plus the [`Mapping`] itself while
/// open) still use it. `start == 0` marks a free slot. `version` is odd while the range
/// changes, so a reader never pairs one map's start with another's length.
struct Slot {
    version: AtomicUsize,
    start: AtomicUsize,
    len: AtomicUsize,
    users: AtomicUsize,
}

impl Slot {
    /// The range, as one consistent pair.
    fn range(&self) -> (usize, usize) {
        loop {
            let v = self.version.load(SeqCst);
            let range = (self.start.load(SeqCst), self.len.load(SeqCst));
            if v.is_multiple_of(2) && self.version.load(SeqCst) == v {
                return range;
            }
            std::hint::spin_loop();
        }
    }

    /// Sets the range (only under [`TAKE`], or by the slot's last user).
    fn set(&self, start: usize, len: usize) {
        self.version.fetch_add(1, SeqCst);
        self.len.store(len, SeqCst);
        self.start.store(start, SeqCst);
        self.version.fetch_add(1, SeqCst);
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    version: AtomicUsize::new(0),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    users: AtomicUsize::new(0),
};
static SLOT: [Slot; SLOTS] = [FREE; SLOTS];
/// How many slots are in use: the allocator's fast path when none is.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Slots below this have ever been used: the allocator looks no further.
static USED: AtomicUsize = AtomicUsize::new(0);
/// Serialises taking a slot (never held by the allocator's own paths).
static TAKE: Mutex<()> = Mutex::new(());

/// The slot of the map that holds `ptr`, if any. A pointer of the inner allocator never
/// matches: at any instant its memory and a live map are disjoint.
fn owner(ptr: *mut u8) -> Option<&'static Slot> {
    if LIVE.load(SeqCst) == 0 {
        return None;
    }
    let p = ptr as usize;
    SLOT[..USED.load(SeqCst)].iter().find(|s| {
        let (start, len) = s.range();
        start != 0 && p >= start && p < start + len
    })
}

/// Drops the pages wholly inside `len` bytes at `ptr` from the process (a tensor converted to
/// bf16 and dropped leaves no f32 pages resident while the rest of its file stays mapped).
fn forget_pages(ptr: *mut u8, len: usize) {
    const PAGE: usize = 4096;
    let (start, end) = ((ptr as usize).next_multiple_of(PAGE), ptr as usize + len);
    if end >= start + PAGE {
        let len = (end - start) / PAGE * PAGE;
        // Safety: whole pages of a dead Vec inside a live private map; touched again (never,
        // as the Vec is gone) they would read the file's bytes.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    }
}

/// One user of `slot` is done; the last one unmaps it.
fn release(slot: &Slot) {
    if slot.users.fetch_sub(1, SeqCst) == 1 {
        let (start, len) = slot.range();
        slot.set(0, 0);
        LIVE.fetch_sub(1, SeqCst);
        // Safety: the range is the map this slot took; nothing uses it any more.
        unsafe { libc::munmap(start as *mut libc::c_void, len) };
    }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for MapAware<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        installed();
        self.0.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        installed();
        self.0.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match owner(ptr) {
            Some(slot) => {
                forget_pages(ptr, layout.size());
                release(slot)
            }
            None => self.0.dealloc(ptr, layout),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(slot) = owner(ptr) else {
            return self.0.realloc(ptr, layout, new_size);
        };
        // A mapped Vec that grows or shrinks moves to the allocator's memory.
        let new = self
            .0
            .alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            forget_pages(ptr, layout.size());
            release(slot);
        }
        new
    }
}

/// A file mapped copy-on-write, registered with [`MapAware`], to take f32 tensors from.
pub(super) struct Mapping {
    slot: &'static Slot,
    base: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `f` (`len` bytes) when [`MapAware`] is installed, the machine is little-endian (the
    /// format's byte order) and a slot is free; `None` otherwise, or if the map fails.
    pub(super) fn new(f: &File, len: u64) -> Option<Mapping> {
        if !INSTALLED.load(SeqCst) || cfg!(target_endian = "big") || len == 0 {
            return None;
        }
        let len = usize::try_from(len).ok()?;
        let _taking = TAKE.lock().ok()?;
        let index = SLOT.iter().position(|s| s.range().0 == 0)?;
        let slot = &SLOT[index];
        // Safety: a fresh private map of an open file; the kernel picks the address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        // The file changed size since its length was read: read it instead.
        if f.metadata().map(|m| m.len()).ok() != Some(len as u64) {
            // Safety: the map just made, not handed out.
            unsafe { libc::munmap(base, len) };
            return None;
        }
        // Page tables for the whole file in one call, without breaking copy-on-write (a plain
        // MAP_POPULATE would copy every page of a writable private map). Older kernels lack
        // it; the pages then fault in as they are read.
        const MADV_POPULATE_READ: libc::c_int = 22;
        // Safety: advice on the map just made.
        unsafe { libc::madvise(base, len, MADV_POPULATE_READ) };
        slot.users.store(1, SeqCst);
        slot.set(base as usize, len);
        USED.fetch_max(index + 1, SeqCst);
        LIVE.fetch_add(1, SeqCst);
        Some(Mapping {
            slot,
            base: base as *mut u8,
            len,
        })
    }

    /// The `numel` f32 values at byte `at` as a `Vec` over the map, when they lie in it and are
    /// aligned for f32.
    pub(super) fn f32s(&self, at: usize, numel: usize) -> Option<Vec<f32>> {
        let end = numel.checked_mul(4).and_then(|b| b.checked_add(at))?;
        let ptr = self.base.wrapping_add(at);
        if numel == 0
            || end > self.len
            || !(ptr as usize).is_multiple_of(std::mem::align_of::<f32>())
        {
            return None;
        }
        self.slot.users.fetch_add(1, SeqCst);
        // Safety: the range lies in the live map (checked above) and is f32-aligned; any bytes
        // are a valid f32. MapAware, the global allocator (the contract of MapAware::new, and
        // nothing is mapped until it has allocated), takes this memory back when the Vec goes.
        // The caller hands out each byte of the file at most once (no two Vecs alias).
        Some(unsafe { Vec::from_raw_parts(ptr as *mut f32, numel, numel) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        release(self.slot);
    }
}

/// How many files are mapped now (each until the last tensor from it is dropped).
pub fn live_maps() -> usize {
    LIVE.load(SeqCst)
}
