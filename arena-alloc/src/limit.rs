//! [`Arena::set_allocation_limit`]: the allocation limit, changed at run time.

use pagekeep_mmap::PageSource;

use crate::arena::Arena;

impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    /// The allocation limit: the most bytes (padding included) the arena hands out
    /// between resets, or `None` when there is none.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaConfig};
    ///
    /// assert_eq!(Arena::new().allocation_limit(), None);
    /// let arena = Arena::with_config(ArenaConfig::new().limit_bytes(4096));
    /// assert_eq!(arena.allocation_limit(), Some(4096));
    /// ```
    pub fn allocation_limit(&self) -> Option<usize> {
        match self.config().limit() {
            usize::MAX => None,
            bytes => Some(bytes),
        }
    }

    /// Changes the allocation limit (`None`: no limit; `Some(usize::MAX)` is the same).
    /// Requests that would take the total past it fail: `try_*` return an error, the
    /// other methods panic.
    ///
    /// A limit below what is already allocated keeps those allocations, and the total
    /// never grows again past what it was when the limit was set: every allocation fails,
    /// except that bytes given back by freeing or shrinking the latest allocation may be
    /// taken again, until a [`reset`](Arena::reset) or a [`rewind`](Arena::rewind) brings
    /// the total under the limit, which then holds as usual.
    ///
    /// Takes `&mut self`: no allocation is borrowed while the limit changes, and a pool
    /// lease (which gives `&Arena`) cannot leave a limit behind for the next request.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let mut arena = Arena::new();
    /// arena.alloc_slice_fill_copy(1000, 0u8);
    /// arena.set_allocation_limit(Some(500)); // below what is allocated
    /// assert!(arena.try_alloc(1u8).is_err());
    /// arena.reset();
    /// assert!(arena.try_alloc_slice_fill_copy(500, 1u8).is_ok());
    /// assert!(arena.try_alloc(1u8).is_err());
    /// arena.set_allocation_limit(None);
    /// assert!(arena.try_alloc(1u8).is_ok());
    /// ```
    pub fn set_allocation_limit(&mut self, limit: Option<usize>) {
        self.set_limit_bytes(limit.unwrap_or(usize::MAX));
    }
}
