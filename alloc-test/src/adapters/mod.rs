//! Adapters that put allocators behind [`Subject`](crate::Subject): one per allocator
//! interface (`GlobalAlloc`, `allocator_api2::Allocator`) and one per allocator with
//! abilities or limits of its own (arenas, fixed-size caches).

mod allocator;
mod arena;
mod bump;
mod global;
mod slab;

pub use allocator::AllocatorSubject;
pub use arena::{ArenaSubject, PooledArenaSubject, RouterSubject};
pub use bump::BumpaloSubject;
pub use global::GlobalSubject;
pub use slab::{Object, ObjectCacheSubject, SlabCacheSubject};
