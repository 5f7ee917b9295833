//! [`MeteredPages`]: a page source that counts the bytes it has reserved and not yet
//! released, so a subject built on it can report its footprint
//! ([`Subject::footprint`](crate::Subject::footprint)).

use core::fmt;
use core::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pagekeep_mmap::{Contents, Decommit, DefaultPages, PageSource};

/// A [`PageSource`] that forwards to `S` and counts the bytes reserved from it and not
/// released. Clones share the count.
///
/// # Examples
///
/// ```
/// use pagekeep_alloc_test::MeteredPages;
/// use pagekeep_slab::SlabHeap;
/// use std::alloc::{GlobalAlloc, Layout};
///
/// let heap = SlabHeap::with_source(MeteredPages::default());
/// let layout = Layout::new::<u64>();
/// // SAFETY: a non-zero layout, freed once.
/// unsafe { heap.dealloc(heap.alloc(layout), layout) };
/// assert!(heap.source().held_bytes() > 0, "a slab is held");
/// ```
#[derive(Clone)]
pub struct MeteredPages<S = DefaultPages> {
    inner: S,
    held: Arc<AtomicUsize>,
}

impl<S: PageSource> MeteredPages<S> {
    /// Counts what is reserved from `inner`.
    pub fn new(inner: S) -> Self {
        MeteredPages {
            inner,
            held: Arc::default(),
        }
    }

    /// The bytes reserved and not released.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

impl Default for MeteredPages<DefaultPages> {
    /// Counts what is reserved from OS pages (heap pages under miri).
    fn default() -> Self {
        MeteredPages::new(DefaultPages::default())
    }
}

impl<S> fmt::Debug for MeteredPages<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredPages")
            .field("held_bytes", &self.held.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

// SAFETY: every call is forwarded to `S` unchanged; the count is bookkeeping only.
unsafe impl<S: PageSource> PageSource for MeteredPages<S> {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn reserve(&self, len: usize, align: usize) -> pagekeep_mmap::Result<NonNull<u8>> {
        let ptr = self.inner.reserve(len, align)?;
        self.held.fetch_add(len, Ordering::SeqCst);
        Ok(ptr)
    }

    fn reserve_committed(&self, len: usize, align: usize) -> pagekeep_mmap::Result<NonNull<u8>> {
        let ptr = self.inner.reserve_committed(len, align)?;
        self.held.fetch_add(len, Ordering::SeqCst);
        Ok(ptr)
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> pagekeep_mmap::Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.commit(ptr, len) }
    }

    unsafe fn decommit(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        mode: Decommit,
    ) -> pagekeep_mmap::Result<Contents> {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.decommit(ptr, len, mode) }
    }

    unsafe fn release(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        align: usize,
    ) -> pagekeep_mmap::Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.release(ptr, len, align) }?;
        self.held.fetch_sub(len, Ordering::SeqCst);
        Ok(())
    }
}
