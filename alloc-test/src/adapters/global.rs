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
/// use pagekeep_alloc_test::{GlobalSubject, Promises, check};
///
/// let system = || GlobalSubject::new("System", std::alloc::System, Promises::default());
/// check(system).unwrap();
/// ```
pub struct GlobalSubject<A> {
    name: &'static str,
    allocator: A,
    promises: Promises,
    footprint: Option<fn(&A) -> usize>,
}

impl<A: GlobalAlloc> GlobalSubject<A> {
    /// Puts `allocator` under test with the given promises.
    pub fn new(name: &'static str, allocator: A, promises: Promises) -> Self {
        GlobalSubject {
            name,
            allocator,
            promises,
            footprint: None,
        }
    }

    /// Reports `footprint(&allocator)` as the subject's footprint (the bytes it holds
    /// from its source), for the footprint check.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_alloc_test::{GlobalSubject, MeteredPages, Promises, check};
    /// use pagekeep_slab::SlabHeap;
    ///
    /// let heap = || {
    ///     GlobalSubject::new("SlabHeap", SlabHeap::with_source(MeteredPages::default()), Promises::default())
    ///         .with_footprint(|heap| heap.source().held_bytes() + heap.stats().large_bytes + heap.stats().large_bytes_kept)
    /// };
    /// check(heap).unwrap();
    /// ```
    #[must_use = "returns the subject with its footprint"]
    pub fn with_footprint(self, footprint: fn(&A) -> usize) -> Self {
        GlobalSubject {
            footprint: Some(footprint),
            ..self
        }
    }

    /// The allocator.
    pub fn allocator(&self) -> &A {
        &self.allocator
    }
}

impl<A> fmt::Debug for GlobalSubject<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalSubject")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

// SAFETY: every call is forwarded unchanged. A `GlobalAlloc` is shared by every thread:
// the subject runs the programs on several threads.
unsafe impl<A: GlobalAlloc + Send + Sync> Subject for GlobalSubject<A> {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    fn promises(&self) -> Promises {
        self.promises
    }

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: the model never asks a `GlobalAlloc` for zero bytes (`zero_sized` is
        // false for these subjects).
        block(unsafe { self.allocator.alloc(layout) }, layout.size())
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: as for `alloc`.
        block(
            unsafe { self.allocator.alloc_zeroed(layout) },
            layout.size(),
        )
    }

    unsafe fn dealloc(&mut self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { self.allocator.dealloc(ptr.as_ptr(), layout) }
    }

    unsafe fn realloc(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        debug_assert_eq!(new.align(), layout.align(), "`realign` is not promised");
        // SAFETY: forwarded from the caller; the model's sizes are non-zero and keep the
        // alignment (`realign` is not promised).
        let moved = unsafe { self.allocator.realloc(ptr.as_ptr(), layout, new.size()) };
        block(moved, new.size())
    }

    fn footprint(&self) -> Option<usize> {
        self.footprint.map(|footprint| footprint(&self.allocator))
    }

    fn threaded(&mut self) -> Option<&mut (dyn Subject + Send)> {
        Some(self)
    }
}

/// A `GlobalAlloc`'s answer as a block of `size` bytes, or a refusal for null.
fn block(ptr: *mut u8, size: usize) -> Result<NonNull<[u8]>, Refused> {
    NonNull::new(ptr)
        .map(|ptr| NonNull::slice_from_raw_parts(ptr, size))
        .ok_or(Refused)
}
