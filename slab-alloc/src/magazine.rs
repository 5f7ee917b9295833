//! Magazines and the per-thread magazine slots (Bonwick & Adams, "Magazines and Vmem:
//! Extending the Slab Allocator to Many CPUs and Arbitrary Resources", USENIX 2001).
//!
//! A *magazine* is a bounded stack of free objects of one cache. Here it is intrusive:
//! the objects are chained through a link word inside each free object (at the cache's
//! `link_offset`), and the magazine is just `(head, count)`. An empty magazine therefore
//! costs no memory, and moving a full one between a thread and the depot moves two words.
//!
//! Every thread has one [`Slot`] per cache id (see [`crate::registry`]) holding its
//! *loaded* and *previous* magazines. The first [`INLINE_SLOTS`] slots live in the
//! thread's [`ThreadMagazines`] itself (in a `thread_local!`, or with the
//! `initial-exec-tls` feature in a block mapped for the thread: [`storage`]) and are what
//! the inlined fast paths index; the slots of
//! higher ids ([`MAX_CACHE_IDS`] in all) live in *overflow chunks* of [`CHUNK_SLOTS`]
//! slots, one page each, that a thread maps from the OS the first time it uses one of
//! their ids and gives back when it exits. A cache with an overflow id still has
//! magazines: its operations miss the inlined fast path (its fast index is the
//! always-empty slot of `NO_ID`) and are served from the chunk slot by the out-of-line
//! slow path, without a lock. The paper's invariants hold: the previous magazine
//! is always either empty or full, so a thread alternating allocations and frees at a
//! magazine boundary swaps its two magazines instead of visiting the depot.
//!
//! # Safety
//! - A slot is read and written only by its thread, except (a) when the thread exits and
//!   its destructor flushes the slot, which is the thread itself, (b) when a cache is
//!   dropped and sweeps the slots of its id in every thread, and (c) when a decay pass
//!   takes the magazines of an idle thread ([`crate::registry::reclaim_threads`]).
//!   In case (b) no thread can be using the slot: the owner of a slot id is the cache
//!   being dropped, and dropping it requires that no thread still borrows it, with the
//!   happens-before edge that ended those borrows. In case (c) the thread and the pass
//!   exclude each other through [`ThreadMagazines::handshake`] (see
//!   [`crate::handshake`]). All three run under the
//!   registry lock.
//! - An overflow chunk is mapped and published (`Release`) by its thread only, while the
//!   thread is [`ACTIVE`]; it is unpublished and unmapped by the thread's exit hook, under
//!   the registry lock and after the thread has left the registry's list, so the sweeps
//!   of (b), which read the chunk pointers (`Acquire`) under the same lock, never see a
//!   chunk being unmapped.
//! - The fields are atomics, accessed with `Relaxed` ordering by the slow paths and the
//!   sweeps. The inlined fast paths of the owning thread read and write the loaded
//!   magazine, its counts and the capacity as plain memory (through `as_ptr`): atomic
//!   accesses, even relaxed ones, are barriers to the compiler (it can neither keep a
//!   value in a register across them nor build a moved-in value in place), and the plain
//!   accesses race with nothing: other threads touch a slot only in case (b), which
//!   happens after every use of the cache (hence of the slot) by any thread, and before
//!   any use of the slot by a later cache with the same id (that cache is registered
//!   under the registry lock after the sweep, and reaches threads only through
//!   synchronisation), or in case (c), which happens after the thread's last use of its
//!   magazines (its `Release` store of the in-use mark, read with `Acquire`) and before
//!   its next (its `Acquire` load of the reclaiming flag, cleared with `Release`).
//! - The objects of a magazine are free: nothing but the magazine refers to them, and the
//!   link word of each belongs to the allocator until the object is handed out again.

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

use pagekeep_mmap::{DefaultPages, PageSource};

#[cfg(feature = "reclaim-idle-threads")]
use crate::handshake;
use crate::handshake::ThreadFlags;

