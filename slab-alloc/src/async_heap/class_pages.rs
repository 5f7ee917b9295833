//! [`ClassPages`]: the page source of an async heap's size classes, which tells the
//! heap's budget when the classes give memory back.

use core::ptr::NonNull;
use std::sync::Arc;

use pagekeep_mmap::{Contents, Decommit, PageSource, Result};

use super::budget::Budget;
use crate::cache::SpaceReturned;

/// The heap's source `S` and its budget: the slab heap of an [`AsyncHeap`](super::AsyncHeap)
/// takes its slabs from here, and tells the budget ([`ClassPages::space_returned`]) when
/// a class gives memory back other than by a free of the heap, so that starved requests
/// retry.
#[derive(Clone)]
pub(crate) struct ClassPages<S> {
    source: S,
    budget: Arc<Budget>,
}

impl<S> ClassPages<S> {
    pub(crate) fn new(source: S, budget: Arc<Budget>) -> Self {
        ClassPages { source, budget }
    }

    /// The slab heap's [`on_space_returned`](crate::SlabHeap::on_space_returned) hook:
    /// a source event. Under a class's lock it is only counted (waking there could run
    /// a task that takes the same lock); when a thread's magazines come back through the
    /// registry (its exit) it also wakes the starved requests it makes eligible, under
    /// the registry's lock, which a waker that allocates does not need (an exiting
    /// thread's allocations use no magazines).
    pub(crate) fn space_returned(&self, how: SpaceReturned) {
        self.budget.note_source_return();
        if how == SpaceReturned::ThreadExit {
            // The exit hook must not unwind (the platform calls it): a waker's panic
            // is dropped here, after every other waker was woken.
            let _ =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.budget.announce()));
        }
    }
}

// SAFETY: every call goes to `S`, which keeps the trait's promises.
unsafe impl<S: PageSource> PageSource for ClassPages<S> {
    #[inline]
    fn page_size(&self) -> usize {
        self.source.page_size()
    }
    #[inline]
    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        self.source.reserve(len, align)
    }
    #[inline]
    fn reserve_committed(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        self.source.reserve_committed(len, align)
    }
    #[inline]
    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.source.commit(ptr, len) }
    }
    #[inline]
    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
        // SAFETY: forwarded from the caller.
        unsafe { self.source.decommit(ptr, len, mode) }
    }
    #[inline]
    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, align: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.source.release(ptr, len, align) }
    }
}
