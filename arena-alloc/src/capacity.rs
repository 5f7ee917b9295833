//! [`Arena::with_capacity`]: an arena whose first chunk is committed up front.

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::{DefaultPages, PageSource};

use crate::arena::Arena;
use crate::config::ArenaConfig;

impl Arena {
    /// An arena over the default page source whose first chunk has room for `bytes` of
    /// allocations (padding included) committed at once, so they need no further call to
    /// the page source. The chunk reserves at least the default chunk size of address
    /// space, as any chunk does.
    ///
    /// # Panics
    /// When [`try_with_capacity`](Arena::try_with_capacity) would fail.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// let arena = Arena::with_capacity(64 << 10);
    /// assert!(arena.stats().committed_bytes >= 64 << 10);
    /// let committed = arena.stats().committed_bytes;
    /// let buffer = arena.alloc_slice_fill_copy(64 << 10, 0u8);
    /// assert_eq!(buffer.len(), 64 << 10);
    /// assert_eq!(arena.stats().committed_bytes, committed); // nothing more was committed
    /// ```
    pub fn with_capacity(bytes: usize) -> Self {
        match Arena::try_with_capacity(bytes) {
            Ok(arena) => arena,
            Err(AllocError) => capacity_failed(bytes),
        }
    }

    /// [`with_capacity`](Arena::with_capacity) that reports failure.
    ///
    /// # Errors
    /// `bytes` (with the chunk header and alignment padding) is more than any allocation
    /// can be (`isize::MAX`), or the page source cannot reserve and commit that much.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::Arena;
    ///
    /// assert!(Arena::try_with_capacity(usize::MAX).is_err());
    /// let arena = Arena::try_with_capacity(4096).expect("a page");
    /// assert_eq!(*arena.alloc(7u32), 7);
    /// ```
    pub fn try_with_capacity(bytes: usize) -> Result<Self, AllocError> {
        Arena::try_with_source_and_capacity(DefaultPages::default(), ArenaConfig::new(), bytes)
    }
}

impl<S: PageSource, const MIN_ALIGN: usize> Arena<S, MIN_ALIGN> {
    /// An arena over `source` whose first chunk has room for `bytes` of allocations
    /// committed at once (see [`with_capacity`](Arena::with_capacity)). With
    /// `bytes == 0` the chunk is still made, with one page committed.
    ///
    /// # Errors
    /// As [`try_with_capacity`](Arena::try_with_capacity); nothing is kept reserved.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_arena::{Arena, ArenaConfig};
    /// use pagekeep_mmap::HeapPages;
    ///
    /// let config = ArenaConfig::new().limit_bytes(1 << 20);
    /// let arena: Arena<HeapPages, 16> =
    ///     Arena::try_with_source_and_capacity(HeapPages, config, 8192).expect("two pages");
    /// assert!(arena.stats().committed_bytes >= 8192);
    /// assert_eq!(arena.stats().chunks, 1);
    /// ```
    pub fn try_with_source_and_capacity(
        source: S,
        config: ArenaConfig,
        bytes: usize,
    ) -> Result<Self, AllocError> {
        let arena = Arena::with_source(source, config);
        arena.try_start_chunk(bytes)?;
        Ok(arena)
    }
}

/// The panic of [`Arena::with_capacity`].
#[cold]
#[inline(never)]
#[track_caller]
fn capacity_failed(bytes: usize) -> ! {
    panic!("arena with a capacity of {bytes} bytes: the page source refused the chunk")
}