/// Slots inside every thread's [`ThreadMagazines`], indexed by the inlined fast paths (a
/// power of two).
///
/// Under miri the tables are much smaller: every borrow of a thread's magazines makes
/// miri visit each atomic in them, so their size sets the cost of every operation. The
/// tests then reach the overflow chunks and the id limit with fewer caches.
#[cfg(not(miri))]
pub(crate) const INLINE_SLOTS: usize = 128;
/// Slots per overflow chunk: one 4 KiB page.
#[cfg(not(miri))]
pub(crate) const CHUNK_SLOTS: usize = 128;
/// Overflow chunks a thread can map.
#[cfg(not(miri))]
pub(crate) const CHUNKS: usize = 127;
#[cfg(miri)]
pub(crate) const INLINE_SLOTS: usize = 8;
#[cfg(miri)]
pub(crate) const CHUNK_SLOTS: usize = 8;
#[cfg(miri)]
pub(crate) const CHUNKS: usize = 7;
/// The number of cache ids: caches beyond this many at once work without magazines
/// (every operation takes the cache lock). One inline id, `NO_ID`, is never given out.
pub(crate) const MAX_CACHE_IDS: usize = INLINE_SLOTS + CHUNKS * CHUNK_SLOTS;

/// A chain of free objects linked through the word at `link_offset` in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Magazine {
    /// The first object, null when empty.
    pub(crate) head: *mut u8,
    /// How many objects the chain holds.
    pub(crate) count: u32,
}

impl Magazine {
    /// A magazine with no objects.
    pub(crate) const EMPTY: Magazine = Magazine {
        head: ptr::null_mut(),
        count: 0,
    };

    /// Pushes a free object.
    ///
    /// # Safety
    /// - `object` is a free object of the cache whose link word lies at `link_offset`,
    ///   owned by the caller, and in no other chain.
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, object: NonNull<u8>, link_offset: usize) {
        // SAFETY: the link word of a free object belongs to the allocator and lies inside
        // the object (caller's obligation); it may be unaligned for no cache (link_offset
        // is a multiple of the pointer size and objects are at least pointer-aligned).
        unsafe { object.add(link_offset).cast::<*mut u8>().write(self.head) };
        self.head = object.as_ptr();
        self.count += 1;
    }

    /// Pops a free object, if any.
    ///
    /// # Safety
    /// - The chain was built with [`push`](Self::push) using the same `link_offset`, and
    ///   its objects were not touched since.
    #[inline(always)]
    pub(crate) unsafe fn pop(&mut self, link_offset: usize) -> Option<NonNull<u8>> {
        let head = NonNull::new(self.head)?;
        // SAFETY: `head` is a free object of this chain; its link word was written by
        // `push` (caller's obligation).
        self.head = unsafe { head.add(link_offset).cast::<*mut u8>().read() };
        self.count -= 1;
        Some(head)
    }
}

/// One thread's magazines for one cache id. All-zero bytes are a valid, empty slot.
///
/// The loaded magazine's object count and the slot's hit count share one word,
/// [`counts`](Self::counts): the count in the low 32 bits, the hits in the high 32. A
/// fast-path operation updates both with one add and one store
/// ([`ALLOC_HIT`] / [`FREE_HIT`]) instead of two read-modify-writes. The hits count up
/// from [`HITS_BASE`] (from 0 in a slot never reset), so that the free whose add sets the
/// word's sign bit looks at the decay clock (see `cache::HITS_PER_CLOCK`).
#[derive(Debug)]
#[repr(C, align(32))]
pub(crate) struct Slot {
    /// Head of the loaded magazine (null when empty).
    pub(crate) loaded: AtomicPtr<u8>,
    /// Objects in the loaded magazine (low 32 bits) and operations served by the
    /// magazines since the last slow path, plus [`HITS_BASE`] (high 32 bits, less
    /// `cache::HITS_AT_LOOK` at each look at the clock, which the cache counts instead;
    /// for statistics and the clock).
    pub(crate) counts: AtomicU64,
    /// How many objects a magazine of this slot holds; 0 while the thread has no
    /// magazines (not yet registered, registering, or exiting): every free then misses.
    pub(crate) capacity: AtomicU32,
    /// Objects in the previous magazine.
    pub(crate) previous_count: AtomicU32,
    /// Head of the previous magazine: either empty or full (`capacity` objects).
    pub(crate) previous: AtomicPtr<u8>,
}

/// Bytes of a [`Slot`]: the inline slot of fast index `id` starts `id * SLOT_BYTES`
/// bytes into the slot table (see [`ThreadMagazines::slot_at_offset`]).
pub(crate) const SLOT_BYTES: u32 = size_of::<Slot>() as u32;

