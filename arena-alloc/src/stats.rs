//! Statistics of arenas and pools.

/// A snapshot of an [`Arena`](crate::Arena)'s memory use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArenaStats {
    /// Bytes handed out since the last reset, padding included.
    pub allocated_bytes: usize,
    /// The most bytes handed out at once since the arena was made.
    pub peak_bytes: usize,
    /// Ordinary chunks held.
    pub chunks: usize,
    /// Dedicated chunks of oversize requests held.
    pub oversize_chunks: usize,
    /// Address space reserved by all chunks.
    pub reserved_bytes: usize,
    /// Bytes committed read-write by all chunks.
    pub committed_bytes: usize,
    /// The allocation limit (`usize::MAX`: none).
    pub limit_bytes: usize,
}

/// A snapshot of an [`ArenaPool`](crate::ArenaPool). Counts are read one after the other
/// without a lock, so under concurrent use they may not add up to `arenas`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Arenas in the pool.
    pub arenas: usize,
    /// Arenas ready to be acquired.
    pub free: usize,
    /// Arenas held by a lease.
    pub in_use: usize,
    /// Arenas released while allocations from them were still live, waiting for the
    /// last one to be freed.
    pub quarantined: usize,
    /// Tasks or threads waiting for an arena.
    pub waiting: usize,
    /// Bytes committed across the pool's arenas.
    pub committed_bytes: usize,
}
