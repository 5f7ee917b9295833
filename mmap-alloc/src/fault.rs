//! A [`PageSource`] that fails on demand (feature `fault-injection`), so that the
//! allocators built on sources can be tested for what they do when memory runs out.

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Cause, Error, Operation, Result};
use crate::source::PageSource;
use crate::sys::{Contents, Decommit};

const NEVER: u64 = u64::MAX;

/// Wraps a source and fails its requests for memory (`reserve`, `reserve_committed`,
/// `commit`) when told to: the Nth request from now, or every request while failing is
/// switched on. Giving memory back (`decommit`, `release`) always goes through, so a test
/// can check that nothing leaks after a failure.
///
/// Failures have [`Cause::Injected`] and map to [`std::io::ErrorKind::OutOfMemory`].
///
/// # Examples
///
/// ```
/// use pagekeep_mmap::{FailingSource, HeapPages, PageSource};
///
/// let source = FailingSource::new(HeapPages);
/// source.fail_nth(2);
/// let first = source.reserve(4096, 4096)?;
/// assert!(source.reserve(4096, 4096).is_err()); // the 2nd request fails...
/// let third = source.reserve(4096, 4096)?; // ...and the source recovers.
/// assert_eq!(source.injected_failures(), 1);
/// // SAFETY: both reservations were made above and are released once.
/// unsafe {
///     source.release(first, 4096, 4096)?;
///     source.release(third, 4096, 4096)?;
/// }
/// # Ok::<(), pagekeep_mmap::Error>(())
/// ```
pub struct FailingSource<S> {
    inner: S,
    /// Requests seen so far.
    requests: AtomicU64,
    /// The request number (1-based, counted in `requests`) that fails next; `NEVER` if none.
    fail_at: AtomicU64,
    /// While set, every request fails.
    failing: AtomicBool,
    injected: AtomicU64,
}

impl<S> FailingSource<S> {
    /// Wraps `inner`, failing nothing until told to.
    pub const fn new(inner: S) -> Self {
        FailingSource {
            inner,
            requests: AtomicU64::new(0),
            fail_at: AtomicU64::new(NEVER),
            failing: AtomicBool::new(false),
            injected: AtomicU64::new(0),
        }
    }

    /// Makes the `n`th request from now fail (`n >= 1`; 1 is the next one), once.
    pub fn fail_nth(&self, n: u64) {
        let now = self.requests.load(Ordering::SeqCst);
        self.fail_at
            .store(now.saturating_add(n.max(1)), Ordering::SeqCst);
    }

    /// Switches failing of every request on or off.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Cancels every planned failure.
    pub fn recover(&self) {
        self.set_failing(false);
        self.fail_at.store(NEVER, Ordering::SeqCst);
    }

    /// How many requests for memory were made.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// How many requests were failed on purpose.
    pub fn injected_failures(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Counts a request and decides whether it fails.
    fn check(&self, operation: Operation, len: usize) -> Result<()> {
        let number = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let planned = self
            .fail_at
            .compare_exchange(number, NEVER, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if planned || self.failing.load(Ordering::SeqCst) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(Error::new(operation, Cause::Injected, 0, len));
        }
        Ok(())
    }
}

impl<S: fmt::Debug> fmt::Debug for FailingSource<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fail_at = self.fail_at.load(Ordering::SeqCst);
        f.debug_struct("FailingSource")
            .field("inner", &self.inner)
            .field("requests", &self.requests())
            .field("fail_at", &(fail_at != NEVER).then_some(fail_at))
            .field("failing", &self.failing.load(Ordering::SeqCst))
            .field("injected_failures", &self.injected_failures())
            .finish()
    }
}

// SAFETY: every successful call is forwarded to `S`, which keeps the promises; failures
// hand out nothing.
unsafe impl<S: PageSource> PageSource for FailingSource<S> {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }

    fn reserve(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        self.check(Operation::Reserve, len)?;
        self.inner.reserve(len, align)
    }

    fn reserve_committed(&self, len: usize, align: usize) -> Result<NonNull<u8>> {
        self.check(Operation::Reserve, len)?;
        self.inner.reserve_committed(len, align)
    }

    unsafe fn commit(&self, ptr: NonNull<u8>, len: usize) -> Result<()> {
        self.check(Operation::Commit, len)?;
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.commit(ptr, len) }
    }

    unsafe fn decommit(&self, ptr: NonNull<u8>, len: usize, mode: Decommit) -> Result<Contents> {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.decommit(ptr, len, mode) }
    }

    unsafe fn release(&self, ptr: NonNull<u8>, len: usize, align: usize) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.release(ptr, len, align) }
    }
}