/// Added to [`Slot::counts`] by a fast-path allocation: one object fewer in the loaded
/// magazine (which holds at least one, so the low half borrows nothing from the high
/// half: the carry out of the low half adds the hit), one hit more.
pub(crate) const ALLOC_HIT: u64 = (1 << 32) - 1;
/// Added to [`Slot::counts`] by a fast-path free: one object and one hit more (the
/// loaded count stays below the capacity, a `u32`, so the low half does not overflow).
pub(crate) const FREE_HIT: u64 = (1 << 32) + 1;

/// The high half of [`Slot::counts`] after its hits are taken: 2^31 less
/// `cache::HITS_PER_CLOCK`, so that the hits reach the word's sign bit after that many.
pub(crate) const HITS_BASE: u32 = (1 << 31) - crate::cache::HITS_PER_CLOCK;

/// The loaded magazine's object count in a [`Slot::counts`] word.
#[inline(always)]
pub(crate) const fn loaded_count(counts: u64) -> u32 {
    counts as u32
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            loaded: AtomicPtr::new(ptr::null_mut()),
            counts: AtomicU64::new(0),
            capacity: AtomicU32::new(0),
            previous_count: AtomicU32::new(0),
            previous: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The head of the loaded magazine, for the owning thread's fast paths.
    ///
    /// # Safety
    /// - The calling thread owns the slot (module docs, "Safety": plain accesses by the
    ///   owner race with nothing).
    #[inline(always)]
    pub(crate) unsafe fn owner_loaded(&self) -> *mut u8 {
        // SAFETY: the caller's obligation.
        unsafe { self.loaded.as_ptr().read() }
    }

    /// Sets the head of the loaded magazine, for the owning thread's fast paths.
    ///
    /// # Safety
    /// - As [`owner_loaded`](Self::owner_loaded).
    #[inline(always)]
    pub(crate) unsafe fn owner_set_loaded(&self, head: *mut u8) {
        // SAFETY: the caller's obligation.
        unsafe { self.loaded.as_ptr().write(head) }
    }

    /// The [`counts`](Self::counts) word, for the owning thread's fast paths.
    ///
    /// # Safety
    /// - As [`owner_loaded`](Self::owner_loaded).
    #[inline(always)]
    pub(crate) unsafe fn owner_counts(&self) -> u64 {
        // SAFETY: the caller's obligation.
        unsafe { self.counts.as_ptr().read() }
    }

    /// Sets the [`counts`](Self::counts) word, for the owning thread's fast paths.
    ///
    /// # Safety
    /// - As [`owner_loaded`](Self::owner_loaded).
    #[inline(always)]
    pub(crate) unsafe fn owner_set_counts(&self, counts: u64) {
        // SAFETY: the caller's obligation.
        unsafe { self.counts.as_ptr().write(counts) }
    }

    /// The magazine capacity, for the owning thread's fast paths.
    ///
    /// # Safety
    /// - As [`owner_loaded`](Self::owner_loaded).
    #[inline(always)]
    pub(crate) unsafe fn owner_capacity(&self) -> u32 {
        // SAFETY: the caller's obligation.
        unsafe { self.capacity.as_ptr().read() }
    }

    /// The loaded magazine.
    #[inline(always)]
    pub(crate) fn loaded(&self) -> Magazine {
        Magazine {
            head: self.loaded.load(Relaxed),
            count: loaded_count(self.counts.load(Relaxed)),
        }
    }

    /// Replaces the loaded magazine (the hit count is kept).
    #[inline(always)]
    pub(crate) fn set_loaded(&self, magazine: Magazine) {
        self.loaded.store(magazine.head, Relaxed);
        let hits = self.counts.load(Relaxed) & !u64::from(u32::MAX);
        self.counts.store(hits | u64::from(magazine.count), Relaxed);
    }

    /// The previous magazine.
    #[inline]
    pub(crate) fn previous(&self) -> Magazine {
        Magazine {
            head: self.previous.load(Relaxed),
            count: self.previous_count.load(Relaxed),
        }
    }

    /// Replaces the previous magazine.
    #[inline]
    pub(crate) fn set_previous(&self, magazine: Magazine) {
        self.previous.store(magazine.head, Relaxed);
        self.previous_count.store(magazine.count, Relaxed);
    }

    /// Empties the slot and turns its magazines off; returns what it held.
    pub(crate) fn take_all(&self) -> (Magazine, Magazine) {
        self.capacity.store(0, Relaxed);
        let taken = (self.loaded(), self.previous());
        self.set_loaded(Magazine::EMPTY);
        self.set_previous(Magazine::EMPTY);
        taken
    }

    /// Whether every word of the slot is zero, as in fresh magazines: the slot of a cache
    /// the thread never used.
    #[inline]
    pub(crate) fn is_clear(&self) -> bool {
        // One test of the words or-ed together, not a branch for each: the exit hook
        // asks the slot of every id given out, most of them clear.
        let words = self.loaded.load(Relaxed).addr() as u64
            | self.counts.load(Relaxed)
            | u64::from(self.capacity.load(Relaxed))
            | u64::from(self.previous_count.load(Relaxed))
            | self.previous.load(Relaxed).addr() as u64;
        words == 0
    }

    /// Counts an operation served by the magazines.
    #[inline(always)]
    pub(crate) fn count_hit(&self) {
        self.counts
            .store(self.counts.load(Relaxed).wrapping_add(1 << 32), Relaxed);
    }

    /// Takes the hit count (reset to [`HITS_BASE`]).
    #[inline]
    pub(crate) fn take_hits(&self) -> u32 {
        let counts = self.counts.load(Relaxed);
        self.counts.store(
            u64::from(HITS_BASE) << 32 | u64::from(loaded_count(counts)),
            Relaxed,
        );
        hits_since_reset((counts >> 32) as u32)
    }
}

