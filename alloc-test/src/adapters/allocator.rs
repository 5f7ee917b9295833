//! Any `allocator_api2::Allocator`: MmapAlloc, `&Arena`, SlabHeap.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;

use crate::subject::{Promises, Refused, Subject};

/// An [`Allocator`] under test: zero-sized blocks allowed, growth and shrinking through
/// `grow` / `shrink`.
pub struct AllocatorSubject<A> {
    name: &'static str,
    allocator: A,
    promises: Promises,
}

impl<A: Allocator> AllocatorSubject<A> {
    /// Puts `allocator` under test with the given promises (`zero_sized` is forced on:
    /// the trait allows zero-sized blocks).
    pub fn new(name: &'static str, allocator: A, promises: Promises) -> Self {
        AllocatorSubject {
            name,
            allocator,
            promises: Promises {
                zero_sized: true,
                ..promises
            },
        }
    }
}

impl<A> fmt::Debug for AllocatorSubject<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocatorSubject")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

// SAFETY: every call is forwarded unchanged.
unsafe impl<A: Allocator> Subject for AllocatorSubject<A> {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    fn promises(&self) -> Promises {
        self.promises
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        self.allocator
            .allocate(layout)
            .map(NonNull::cast)
            .map_err(|_| Refused)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        super::allocate_zeroed(&self.allocator, layout)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.allocator.deallocate(ptr, layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { super::grow_or_shrink(&self.allocator, ptr, layout, new_size) }
    }
}
