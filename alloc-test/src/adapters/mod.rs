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

use core::alloc::Layout;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;

use crate::subject::Refused;

/// `allocate_zeroed` through `allocator`, as a subject's answer.
fn allocate_zeroed(allocator: impl Allocator, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
    allocator.allocate_zeroed(layout).map_err(|_| Refused)
}

/// Resizes through `allocator`'s `grow` or `shrink`, as a subject's `realloc`.
///
/// # Safety
/// As [`Subject::realloc`](crate::Subject::realloc): `ptr` is a live block of `layout`
/// from `allocator`.
unsafe fn grow_or_shrink(
    allocator: impl Allocator,
    ptr: NonNull<u8>,
    layout: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, Refused> {
    // SAFETY: forwarded from the caller; `grow` for a size at least the old one,
    // `shrink` for a smaller one, as their contracts ask.
    let result = unsafe {
        if new.size() >= layout.size() {
            allocator.grow(ptr, layout, new)
        } else {
            allocator.shrink(ptr, layout, new)
        }
    };
    result.map_err(|_| Refused)
}

/// `grow_zeroed` through `allocator`, as a subject's.
///
/// # Safety
/// As [`Subject::grow_zeroed`](crate::Subject::grow_zeroed).
unsafe fn grow_zeroed(
    allocator: impl Allocator,
    ptr: NonNull<u8>,
    layout: Layout,
    new: Layout,
) -> Result<NonNull<[u8]>, Refused> {
    // SAFETY: forwarded from the caller (the new size is not smaller).
    unsafe { allocator.grow_zeroed(ptr, layout, new) }.map_err(|_| Refused)
}