/// The hits in the high half `high` of a [`Slot::counts`] word: counted from
/// [`HITS_BASE`] once the slot was reset, from 0 in a slot never reset (whose first
/// operations miss and reset it long before its hits could reach `HITS_BASE`).
fn hits_since_reset(high: u32) -> u32 {
    high.checked_sub(HITS_BASE).unwrap_or(high)
}

/// The thread has not used any magazine yet.
pub(crate) const UNREGISTERED: u8 = 0;
/// The thread is registering its exit hook; allocations meanwhile bypass the magazines.
pub(crate) const REGISTERING: u8 = 1;
/// The thread's magazines are in use.
pub(crate) const ACTIVE: u8 = 2;
/// The thread has exited (its destructor ran) or could not register: no magazines.
pub(crate) const RETIRED: u8 = 3;

/// A page of slots for the cache ids above the inline ones.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SlotChunk {
    slots: [Slot; CHUNK_SLOTS],
}

/// The magazines of one thread: one slot per cache id, its registration state, and its
/// links in the registry's list of threads.
#[derive(Debug)]
pub(crate) struct ThreadMagazines {
    /// Indexed by cache id (the fast index of every cache).
    pub(crate) slots: [Slot; INLINE_SLOTS],
    /// Overflow chunks: chunk `c` holds the slots of ids
    /// `INLINE_SLOTS + c * CHUNK_SLOTS ..`; null until the thread first uses one of them.
    chunks: [AtomicPtr<SlotChunk>; CHUNKS],
    /// [`UNREGISTERED`], [`REGISTERING`], [`ACTIVE`] or [`RETIRED`]; written by the
    /// thread only.
    pub(crate) state: AtomicU8,
    /// Next thread in the registry (registry lock).
    pub(crate) next: AtomicPtr<ThreadMagazines>,
    /// Previous thread in the registry (registry lock).
    pub(crate) prev: AtomicPtr<ThreadMagazines>,
    /// The thread's in-use mark (set inside [`with_magazines`]) and the reclaiming flag
    /// a decay pass sets, under the registry lock, while it may be taking the thread's
    /// magazines (see [`crate::handshake`]).
    pub(crate) handshake: ThreadFlags,
    /// What [`fingerprint`](Self::fingerprint) was at the previous decay pass (registry
    /// lock): the same value now means that the thread made no magazine operation since.
    pub(crate) idle_mark: AtomicU64,
    /// Windows: the id (`GetCurrentThreadId`) of the thread that owns these magazines,
    /// set by [`crate::registry::activate`] before the exit hook is registered. The
    /// fiber-local callback runs on fiber deletion too, possibly on another thread: it
    /// acts only on the owner (see [`crate::registry::thread_exit`]).
    #[cfg(windows)]
    pub(crate) owner_thread: AtomicU32,
}

impl ThreadMagazines {
    const fn new() -> Self {
        Self::with_state(UNREGISTERED)
    }

