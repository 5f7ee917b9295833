//! Any `GlobalAlloc`: System, mimalloc, jemalloc, MmapAlloc, SlabHeap, ArenaRouter.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr::NonNull;

use crate::subject::{Promises, Refused, Subject};

/// A [`GlobalAlloc`] under test.
///
/// # Examples
///
/// ```
/// use alloc_test::{GlobalSubject, Promises, check};
///
/// let system = || GlobalSubject::new("System", std::alloc::System, Promises::default());
/// check(system).unwrap();
/// ```
pub struct GlobalSubject<A> {
    name: &'static str,
    allocator: A,
    promises: Promises,
}

impl<A: GlobalAlloc> GlobalSubject<A> {
    /// Puts `allocator` under test with the given promises.
    pub fn new(name: &'static str, allocator: A, promises: Promises) -> Self {
        GlobalSubject {
            name,
            allocator,
            promises,
        }
    }
}

impl<A> fmt::Debug for GlobalSubject<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalSubject")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

// SAFETY: every call is forwarded unchanged.
unsafe impl<A: GlobalAlloc> Subject for GlobalSubject<A> {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    fn promises(&self) -> Promises {
        self.promises
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        // SAFETY: the model never asks a `GlobalAlloc` for zero bytes (`zero_sized` is
        // false for these subjects).
        NonNull::new(unsafe { self.allocator.alloc(layout) }).ok_or(Refused)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<u8>, Refused> {
        // SAFETY: as for `alloc`.
        NonNull::new(unsafe { self.allocator.alloc_zeroed(layout) }).ok_or(Refused)
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.allocator.dealloc(ptr.as_ptr(), layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, Refused> {
        // SAFETY: forwarded from the caller; the model's sizes are non-zero.
        NonNull::new(unsafe { self.allocator.realloc(ptr.as_ptr(), layout, new_size) })
            .ok_or(Refused)
    }
}
