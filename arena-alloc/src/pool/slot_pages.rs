//! [`SlotPages`]: the page source of one pool arena, its slot of the pool's reservation.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::sync::Arc;

use pagekeep_mmap::{Contents, Decommit, PageSource};

use crate::sync::{AtomicBool, AtomicUsize};

/// The page source of one pool arena: hands out its slot of the pool's reservation once,
/// and forwards commits and decommits to the pool's source.
pub struct SlotPages {
    pub(super) base: NonNull<u8>,
    pub(super) len: usize,
    pub(super) taken: AtomicBool,
    /// Bytes committed so far (commits never shrink: decommitted pages stay read-write).
    pub(super) committed: AtomicUsize,
    /// The page size of the pool's source.
    pub(super) page_size: usize,
    /// The pool's source, which made the reservation the slot lies in.
    pub(super) source: Arc<dyn PageSource + Send + Sync>,
}

// SAFETY: `SlotPages` is an address range, atomics and a shared handle to a `Send + Sync`
// source; the pages it describes are used under the ownership rules of the pool (module
// docs).
unsafe impl Send for SlotPages {}
// SAFETY: as above.
unsafe impl Sync for SlotPages {}

impl fmt::Debug for SlotPages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotPages")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("committed", &self.committed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn slot_error(operation: pagekeep_mmap::Operation) -> pagekeep_mmap::Error {
    pagekeep_mmap::Error::new(
        operation,
        pagekeep_mmap::Cause::InvalidInput("a pool arena has exactly one reservation, its slot"),
        0,
        0,
    )
}

// SAFETY: the slot is a page-aligned part of the pool's live reservation that belongs to
// this source alone, handed out at most once until released; commit and decommit are
// forwarded to the pool's source, which made the reservation, for ranges inside it.
unsafe impl PageSource for SlotPages {
    #[inline]
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn reserve(&self, len: usize, align: usize) -> pagekeep_mmap::Result<NonNull<u8>> {
        if len > self.len || align > self.page_size() || self.taken.swap(true, Ordering::Relaxed) {
            return Err(slot_error(pagekeep_mmap::Operation::Reserve));
        }
        Ok(self.base)
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> pagekeep_mmap::Result<()> {
        // SAFETY: the caller's range lies in the slot, inside the pool's reservation of
        // `self.source`, which this slot's arena owns.
        unsafe { self.source.commit(ptr, len) }?;
        let end = ptr.addr().get() + len - self.base.addr().get();
        self.committed.fetch_max(end, Ordering::Relaxed);
        Ok(())
    }

    unsafe fn decommit(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        mode: Decommit,
    ) -> pagekeep_mmap::Result<Contents> {
        // SAFETY: as for `commit`; the caller no longer needs the contents.
        unsafe { self.source.decommit(ptr, len, mode) }
    }

    unsafe fn release(
        &self,
        _ptr: NonNull<u8>,
        _len: usize,
        _align: usize,
    ) -> pagekeep_mmap::Result<()> {
        // The pages stay in the pool's reservation; the slot may be handed out again.
        self.taken.store(false, Ordering::Relaxed);
        Ok(())
    }
}
