//! Any `allocator_api2::Allocator`: MmapAlloc, SlabHeap, `&Arena`.

use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;

use crate::subject::{Promises, Refused, Subject};

/// An [`Allocator`] under test: zero-sized blocks allowed, growth and shrinking through
/// `grow` / `shrink` (to any alignment) and `grow_zeroed`.
pub struct AllocatorSubject<A> {
    name: &'static str,
    allocator: A,
    promises: Promises,
    footprint: Option<fn(&A) -> usize>,
    /// The subject as one that may move between threads, for an allocator that is `Send`.
    threaded: Option<fn(&mut Self) -> &mut (dyn Subject + Send)>,
}

impl<A: Allocator> AllocatorSubject<A> {
    /// Puts a thread-safe `allocator` under test with the given promises (`zero_sized`,
    /// `realign` and `grow_zeroed` are forced on: the trait has them); it also runs the
    /// programs on several threads.
    pub fn new(name: &'static str, allocator: A, promises: Promises) -> Self
    where
        A: Send + Sync,
    {
        AllocatorSubject {
            threaded: Some(|subject| subject),
            ..AllocatorSubject::single_threaded(name, allocator, promises)
        }
    }

    /// Puts an allocator that is not thread-safe (such as `&Arena`) under test.
    pub fn single_threaded(name: &'static str, allocator: A, promises: Promises) -> Self {
        AllocatorSubject {
            name,
            allocator,
            promises: Promises {
                zero_sized: true,
                realign: true,
                grow_zeroed: true,
                ..promises
            },
            footprint: None,
            threaded: None,
        }
    }

    /// Reports `footprint(&allocator)` as the subject's footprint (the bytes it holds
    /// from its source), for the footprint check.
    #[must_use = "returns the subject with its footprint"]
    pub fn with_footprint(self, footprint: fn(&A) -> usize) -> Self {
        AllocatorSubject {
            footprint: Some(footprint),
            ..self
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

    fn alloc(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
        self.allocator.allocate(layout).map_err(|_| Refused)
    }

    fn alloc_zeroed(&mut self, layout: Layout) -> Result<NonNull<[u8]>, Refused> {
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
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { super::grow_or_shrink(&self.allocator, ptr, layout, new) }
    }

    unsafe fn grow_zeroed(
        &mut self,
        ptr: NonNull<u8>,
        layout: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, Refused> {
        // SAFETY: forwarded from the caller.
        unsafe { super::grow_zeroed(&self.allocator, ptr, layout, new) }
    }

    fn footprint(&self) -> Option<usize> {
        self.footprint.map(|footprint| footprint(&self.allocator))
    }

    fn threaded(&mut self) -> Option<&mut (dyn Subject + Send)> {
        self.threaded.map(|threaded| threaded(self))
    }
}