    /// Magazines of a thread that works without them: empty, without room, [`RETIRED`].
    #[cfg_attr(not(all(pagekeep_initial_exec_tls, not(miri))), allow(dead_code))]
    const fn retired() -> Self {
        Self::with_state(RETIRED)
    }

    const fn with_state(state: u8) -> Self {
        ThreadMagazines {
            slots: [const { Slot::new() }; INLINE_SLOTS],
            chunks: [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS],
            state: AtomicU8::new(state),
            next: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
            handshake: ThreadFlags::new(),
            idle_mark: AtomicU64::new(0),
            #[cfg(windows)]
            owner_thread: AtomicU32::new(0),
        }
    }

    /// The inline slot of fast index `id` (masked, so no bounds check is needed).
    #[inline(always)]
    pub(crate) fn slot(&self, id: u32) -> &Slot {
        &self.slots[id as usize & (INLINE_SLOTS - 1)]
    }

    /// The inline slot at byte offset `offset` of the slot table: that of fast index
    /// `offset / SLOT_BYTES` (masked as in [`slot`](Self::slot)). For a caller that keeps
    /// slot offsets instead of fast indices: its fast path then finds the slot with one
    /// mask, not a mask and a scaling.
    #[inline(always)]
    pub(crate) fn slot_at_offset(&self, offset: u32) -> &Slot {
        // The offset of a slot's start inside the table: a multiple of `SLOT_BYTES`
        // (a power of two) below `INLINE_SLOTS * SLOT_BYTES`.
        const MASK: u32 = (INLINE_SLOTS as u32 - 1) * SLOT_BYTES;
        const { assert!(SLOT_BYTES.is_power_of_two()) };
        // SAFETY: the masked offset is that of the start of one of the table's slots
        // (see `MASK`), so the pointer is in bounds, aligned, and borrowed from `self`.
        unsafe { &*self.slots.as_ptr().byte_add((offset & MASK) as usize) }
    }

    /// The chunk and index within it of an overflow id.
    fn chunk_index(id: u32) -> Option<(usize, usize)> {
        let above = (id as usize).checked_sub(INLINE_SLOTS)?;
        let chunk = above / CHUNK_SLOTS;
        (chunk < CHUNKS).then_some((chunk, above % CHUNK_SLOTS))
    }

    /// The slot of cache `id`, inline or in an overflow chunk; `None` if its chunk was
    /// never mapped (then the slot is empty) or `id` is out of range.
    pub(crate) fn existing_slot(&self, id: u32) -> Option<&Slot> {
        if (id as usize) < INLINE_SLOTS {
            return Some(&self.slots[id as usize]);
        }
        let (chunk, index) = Self::chunk_index(id)?;
        let chunk = NonNull::new(self.chunks[chunk].load(Acquire))?;
        // SAFETY: published chunks stay mapped until the exit hook unpublishes them
        // (module docs); only the thread itself or the registry-lock holder calls this.
        Some(unsafe { &(*chunk.as_ptr()).slots[index] })
    }

    /// The calling thread's slot of cache `id` ([`existing_slot`](Self::existing_slot)),
    /// for the slow paths that take what it holds: `None` unless the magazines are in use
    /// ([`ACTIVE`]). Those of a thread in any other state hold nothing, and may be a
    /// stand-in that other threads share ([`storage`]), which nothing may write.
    pub(crate) fn own_slot(&self, id: u32) -> Option<&Slot> {
        if self.state.load(Relaxed) != ACTIVE {
            return None;
        }
        self.existing_slot(id)
    }

    /// The slot of cache `id`, mapping its overflow chunk if needed; `None` if the page
    /// cannot be mapped or `id` is out of range.
    ///
    /// Only the owning thread calls this, while it is [`ACTIVE`].
    #[cold]
    pub(crate) fn slot_or_map(&self, id: u32) -> Option<&Slot> {
        if let Some(slot) = self.existing_slot(id) {
            return Some(slot);
        }
        let (chunk, _) = Self::chunk_index(id)?;
        debug_assert_eq!(self.state.load(Relaxed), ACTIVE);
        let page = DefaultPages::default()
            .reserve_committed(size_of::<SlotChunk>(), align_of::<SlotChunk>())
            .ok()?;
        // Zeroed memory is a chunk of empty slots (`Slot` docs); publish it.
        self.chunks[chunk].store(page.cast::<SlotChunk>().as_ptr(), Release);
        self.existing_slot(id)
    }

