#![doc = include_str!("../README.md")]

mod asymmetric_fence;
pub mod async_heap;
mod cache;
mod depot;
mod handshake;
mod heap;
mod large_cache;
mod magazine;
mod object_cache;
mod registry;
pub mod size_class;
mod slab;
mod slab_map;
mod stats;
mod sync;
mod sys;

pub use cache::{CacheConfig, CacheError, DECAY_INTERVAL, SlabCache};
#[cfg(any(debug_assertions, feature = "hardened"))]
pub use heap::LocatedBlock;
pub use heap::SlabHeap;
pub use object_cache::{ObjectBox, ObjectCache};
pub use slab::SLAB_BYTES;
pub use slab_map::SLAB_MAP_ADDRESS_BITS;
pub use stats::{CacheStats, HeapStats};
pub use sync::AbortOnUnwind;

/// Whether `pointer` lies in a live slab of any cache or heap of this process (where
/// small blocks live), as opposed to a large block or memory this crate never handed
/// out. One lookup in the slab map, no lock.
///
/// # Examples
///
/// ```
/// let cache = pagekeep_slab::SlabCache::new(64, 8)?;
/// let object = cache.alloc();
/// assert!(pagekeep_slab::is_in_a_slab(object.as_ptr()));
/// assert!(!pagekeep_slab::is_in_a_slab(&0u64 as *const u64 as *const u8));
/// // SAFETY: allocated above, freed once.
/// unsafe { cache.free(object) };
/// # Ok::<(), pagekeep_slab::CacheError>(())
/// ```
#[inline]
pub fn is_in_a_slab(pointer: *const u8) -> bool {
    slab_map::lookup(pointer.addr() & !(SLAB_BYTES - 1)).is_some()
}

/// How many threads have registered per-thread magazines since the process started.
pub fn threads_registered() -> u32 {
    registry::threads_seen()
}
