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

/// The layout of a block of `layout` resized to `new_size` (alignment kept).
fn resized(layout: Layout, new_size: usize) -> Result<Layout, Refused> {
    Layout::from_size_align(new_size, layout.align()).map_err(|_| Refused)
}

/// `allocate_zeroed` through `allocator`, as a subject's answer.
fn allocate_zeroed(allocator: impl Allocator, layout: Layout) -> Result<NonNull<u8>, Refused> {
    allocator
        .allocate_zeroed(layout)
        .map(NonNull::cast)
        .map_err(|_| Refused)
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
    new_size: usize,
) -> Result<NonNull<u8>, Refused> {
    let new = resized(layout, new_size)?;
    // SAFETY: forwarded from the caller; `new` has the block's alignment.
    let result = unsafe {
        if new_size >= layout.size() {
            allocator.grow(ptr, layout, new)
        } else {
            allocator.shrink(ptr, layout, new)
        }
    };
    result.map(NonNull::cast).map_err(|_| Refused)
}