    /// Calls `f` on every slot of the thread with its cache id.
    pub(crate) fn for_each_slot(&self, f: impl FnMut(u32, &Slot)) {
        self.for_each_slot_below(MAX_CACHE_IDS, f);
    }

    /// Calls `f` on every slot of the thread whose cache id is below `bound` (and on the
    /// rest of the overflow chunk that holds the last of them), with its id.
    pub(crate) fn for_each_slot_below(&self, bound: usize, mut f: impl FnMut(u32, &Slot)) {
        for (id, slot) in self.slots.iter().enumerate().take(bound) {
            f(id as u32, slot);
        }
        for (chunk, pointer) in self.chunks.iter().enumerate().take(chunks_below(bound)) {
            let Some(page) = NonNull::new(pointer.load(Acquire)) else {
                continue;
            };
            // SAFETY: a published chunk, mapped until unpublished (module docs).
            let slots = unsafe { &(*page.as_ptr()).slots };
            for (index, slot) in slots.iter().enumerate() {
                f((INLINE_SLOTS + chunk * CHUNK_SLOTS + index) as u32, slot);
            }
        }
    }

    /// A value that changes with every operation of the thread's magazines: the slots'
    /// heads and counts (whose high halves count the fast paths' hits), mixed. Read by a
    /// decay pass while the thread is kept out of its magazines.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut mixed = 0u64;
        self.for_each_slot(|_, slot| {
            for word in [
                slot.loaded.load(Relaxed).addr() as u64,
                slot.counts.load(Relaxed),
                slot.previous.load(Relaxed).addr() as u64,
                u64::from(slot.previous_count.load(Relaxed)),
            ] {
                mixed = (mixed.rotate_left(7) ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
        });
        mixed
    }

    /// Unpublishes and unmaps every overflow chunk of the ids below `bound`, which is
    /// above every id the thread used (a chunk past it would stay mapped, lost).
    ///
    /// # Safety
    /// - Called by the exit hook of the owning thread, after its slots were emptied and
    ///   with the thread no longer reachable from the registry (no sweep can read the
    ///   chunks any more); the thread is no longer [`ACTIVE`], so it maps no new chunk.
    pub(crate) unsafe fn unmap_chunks(&self, bound: usize) {
        for pointer in self.chunks.iter().take(chunks_below(bound)) {
            let page = pointer.swap(ptr::null_mut(), Acquire);
            if let Some(page) = NonNull::new(page) {
                // SAFETY: mapped by `slot_or_map` from this source with this size and
                // alignment; nobody refers to it any more (caller).
                let _ = unsafe {
                    DefaultPages::default().release(
                        page.cast(),
                        size_of::<SlotChunk>(),
                        align_of::<SlotChunk>(),
                    )
                };
            }
        }
    }
}

/// How many overflow chunks hold the slots of the ids below `bound`.
fn chunks_below(bound: usize) -> usize {
    bound.saturating_sub(INLINE_SLOTS).div_ceil(CHUNK_SLOTS)
}

// Where each thread's magazines live (see each module's docs). Both give the calling
// thread's current magazines to a closure, and the registry the ones to register.
#[cfg(all(pagekeep_initial_exec_tls, not(miri)))]
#[path = "magazine/initial_exec_storage.rs"]
pub(crate) mod storage;
#[cfg(not(all(pagekeep_initial_exec_tls, not(miri))))]
#[path = "magazine/thread_local_storage.rs"]
pub(crate) mod storage;

/// Runs `f` on the calling thread's magazines, for the slow paths. With the
/// `reclaim-idle-threads` feature, around `f` the thread holds its magazines against a
/// decay pass that would take them, waiting if one holds them now
/// ([`handshake::enter`], [`handshake::leave`]).
#[inline(always)]
pub(crate) fn with_magazines<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> R {
    #[cfg(not(feature = "reclaim-idle-threads"))]
    {
        storage::with_current(f)
    }
    #[cfg(feature = "reclaim-idle-threads")]
    storage::with_current(|magazines| {
        let outer = handshake::enter(&magazines.handshake);
        let result = f(magazines);
        handshake::leave(&magazines.handshake, outer);
        result
    })
}

/// [`with_magazines`] for the inlined fast paths: `None`, without running `f`, when the
/// thread's magazines cannot serve a fast path now: with the `reclaim-idle-threads`
/// feature, while a decay pass holds them (the caller then takes its slow path, which
/// waits), and with `initial-exec-tls`, before the thread registered.
/// Costs two stores, a load, a compiler fence and a branch ([`handshake::try_enter_fast`]).
/// `f` must not allocate or free (a fast path cannot nest in another).
#[inline(always)]
pub(crate) fn try_with_magazines<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> Option<R> {
    #[cfg(not(feature = "reclaim-idle-threads"))]
    {
        storage::try_with_current(f)
    }
    #[cfg(feature = "reclaim-idle-threads")]
    storage::try_with_current(|magazines| {
        if !handshake::try_enter_fast(&magazines.handshake) {
            return None;
        }
        let result = f(magazines);
        handshake::leave_fast(&magazines.handshake);
        Some(result)
    })
    .flatten()
}

/// Registers the calling thread's magazines ([`crate::registry::activate`]) if it has
/// not yet, before a slow path that needs them takes them ([`with_magazines`]). Outside
/// the handshake with decay passes, which only take magazines that are listed.
#[inline]
pub(crate) fn register_thread() {
    storage::with_current(|magazines| {
        if magazines.state.load(Relaxed) == UNREGISTERED {
            crate::registry::activate(magazines);
        }
    });
}

/// The calling thread's magazines, as an address (to tell them apart from others').
pub(crate) fn own_magazines() -> *const ThreadMagazines {
    storage::with_current(ptr::from_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_offset_names_the_slot_of_its_fast_index_and_any_offset_stays_in_the_table() {
        let magazines = ThreadMagazines::new();
        for id in 0..INLINE_SLOTS as u32 {
            assert!(ptr::eq(
                magazines.slot_at_offset(id * SLOT_BYTES),
                magazines.slot(id)
            ));
        }
        // Offsets past the table or inside a slot are masked to a slot's start, as ids
        // past the inline slots are masked.
        for (offset, id) in [
            (INLINE_SLOTS as u32 * SLOT_BYTES, 0),
            (3 * SLOT_BYTES + 5, 3),
            (u32::MAX, INLINE_SLOTS as u32 - 1),
        ] {
            assert!(
                ptr::eq(magazines.slot_at_offset(offset), magazines.slot(id)),
                "{offset}"
            );
        }
    }

    /// The exit hook's bound on the chunks it looks at (and unmaps) takes every chunk
    /// that holds an id below the bound, and no other.
    #[test]
    fn the_chunks_below_a_bound_are_those_that_hold_its_ids() {
        // The chunks that hold the ids below `bound`, counted as `bound` goes up.
        let mut needed = 0;
        for bound in 0..=MAX_CACHE_IDS {
            assert_eq!(chunks_below(bound), needed, "bound {bound}");
            if let Some((chunk, _)) = ThreadMagazines::chunk_index(bound as u32) {
                needed = needed.max(chunk + 1);
            }
        }
        assert_eq!(chunks_below(MAX_CACHE_IDS), CHUNKS);
    }

    /// A slot is clear only while every word of it is zero: what `take_all` leaves of a
    /// used slot (its hits) is not clear.
    #[test]
    fn a_slot_is_clear_only_while_every_word_is_zero() {
        let object = ptr::without_provenance_mut(0x1000);
        for set in [
            |slot: &Slot| {
                slot.loaded
                    .store(ptr::without_provenance_mut(0x1000), Relaxed)
            },
            |slot: &Slot| slot.counts.store(1 << 32, Relaxed),
            |slot: &Slot| slot.capacity.store(1, Relaxed),
            |slot: &Slot| slot.previous_count.store(1, Relaxed),
            |slot: &Slot| {
                slot.previous
                    .store(ptr::without_provenance_mut(0x1000), Relaxed)
            },
        ] {
            let slot = Slot::new();
            assert!(slot.is_clear());
            set(&slot);
            assert!(!slot.is_clear());
        }
        let slot = Slot::new();
        slot.set_loaded(Magazine {
            head: object,
            count: 1,
        });
        slot.count_hit();
        let (loaded, _) = slot.take_all();
        assert_eq!(
            loaded,
            Magazine {
                head: object,
                count: 1
            }
        );
        assert!(!slot.is_clear());
    }
}
