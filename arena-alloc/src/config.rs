//! [`ArenaConfig`]: the sizes and policies of an [`Arena`](crate::Arena).

use pagekeep_mmap::Decommit;

/// Sizes and policies of an [`Arena`](crate::Arena), built with `const` setters.
///
/// Defaults: chunks reserve 64 MiB of address space each (256 KiB under miri) and commit
/// 64 KiB at a time, doubling; requests above a quarter of a chunk get a dedicated chunk;
/// `reset` keeps 256 KiB warm and gives the rest back lazily (`MADV_FREE`); no limit.
///
/// # Examples
///
/// ```
/// use pagekeep_arena::{Arena, ArenaConfig};
///
/// let config = ArenaConfig::new().limit_bytes(1 << 20).warm_bytes(64 << 10);
/// let arena = Arena::with_config(config);
/// assert!(arena.try_alloc_slice_fill_with(2 << 20, |_| 0u8).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaConfig {
    pub(crate) chunk_bytes: usize,
    pub(crate) commit_step_bytes: usize,
    pub(crate) oversize_bytes: usize,
    pub(crate) warm_bytes: usize,
    pub(crate) limit_bytes: usize,
    pub(crate) decommit: Decommit,
}

/// Address space reserved per chunk by default.
const DEFAULT_CHUNK_BYTES: usize = if cfg!(miri) { 256 << 10 } else { 64 << 20 };

impl ArenaConfig {
    /// The default configuration.
    pub const fn new() -> Self {
        ArenaConfig {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            commit_step_bytes: 64 << 10,
            oversize_bytes: DEFAULT_CHUNK_BYTES / 4,
            warm_bytes: 256 << 10,
            limit_bytes: usize::MAX,
            decommit: Decommit::Lazy,
        }
    }

    /// Address space reserved for each ordinary chunk. It takes no memory until used; the
    /// most recent allocation can grow in place up to the end of its chunk.
    pub const fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes;
        self
    }

    /// The first commit of a chunk; later commits double what the chunk has committed.
    pub const fn commit_step_bytes(mut self, bytes: usize) -> Self {
        self.commit_step_bytes = bytes;
        self
    }

    /// Requests larger than this that do not fit in what the current chunk has committed
    /// get a chunk of their own (released at the next reset) instead of growing the
    /// current chunk.
    pub const fn oversize_bytes(mut self, bytes: usize) -> Self {
        self.oversize_bytes = bytes;
        self
    }

    /// Bytes at the start of the kept chunk that `reset` always leaves committed and
    /// untouched (it also keeps what the previous cycle used; see
    /// [`Arena::reset`](crate::Arena::reset)).
    pub const fn warm_bytes(mut self, bytes: usize) -> Self {
        self.warm_bytes = bytes;
        self
    }

    /// The most bytes the arena hands out between resets (padding included). Requests
    /// beyond it fail: `try_*` return an error, the other methods panic.
    pub const fn limit_bytes(mut self, bytes: usize) -> Self {
        self.limit_bytes = bytes;
        self
    }

    /// How `reset` gives back memory above the warm watermark.
    pub const fn decommit(mut self, mode: Decommit) -> Self {
        self.decommit = mode;
        self
    }

    /// The allocation limit in bytes (`usize::MAX`: none).
    pub const fn limit(&self) -> usize {
        self.limit_bytes
    }

    /// The warm watermark in bytes.
    pub const fn warm(&self) -> usize {
        self.warm_bytes
    }
}

impl Default for ArenaConfig {
    fn default() -> Self {
        ArenaConfig::new()
    }
}
