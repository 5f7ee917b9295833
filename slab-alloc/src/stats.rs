//! Statistics of caches and heaps.

/// A snapshot of one cache's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes per object slot.
    pub object_size: usize,
    /// Objects per slab.
    pub objects_per_slab: usize,
    /// Objects handed out and not freed. Objects that other threads freed into their own
    /// magazines still count until those magazines go back to the depot (at the
    /// thread's next depot exchange, its exit, or its `flush_thread_cache`).
    pub objects_live: usize,
    /// Free objects held in the depot's full magazines.
    pub objects_in_depot: usize,
    /// Full magazines in the depot.
    pub magazines_in_depot: usize,
    /// Slabs with some objects out.
    pub slabs_partial: usize,
    /// Slabs with every object out.
    pub slabs_full: usize,
    /// Slabs with no object out, kept for reuse.
    pub slabs_empty: usize,
    /// Bytes of slabs held from the page source.
    pub bytes_committed: usize,
    /// Slabs obtained from the source so far.
    pub slabs_created: u64,
    /// Slabs given back to the source so far.
    pub slabs_released: u64,
    /// Allocations and frees served by a thread's magazines without a lock (counted
    /// when the thread next takes the slow path).
    pub magazine_hits: u64,
    /// Allocations and frees that went to the depot or the slabs.
    pub magazine_misses: u64,
    /// Objects per magazine now (it grows when the cache lock is contended).
    pub magazine_capacity: u32,
    /// Times the magazine size grew.
    pub magazine_resizes: u32,
    /// Locked operations (depot exchanges, slab operations) that found the cache lock
    /// held by another thread.
    pub lock_contentions: u64,
}

impl CacheStats {
    /// Fraction of operations served by magazines (0 when nothing happened).
    pub fn magazine_hit_rate(&self) -> f64 {
        let total = self.magazine_hits + self.magazine_misses;
        if total == 0 {
            0.0
        } else {
            self.magazine_hits as f64 / total as f64
        }
    }

    /// Adds another cache's figures to these (`object_size` and `objects_per_slab` are
    /// kept from `self`, `magazine_capacity` is the larger of the two).
    pub fn accumulate(&mut self, other: &CacheStats) {
        self.objects_live += other.objects_live;
        self.objects_in_depot += other.objects_in_depot;
        self.magazines_in_depot += other.magazines_in_depot;
        self.slabs_partial += other.slabs_partial;
        self.slabs_full += other.slabs_full;
        self.slabs_empty += other.slabs_empty;
        self.bytes_committed += other.bytes_committed;
        self.slabs_created += other.slabs_created;
        self.slabs_released += other.slabs_released;
        self.magazine_hits += other.magazine_hits;
        self.magazine_misses += other.magazine_misses;
        self.magazine_capacity = self.magazine_capacity.max(other.magazine_capacity);
        self.magazine_resizes += other.magazine_resizes;
        self.lock_contentions += other.lock_contentions;
    }
}

/// A snapshot of a [`SlabHeap`](crate::SlabHeap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// The small classes summed (`object_size` is 0).
    pub small: CacheStats,
    /// Large blocks (served by `MmapAlloc`) live.
    pub large_blocks: usize,
    /// Bytes of those large blocks: their usable sizes (whole pages; 2 MiB frames from
    /// 2 MiB on), so freeing a block with any size between its request and its usable
    /// size, as `Allocator` callers may, takes off what its allocation added.
    pub large_bytes: usize,
    /// Bytes of freed large blocks kept mapped for reuse (at most 128 MiB, each for at
    /// most half a second unused; [`trim`](crate::SlabHeap::trim) releases them).
    pub large_bytes_kept: usize,
}
