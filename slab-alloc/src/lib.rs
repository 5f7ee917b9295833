#![doc = include_str!("../README.md")]

mod cache;
mod depot;
mod heap;
mod magazine;
mod object_cache;
mod registry;
pub mod size_class;
mod slab;
mod slab_map;
mod stats;
mod sync;

pub use cache::{CacheConfig, CacheError, SlabCache};
pub use heap::SlabHeap;
pub use object_cache::{ObjectBox, ObjectCache};
pub use slab::SLAB_BYTES;
pub use stats::{CacheStats, HeapStats};
pub use sync::AbortOnUnwind;

/// How many threads have registered per-thread magazines since the process started.
pub fn threads_registered() -> u32 {
    registry::threads_seen()
}
