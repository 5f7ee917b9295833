//! [`SlabCache`]: an untyped object cache for one (size, align), and [`CacheCore`], the
//! engine every cache of this crate runs on (a [`SlabCache`], each class of a
//! [`SlabHeap`](crate::SlabHeap), an [`ObjectCache`](crate::ObjectCache)).
//!
//! Three layers, as in Bonwick & Adams (2001):
//! 1. per-thread magazines ([`crate::magazine`]): the fast path, no lock, no atomic
//!    read-modify-write, no write to memory another thread uses;
//! 2. the depot of full magazines ([`crate::depot`]), under the cache lock;
//! 3. the slab layer ([`crate::slab`]): partial, full and empty slab lists, under the
//!    same lock.
//!
//! Memory goes back by the working-set rule of the paper (section 3.3): an epoch lasts
//! at least [`EPOCH_TIME`] and [`EPOCH_EVENTS`] locked operations; at its end, the full
//! magazines and the empty slabs that stayed unused during the whole epoch (the epoch's
//! minimum) are surplus, and are returned to the slabs and released to the page source,
//! keeping `max_empty_slabs` empty slabs (and [`DEPOT_FLOOR`] magazines) if the epoch
//! drew on what was kept, none if it never did. That is the hysteresis: an
//! allocation/free ping-pong at any bound makes no source call, since what it uses is in
//! use within every epoch. A hard cap (the bytes of `8 * max_empty_slabs + 8` empty slabs of
//! [`SLAB_BYTES`], trimmed to half) bounds what a burst can leave behind between
//! epochs.
//!
//! A cache's own operations end its epochs only while it is busy, so memory also goes
//! back by **decay**, driven by the operations of any cache of a heap (the classes of a
//! [`SlabHeap`](crate::SlabHeap) are siblings; a lone cache is its own): every
//! [`CLOCK_EVENTS`] locked operations a cache reads the clock, and once per
//! [`DECAY_INTERVAL`] the first to see it due runs a *decay pass* over all the siblings
//! after its operation, outside any lock. The pass skips a sibling whose lock is held (it
//! is busy, and runs its own epochs); a sibling that made no locked operation since the
//! previous pass is *idle*: the calling thread's magazines of it, its depot and all its
//! empty slabs go back at once; any other sibling whose epoch is older than
//! [`EPOCH_TIME`] ends it by the working-set rule. A peak freed in one class is
//! therefore returned within about two intervals while the program works in any class,
//! with no system call on the free paths. A background thread
//! ([`SlabHeap::start_decay_thread`](crate::SlabHeap::start_decay_thread)) runs the
//! same pass for a program that makes no operation at all.
//!
//! Magazines grow under contention, as in the paper (section 3.6): the lock is taken
//! with one compare-and-swap and an attempt that finds it held counts as a contention;
//! every [`CONTENTION_WINDOW`] locked operations, if at least [`CONTENTION_THRESHOLD`] of
//! them met contention, the cache's magazine size doubles, up to its bound
//! (`max_magazine_capacity`). Bigger magazines mean proportionally fewer depot
//! exchanges per object. A thread's own magazines start at a page's worth of objects and
//! double at each of its depot exchanges up to the cache's size (see
//! `CacheCore::thread_capacity_after_miss`); the size never shrinks (a magazine holds at
//! most the bound's worth of objects per thread).
//!
//! # Safety
//! - A core lives at a fixed address (a block of its page source) from creation to
//!   destruction and is registered with [`crate::registry`] in between.
//! - `state` (slab lists, depot, counters) and every slab header of the cache are only
//!   touched with `header.lock` held. The objects that state refers to are free.
//! - An object is in exactly one of: a slab's free list or uncarved range; the depot; a
//!   thread's magazine; the user's hands. `objects_out` counts all but the first.

use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::{AtomicBool, AtomicU64};
use core::time::Duration;
use std::time::Instant;

use allocator_api2::alloc::AllocError;
use pagekeep_mmap::{DefaultPages, PageSource};

use crate::depot::{DEPOT_MAGAZINES, Depot, DepotSlots};
use crate::large_cache::LargeCache;
use crate::magazine::{
    ACTIVE, ALLOC_HIT, FREE_HIT, Magazine, Slot, ThreadMagazines, loaded_count, register_thread,
    try_with_magazines, with_magazines,
};
use crate::registry::{self, CoreHeader, NO_ID};
use crate::slab::{self, Geometry, ListKind, SLAB_BYTES, SlabHeader, SlabList};
use crate::slab_map;
use crate::stats::CacheStats;
use crate::sync::AbortOnUnwind;

/// A constructor run on fresh objects: writes a valid object at the pointer.
pub(crate) type Construct<'a> = Option<&'a dyn Fn(NonNull<u8>)>;

/// Everything guarded by the cache lock.
#[derive(Debug)]
struct State {
    partial: SlabList,
    full: SlabList,
    empty: SlabList,
    depot: Depot,
    /// Objects out of the slabs (users, magazines, depot).
    objects_out: usize,
    slabs_created: u64,
    slabs_released: u64,
    /// Locked operations in the current working-set epoch.
    epoch_events: u32,
    /// Fewest empty slabs seen during the epoch.
    empty_low: usize,
    /// Fewest full magazines in the depot during the epoch.
    depot_low: usize,
    /// Empty slabs and full depot magazines when the epoch started: a low under them
    /// means the epoch drew on what was kept, so the floors are worth keeping.
    empty_start: usize,
    depot_start: usize,
    /// When the epoch started.
    epoch_start: Instant,
    /// Operations served by magazines without a lock (as reported at slow paths).
    magazine_hits: u64,
    /// Operations that reached the depot or the slabs.
    magazine_misses: u64,
    /// Locked operations that found the lock held by another thread.
    lock_contentions: u64,
    /// Locked operations ever (wrapping), for the idle test of the decay pass.
    ops: u64,
    /// `ops` at the previous decay pass.
    ops_at_decay: u64,
    /// Contentions in the current window of [`CONTENTION_WINDOW`] locked operations.
    window_contentions: u32,
    /// Times the magazine size grew.
    magazine_resizes: u32,
}

/// Locked operations a working-set epoch lasts at least.
pub(crate) const EPOCH_EVENTS: u32 = 1024;
/// Time a working-set epoch lasts at least: long against the cycles of a program (a
/// phase that allocates then frees many objects), as the paper's 15 seconds are.
pub(crate) const EPOCH_TIME: Duration = Duration::from_millis(500);
/// Full magazines the depot keeps whatever its working set.
const DEPOT_FLOOR: usize = 4;
/// Time between two decay passes over the siblings (module docs).
pub const DECAY_INTERVAL: Duration = Duration::from_millis(250);
/// Locked operations of a cache between two looks at the clock (a vDSO call).
const CLOCK_EVENTS: u32 = 64;
/// Magazine hits of one thread on one cache between two looks at the clock from the
/// fast path of `free` (a power of two). Locked operations look at the clock themselves
/// (every [`CLOCK_EVENTS`]); without this, a program whose work is all served by its
/// magazines would never run a decay pass, and a peak it freed earlier would stay
/// resident. A depot exchange restarts the count, so a program that exchanges often
/// looks through its locked operations instead.
///
/// Only frees look, and rarely, because both a look and its test are dear on the fast
/// paths. With a test on the allocation path too, its load, add and store in place of
/// one add to memory made batches of 1,000 allocations and frees of 64 bytes twice as
/// slow on AMD EPYC (2.5 against 4.8 ns per operation), for no more instructions; and a
/// clock reading amid such a loop costs about a microsecond there, against 12 ns in a
/// loop of readings. A program served by its magazines alone frees as it allocates (one
/// that only allocates soon empties them and takes the locked path).
///
/// The hits count up from [`HITS_BASE`](crate::magazine::HITS_BASE) in the high half of
/// [`Slot::counts`](crate::magazine::Slot::counts), so that the count is due when it
/// reaches 2^31, the word's sign bit: the free's test is the sign of the add that counts
/// it (one branch, no other instruction). The free that finds it due takes
/// [`HITS_AT_LOOK`] off the count (which allocations raise too, so the first free past
/// the mark looks, whatever the order of allocations and frees) and credits them to the
/// cache's statistics ([`CacheCore::hits_at_looks`]).
pub(crate) const HITS_PER_CLOCK: u32 = 1 << 14;

/// The hits a free's look at the clock takes off its slot's count: all but one, so that
/// the decay pass the look may run finds the thread's hits on the cache (see
/// [`CacheCore::decay`]) and counts the cache busy, not idle (an idle cache gives back
/// the thread's magazines, its depot and its empty slabs, which the thread's next
/// operations then miss). The next look is due after as many hits.
const HITS_AT_LOOK: u32 = HITS_PER_CLOCK - 1;

/// Locked operations per window of the contention measure.
pub(crate) const CONTENTION_WINDOW: u32 = 256;
/// Contended locked operations in a window (about 3 %) that make the magazines grow.
pub(crate) const CONTENTION_THRESHOLD: u32 = 8;

/// The engine of a cache; see the module docs.
///
/// Aligned to 128 bytes, so the cores of a heap's classes, which sit side by side, share
/// no cache line: the lock and the state written under it by one class do not slow down
/// the fast-path reads of the next class's header.
#[repr(C, align(128))]
pub(crate) struct CacheCore<S: PageSource> {
    /// Registry-visible part; first, so a `*CoreHeader` is a `*CacheCore<S>`.
    pub(crate) header: CoreHeader,
    pub(crate) geometry: Geometry,
    /// Empty slabs kept before trimming.
    max_empty_slabs: usize,
    /// The bound of the adaptive magazine size.
    max_magazine_capacity: u32,
    /// A page's worth of objects (at least one; at most 8 under miri): the capacity of
    /// a thread's magazines at its first miss (see `thread_capacity_after_miss` and
    /// `first_magazine_capacity`).
    page_worth: u32,
    /// Full magazines the depot keeps at most (at most `DEPOT_MAGAZINES`).
    max_depot_magazines: usize,
    /// Whether an object that goes back to its slab gives back its whole pages.
    purge_free_objects: bool,
    /// Destroys a constructed object when its slab is reclaimed.
    drop_object: Option<unsafe fn(NonNull<u8>)>,
    source: S,
    /// The first of this core's siblings (the classes of its heap, or itself), with the
    /// provenance of all of them; they live as long as this core. Written before the
    /// core is shared.
    siblings: *const CacheCore<S>,
    /// How many siblings there are (at least 1).
    sibling_count: usize,
    /// The decay clock; the first sibling's is the one used.
    clock: DecayClock,
    /// Magazine hits taken off the threads' slots at their looks at the clock
    /// ([`HITS_AT_LOOK`] each), for the statistics.
    hits_at_looks: AtomicU64,
    /// Told when memory this cache held goes back where a new slab can be made from it
    /// (see [`SpaceReturned`]); written before the core is shared.
    space_returned: Option<fn(&S, SpaceReturned)>,
    state: UnsafeCell<State>,
}

/// How memory went back, for a cache's [`CacheCore::set_space_returned`] hook: a hook
/// called under the cache's lock must not wake anyone (a woken task may run at once and
/// take the same lock).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SpaceReturned {
    /// Empty slabs were released to the source, or free objects went back to their
    /// slabs, under the cache's lock (a trim, a decay or epoch pass, a free past the
    /// magazines, an idle thread's magazines taken back).
    UnderLock,
    /// A thread's magazines came back (to the depot or the slabs) through the registry:
    /// the thread exited, or the cache is being destroyed and takes back every
    /// thread's. Outside the cache's lock, under the registry's.
    ThreadExit,
}

/// The capacity of a thread's magazines of a class of `slot_size` at its first miss: a
/// page's worth of objects (at least one). Under miri at most 8: every object a refill
/// carves costs milliseconds there (each access to a slab's bytes walks its borrow
/// stacks), and a cache's first refill of 170 small objects took 3 s, its drop 5 s.
fn first_magazine_capacity(slot_size: usize) -> u32 {
    let page_worth = u32::try_from(pagekeep_mmap::sys::page_size() / slot_size)
        .unwrap_or(u32::MAX)
        .max(1);
    if cfg!(miri) {
        page_worth.min(8)
    } else {
        page_worth
    }
}

/// When the next decay pass is due, shared by siblings (see the module docs).
struct DecayClock {
    /// When the core was made; `due_nanos` counts from it.
    base: Instant,
    /// Nanoseconds after `base` when the next pass is due.
    due_nanos: AtomicU64,
    /// Set by the operation that found the pass due; taken by the slow path that runs it.
    requested: AtomicBool,
    /// Called outside any lock at every decay pass driven by operations, from an
    /// allocation (see [`Operation`]).
    hook: Option<fn()>,
    /// A pass ran in a free and left its call of the hook to the next allocation's.
    hook_pending: AtomicBool,
    /// The large blocks the siblings' heap keeps, which each pass expires (null for a
    /// lone cache).
    large: *const LargeCache,
}

/// What the operation that runs a decay pass is: the pass runs in either, the hook only
/// in an allocation. A C runtime frees from inside its own locked sections, where a hook
/// that starts a thread would wait for ever: glibc's `pthread_join` frees a finished
/// thread's TLS blocks holding the stack-cache lock that `pthread_create` takes. It
/// makes its allocations outside that lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Operation {
    Allocation,
    Free,
}

/// Runs a heap's decay hook, user code inside an allocation: a panic in it must
/// not unwind out of `GlobalAlloc` (undefined behaviour), so it aborts. Out of line: the
/// guard's unwinding cleanup would otherwise be inlined into the slow paths of every
/// operation (and cost the fast paths that inline them a frame).
#[cold]
#[inline(never)]
fn run_decay_hook(hook: fn()) {
    let _abort = AbortOnUnwind {
        what: "a decay hook panicked inside the allocator",
    };
    hook();
}

// SAFETY: the state is guarded by the lock (module docs); the raw pointers inside point to
// slabs owned by the core; the source is shared as `&S` across threads, hence `S: Sync`.
unsafe impl<S: PageSource + Sync> Sync for CacheCore<S> {}
// SAFETY: as above; the core owns its slabs and source.
unsafe impl<S: PageSource + Send> Send for CacheCore<S> {}

/// How a cache is configured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoreConfig {
    pub(crate) geometry: Geometry,
    pub(crate) max_empty_slabs: usize,
    pub(crate) magazine_capacity: u32,
    /// Bound of the adaptive magazine size (at least `magazine_capacity` is used).
    pub(crate) max_magazine_capacity: u32,
    /// Full magazines the depot keeps at most (`DEPOT_MAGAZINES` caps it).
    pub(crate) max_depot_magazines: usize,
    /// Whether an object that goes back to its slab (not to a magazine or the depot)
    /// gives the whole pages it spans, after its link word, back to the page source
    /// (`Decommit::Zero`): for big objects, so that the free objects of a partial slab
    /// cost no memory. Only for caches whose link word is an object's first word.
    pub(crate) purge_free_objects: bool,
    pub(crate) magazines: bool,
    pub(crate) drop_object: Option<unsafe fn(NonNull<u8>)>,
}

/// Default magazine size: about 64 KiB of objects, between 4 and 512 of them.
///
/// The bound was 64 objects, 4 KiB of 64-byte objects: a thread that allocates or frees
/// thousands of small objects in a row then met the depot every 64 of them, and each
/// exchange cost about 150 ns more than its instructions when the batch outgrew the
/// caches (100,000 blocks of 64 bytes allocated then freed: 5.1 ns per operation, 3.2
/// with 512, against mimalloc's 3.3; `reproduce --only slab`, Intel Xeon). A thread's
/// magazines still start at a page of objects and grow at each miss
/// (`thread_capacity_after_miss`), so a class used a little caches little.
pub(crate) fn default_magazine_capacity(slot_size: usize) -> u32 {
    (64 * 1024 / slot_size).clamp(4, 512) as u32
}

/// Default bound of the adaptive magazine size: a slab's worth of objects (256 KiB),
/// between 16 and 512 of them.
pub(crate) fn default_max_magazine_capacity(slot_size: usize) -> u32 {
    (SLAB_BYTES / slot_size).clamp(16, 512) as u32
}

/// The fast path of every allocation from a cache: the head of the calling thread's
/// loaded magazine in the slot of fast index `id`, or `None` (the slot is empty, or with
/// the `reclaim-idle-threads` feature a decay pass holds the thread's magazines): the
/// caller then takes the cache's slow path. No load from the cache itself, so a caller
/// that keeps the fast index elsewhere (a [`SlabHeap`](crate::SlabHeap) keeps its
/// classes' in its own struct) reaches the cache only on a miss. Objects from here are
/// not constructed afresh: they are free objects that went through a magazine.
///
/// In debug builds and with the `hardened` feature the object is checked (a free object
/// of ours, with its free tag) before its link word is read, and marked handed out.
///
/// # Safety
/// - `id` is the fast index (`header.fast_id`) of a registered cache whose link word
///   lies at `link_offset`, or [`NO_ID`] (whose slot is always empty); the object
///   returned is an allocation of that cache.
#[inline(always)]
pub(crate) unsafe fn alloc_from_thread_slot(id: u32, link_offset: usize) -> Option<NonNull<u8>> {
    // SAFETY: the slot of `id` (caller's obligations).
    unsafe { alloc_from_selected_slot(|magazines| magazines.slot(id), link_offset) }
}

/// [`alloc_from_thread_slot`] for the slot at byte offset `slot_offset` of the inline
/// slot table, that of fast index `slot_offset / SLOT_BYTES`.
///
/// # Safety
/// - `slot_offset` is `id * SLOT_BYTES` for an `id` that meets the obligations of
///   [`alloc_from_thread_slot`] (with `link_offset`).
#[inline(always)]
pub(crate) unsafe fn alloc_from_thread_slot_at(
    slot_offset: u32,
    link_offset: usize,
) -> Option<NonNull<u8>> {
    // SAFETY: the slot of fast index `slot_offset / SLOT_BYTES` (caller's obligations).
    unsafe {
        alloc_from_selected_slot(
            |magazines| magazines.slot_at_offset(slot_offset),
            link_offset,
        )
    }
}

/// The body of [`alloc_from_thread_slot`], on the slot that `select` picks out of the
/// calling thread's magazines.
///
/// # Safety
/// - `select` returns the slot of a fast index that meets the obligations of
///   [`alloc_from_thread_slot`] (with `link_offset`).
#[inline(always)]
unsafe fn alloc_from_selected_slot(
    select: impl FnOnce(&ThreadMagazines) -> &Slot,
    link_offset: usize,
) -> Option<NonNull<u8>> {
    try_with_magazines(|magazines| {
        let slot = select(magazines);
        // SAFETY: the calling thread owns the slot.
        let head = NonNull::new(unsafe { slot.owner_loaded() })?;
        #[cfg(any(debug_assertions, feature = "hardened"))]
        // SAFETY: the head of the calling thread's loaded magazine, taken out of it
        // below, for the caller.
        let head = unsafe { slab::take_from_magazine(head, link_offset) };
        // SAFETY: the loaded magazine holds free objects of the cache of `id` chained by
        // `Magazine::push` with its link offset, `link_offset` (caller; magazine module
        // docs).
        let next = unsafe { head.add(link_offset).cast::<*mut u8>().read() };
        // SAFETY: the calling thread owns the slot. One fewer object, one more hit: a
        // single add (see `Slot::counts`).
        unsafe {
            slot.owner_set_loaded(next);
            let counts = slot.owner_counts();
            debug_assert!(loaded_count(counts) > 0, "a loaded magazine counted empty");
            slot.owner_set_counts(counts.wrapping_add(ALLOC_HIT));
        }
        Some(head)
    })
    .flatten()
    // The slot of `NO_ID` is always empty, so no id test is needed above (caches
    // without magazines, and those with an overflow id, go to the slow path).
}

/// What [`free_to_thread_slot`] did with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FastFree {
    /// It went into the thread's loaded magazine.
    Pushed,
    /// It went into the thread's loaded magazine, and the slot's hits reached a look at
    /// the decay clock ([`HITS_PER_CLOCK`]; [`HITS_AT_LOOK`] of them taken off the slot's
    /// count): the caller calls its cache's
    /// [`look_from_magazine_hits`](CacheCore::look_from_magazine_hits).
    PushedClockDue,
    /// Nothing was done (the loaded magazine is full, the thread or the cache has no
    /// magazines, or a decay pass holds them): the caller frees the object on its
    /// cache's slow path ([`free_slow`](CacheCore::free_slow)).
    Missed,
}

/// The fast path of every free to a cache: the object goes into the calling thread's
/// loaded magazine in the slot of fast index `id` if it has room. No load from the cache
/// itself, so a caller that found the fast index elsewhere (C's `free`, in the slab's
/// header) reaches the cache only when this says so.
///
/// # Safety
/// - `id` is the fast index (`header.fast_id`) of a registered cache whose link word
///   lies at `link_offset`, or [`NO_ID`] (whose slot has no room); `object` was
///   allocated from that cache, is given up by the caller, and covers its free words;
///   in checked builds it was marked free.
#[inline(always)]
pub(crate) unsafe fn free_to_thread_slot(
    id: u32,
    link_offset: usize,
    object: NonNull<u8>,
) -> FastFree {
    // SAFETY: the slot of `id` (caller's obligations).
    unsafe { free_to_selected_slot(|magazines| magazines.slot(id), link_offset, object) }
}

/// [`free_to_thread_slot`] for the slot at byte offset `slot_offset` of the inline slot
/// table, that of fast index `slot_offset / SLOT_BYTES`.
///
/// # Safety
/// - `slot_offset` is `id * SLOT_BYTES` for an `id` that meets the obligations of
///   [`free_to_thread_slot`] (with `link_offset` and `object`).
#[inline(always)]
pub(crate) unsafe fn free_to_thread_slot_at(
    slot_offset: u32,
    link_offset: usize,
    object: NonNull<u8>,
) -> FastFree {
    // SAFETY: the slot of fast index `slot_offset / SLOT_BYTES` (caller's obligations).
    unsafe {
        free_to_selected_slot(
            |magazines| magazines.slot_at_offset(slot_offset),
            link_offset,
            object,
        )
    }
}

/// The body of [`free_to_thread_slot`], on the slot that `select` picks out of the
/// calling thread's magazines.
///
/// # Safety
/// - `select` returns the slot of a fast index that meets the obligations of
///   [`free_to_thread_slot`] (with `link_offset` and `object`).
#[inline(always)]
unsafe fn free_to_selected_slot(
    select: impl FnOnce(&ThreadMagazines) -> &Slot,
    link_offset: usize,
    object: NonNull<u8>,
) -> FastFree {
    try_with_magazines(|magazines| {
        let slot = select(magazines);
        // SAFETY: the calling thread owns the slot.
        let (counts, capacity) = unsafe { (slot.owner_counts(), slot.owner_capacity()) };
        if loaded_count(counts) >= capacity {
            return FastFree::Missed;
        }
        // SAFETY: the object is free and of the cache of `id` (caller), its link word is
        // ours; the calling thread owns the slot. One more object, one more hit (see
        // `Slot::counts`).
        unsafe {
            object
                .add(link_offset)
                .cast::<*mut u8>()
                .write(slot.owner_loaded());
            slot.owner_set_loaded(object.as_ptr());
            let counts = counts.wrapping_add(FREE_HIT);
            slot.owner_set_counts(counts);
            // The hits reached 2^31, the sign bit (see `HITS_PER_CLOCK`): the branch on the
            // add's sign, the count stored again only on this path.
            if (counts as i64) < 0 {
                core::hint::cold_path();
                slot.owner_set_counts(counts.wrapping_sub(u64::from(HITS_AT_LOOK) << 32));
                FastFree::PushedClockDue
            } else {
                FastFree::Pushed
            }
        }
    })
    .unwrap_or(FastFree::Missed)
}

impl<S: PageSource> CacheCore<S> {
    /// Builds a core at `place` and registers it.
    ///
    /// # Safety
    /// - `place` is valid for writes of a `CacheCore<S>`, suitably aligned, and stays
    ///   allocated and unmoved until [`destroy`](Self::destroy).
    /// - The bytes at `place` are all zero (as a fresh block of a page source is).
    /// - `depot_slots` meets [`Depot::init_zeroed`]'s requirements for as long as the core
    ///   lives.
    pub(crate) unsafe fn init(
        place: NonNull<Self>,
        config: CoreConfig,
        source: S,
        depot_slots: NonNull<DepotSlots>,
    ) {
        let core = place.as_ptr();
        // A magazine holds between one object and a slab's worth: a miss fills a whole
        // magazine from the slabs at once, under the lock (a thread's magazines start
        // smaller: see `thread_capacity_after_miss`).
        let slab_objects = u32::try_from(config.geometry.capacity)
            .unwrap_or(u32::MAX)
            .max(1);
        let magazine_capacity = config.magazine_capacity.clamp(1, slab_objects);
        let max_magazine_capacity = config
            .max_magazine_capacity
            .clamp(magazine_capacity, slab_objects);
        // SAFETY: the caller gives us the place and the depot's slots. Every field is
        // written in place; the slots are not: their all-zero bytes already are empty
        // magazines, and writing them would fault in their pages.
        unsafe {
            (&raw mut (*core).header).write(CoreHeader::new(
                magazine_capacity,
                config.geometry.link_offset,
                Self::flush_magazine,
                Self::reclaim_magazine,
            ));
            (&raw mut (*core).geometry).write(config.geometry);
            (&raw mut (*core).max_empty_slabs).write(config.max_empty_slabs);
            (&raw mut (*core).max_magazine_capacity).write(max_magazine_capacity);
            (&raw mut (*core).page_worth).write(first_magazine_capacity(config.geometry.slot_size));
            (&raw mut (*core).max_depot_magazines).write(config.max_depot_magazines);
            (&raw mut (*core).purge_free_objects)
                .write(config.purge_free_objects && config.geometry.link_offset == 0);
            (&raw mut (*core).drop_object).write(config.drop_object);
            (&raw mut (*core).source).write(source);
            (&raw mut (*core).siblings).write(place.as_ptr());
            (&raw mut (*core).sibling_count).write(1);
            (&raw mut (*core).clock).write(DecayClock {
                base: Instant::now(),
                due_nanos: AtomicU64::new(DECAY_INTERVAL.as_nanos() as u64),
                requested: AtomicBool::new(false),
                hook: None,
                hook_pending: AtomicBool::new(false),
                large: ptr::null(),
            });
            (&raw mut (*core).space_returned).write(None);
            (&raw mut (*core).hits_at_looks).write(AtomicU64::new(0));
            let state = UnsafeCell::raw_get(&raw const (*core).state);
            (&raw mut (*state).partial).write(SlabList::new(ListKind::Partial));
            (&raw mut (*state).full).write(SlabList::new(ListKind::Full));
            (&raw mut (*state).empty).write(SlabList::new(ListKind::Empty));
            Depot::init_zeroed(&raw mut (*state).depot, depot_slots);
            (&raw mut (*state).objects_out).write(0);
            (&raw mut (*state).slabs_created).write(0);
            (&raw mut (*state).slabs_released).write(0);
            (&raw mut (*state).epoch_events).write(0);
            (&raw mut (*state).empty_low).write(0);
            (&raw mut (*state).depot_low).write(0);
            (&raw mut (*state).empty_start).write(0);
            (&raw mut (*state).depot_start).write(0);
            (&raw mut (*state).epoch_start).write(Instant::now());
            (&raw mut (*state).magazine_hits).write(0);
            (&raw mut (*state).magazine_misses).write(0);
            (&raw mut (*state).lock_contentions).write(0);
            (&raw mut (*state).window_contentions).write(0);
            (&raw mut (*state).magazine_resizes).write(0);
            (&raw mut (*state).ops).write(0);
            (&raw mut (*state).ops_at_decay).write(0);
        }
        // SAFETY: the header now sits at its final address, which stays put until
        // `destroy`.
        unsafe { registry::register_core(place.cast::<CoreHeader>(), config.magazines) };
    }

    /// Makes the `count` cores from `first` on siblings that decay together, the first
    /// one's clock calling `hook` at every pass and expiring the large blocks of `large`
    /// (whose lock the `fork` handlers then take with the first core's).
    ///
    /// # Safety
    /// - `first` points to `count` initialised cores in one allocation (with its
    ///   provenance), that live and stay put as long as any of them, and none of them is
    ///   shared with another thread yet.
    /// - `large`, if given, lives at its address as long as the first core is
    ///   registered.
    pub(crate) unsafe fn set_siblings(
        first: NonNull<Self>,
        count: usize,
        hook: Option<fn()>,
        large: Option<&LargeCache>,
    ) {
        for index in 0..count {
            // SAFETY: inside the allocation, not shared yet (caller).
            unsafe {
                let core = first.as_ptr().add(index);
                (*core).siblings = first.as_ptr();
                (*core).sibling_count = count;
            }
        }
        // SAFETY: as above.
        unsafe { (*first.as_ptr()).clock.hook = hook };
        if let Some(large) = large {
            // SAFETY: as above; the first core is registered (at `init`), and `large`
            // lives as long as it is (caller).
            unsafe {
                (*first.as_ptr()).clock.large = large;
                registry::add_fork_companion(&(*first.as_ptr()).header, large.lock());
            }
        }
        if hook.is_some() {
            // The first pass, and with it the hook, is due at once: at the heap's first
            // clock reading, not `DECAY_INTERVAL` later. A hook that starts the decay
            // thread must run even if the program frees its peak within that interval
            // and then goes idle (no later operation would drive a pass).
            // SAFETY: as above.
            unsafe { (*first.as_ptr()).clock.due_nanos.store(0, Relaxed) };
        }
    }

    /// Makes the `count` cores from `first` on call `hook` (with their source) when
    /// memory they held goes back: after releasing empty slabs or giving free objects
    /// back to their slabs under their lock, and after taking back an exiting thread's
    /// magazines (see [`SpaceReturned`]).
    ///
    /// # Safety
    /// - `first` points to `count` initialised cores in one allocation (with its
    ///   provenance), none of them shared with another thread yet.
    pub(crate) unsafe fn set_space_returned(
        first: NonNull<Self>,
        count: usize,
        hook: fn(&S, SpaceReturned),
    ) {
        for index in 0..count {
            // SAFETY: inside the allocation, not shared yet (caller).
            unsafe { (*first.as_ptr().add(index)).space_returned = Some(hook) };
        }
    }

    /// Calls the [`set_space_returned`](Self::set_space_returned) hook, if any.
    #[inline]
    fn space_returned(&self, how: SpaceReturned) {
        if let Some(hook) = self.space_returned {
            hook(&self.source, how);
        }
    }

    /// Runs `f` with the state, under the lock.
    #[inline]
    fn locked<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let _guard = self.header.lock.guard();
        // SAFETY: the lock is held for the whole call, and the state is only accessed
        // under it, so this is the only reference.
        let result = f(unsafe { &mut *self.state.get() });
        #[cfg(feature = "invariant-checks")]
        // SAFETY: still under the lock.
        Self::check_state(&self.geometry, unsafe { &*self.state.get() }, self);
        result
    }

    /// Runs `f` with the state under the lock, then counts the operation for the
    /// working-set epoch and the contention measure (see [`tick`](Self::tick)).
    #[inline]
    fn locked_op<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (_guard, contended) = self.header.lock.guard_noting_contention();
        // SAFETY: the lock is held until the end of the function, and the state is only
        // accessed under it, so this is the only reference.
        let state = unsafe { &mut *self.state.get() };
        let result = f(state);
        // SAFETY: we hold the lock and `state` is ours.
        unsafe { self.tick(state, contended) };
        #[cfg(feature = "invariant-checks")]
        Self::check_state(&self.geometry, state, self);
        result
    }

    /// The fast index and link offset, for callers of the `_hinted` fast paths.
    pub(crate) fn hints(&self) -> (u32, usize) {
        (self.header.fast_id, self.header.link_offset)
    }

    /// The calling thread's slot for this cache (mapping an overflow chunk if needed);
    /// `None` if the thread has no magazines (not registered by
    /// [`register_thread`](crate::magazine::register_thread) first, registering, exited,
    /// or the chunk could not be mapped) or the cache has none.
    #[inline]
    fn thread_slot<'m>(&self, magazines: &'m ThreadMagazines) -> Option<&'m Slot> {
        if magazines.state.load(Relaxed) != ACTIVE {
            return None;
        }
        magazines.slot_or_map(self.header.id)
    }

    /// The page source.
    pub(crate) fn source(&self) -> &S {
        &self.source
    }

    /// Allocates an object (constructed with `construct` if it is fresh).
    #[inline(always)]
    pub(crate) fn alloc(&self, construct: Construct<'_>) -> Option<NonNull<u8>> {
        self.alloc_hinted(self.header.fast_id, self.header.link_offset, construct)
    }

    /// [`alloc`](Self::alloc) with the header's `id` and `link_offset` given by a caller
    /// that keeps copies (saves a dependent load on the fast path).
    #[inline(always)]
    pub(crate) fn alloc_hinted(
        &self,
        id: u32,
        link_offset: usize,
        construct: Construct<'_>,
    ) -> Option<NonNull<u8>> {
        let object = match self.alloc_fast(id, link_offset) {
            Some(object) => object,
            None => {
                let object = self.alloc_slow(construct)?;
                #[cfg(any(debug_assertions, feature = "hardened"))]
                // SAFETY: the object was just taken out of its chain, for the caller.
                let object = unsafe { slab::mark_handed_out(object, &self.header, &self.geometry) };
                object
            }
        };
        Some(object)
    }

    /// The fast path of [`alloc_hinted`](Self::alloc_hinted) alone: an object from the
    /// calling thread's loaded magazine, or `None` (then the caller takes the slow path,
    /// [`alloc_slow`](Self::alloc_slow)). Objects from here are not constructed afresh:
    /// they are free objects that went through a magazine.
    ///
    /// In debug builds and with the `hardened` feature the object is checked (a free
    /// object of ours, with its free tag) before its link word is read, and marked handed
    /// out.
    #[inline(always)]
    fn alloc_fast(&self, id: u32, link_offset: usize) -> Option<NonNull<u8>> {
        debug_assert!(id == self.header.fast_id && link_offset == self.header.link_offset);
        // SAFETY: this cache's fast index and link offset (checked above in debug
        // builds; the `_hinted` callers' obligation); the object is handed out by this
        // cache.
        unsafe { alloc_from_thread_slot(id, link_offset) }
    }

    /// [`alloc_fast`](Self::alloc_fast) for a caller that handles the miss itself (by
    /// calling [`alloc`](Self::alloc) out of line).
    #[inline(always)]
    pub(crate) fn alloc_fast_hinted(&self, id: u32, link_offset: usize) -> Option<NonNull<u8>> {
        self.alloc_fast(id, link_offset)
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, construct: Construct<'_>) -> Option<NonNull<u8>> {
        let object = self.alloc_slow_locked(construct);
        self.decay_if_requested(Operation::Allocation);
        object
    }

    /// [`alloc_slow`](Self::alloc_slow) but for the decay pass.
    #[inline(always)]
    fn alloc_slow_locked(&self, construct: Construct<'_>) -> Option<NonNull<u8>> {
        if self.header.id != NO_ID {
            register_thread();
            let outcome = with_magazines(|magazines| {
                let slot = self.thread_slot(magazines)?;
                let mut loaded = slot.loaded();
                // SAFETY: a magazine of this cache's free objects (magazine module docs).
                if let Some(object) = unsafe { self.pop(&mut loaded) } {
                    // Only for an overflow id: the inlined fast path serves inline ones.
                    slot.set_loaded(loaded);
                    slot.count_hit();
                    return Some(Some(object));
                }
                let previous = slot.previous();
                if previous.count > 0 {
                    // Bonwick & Adams: previous is full, swap it in.
                    let mut loaded = previous;
                    slot.set_previous(slot.loaded());
                    // SAFETY: a magazine of this cache's free objects.
                    let object = unsafe { self.pop(&mut loaded) };
                    slot.set_loaded(loaded);
                    slot.count_hit();
                    return Some(object);
                }
                let capacity = self.thread_capacity_after_miss(slot.capacity.load(Relaxed));
                slot.capacity.store(capacity, Relaxed);
                let hits = slot.take_hits();
                let mut loaded = self.locked_op(|state| {
                    state.magazine_hits += u64::from(hits);
                    state.magazine_misses += 1;
                    match state.depot.pop_full() {
                        Some(full) => full,
                        // SAFETY: we hold the lock (inside `locked_op`).
                        None => unsafe { self.take_from_slabs(state, capacity, construct) },
                    }
                });
                // A magazine from the depot may have been filled by a thread whose
                // magazines had grown further: this thread takes up its size, so that a
                // full magazine of its own holds `capacity` objects (`Slot::previous`).
                if loaded.count > capacity {
                    slot.capacity.store(loaded.count, Relaxed);
                }
                // SAFETY: a magazine of this cache's free objects, now ours (empty if the
                // source failed: then the allocation fails).
                let object = unsafe { self.pop(&mut loaded) };
                slot.set_loaded(loaded);
                Some(object)
            });
            if let Some(object) = outcome {
                return object;
            }
        }
        // No magazines for this thread or cache: straight to the slabs.
        self.locked_op(|state| {
            state.magazine_misses += 1;
            // SAFETY: we hold the lock.
            let mut magazine = unsafe { self.take_from_slabs(state, 1, construct) };
            // SAFETY: a chain of (at most) one object just built.
            unsafe { self.pop(&mut magazine) }
        })
    }

    /// Pops an object from a magazine of this cache's free objects; in debug builds and
    /// with the `hardened` feature the object is checked first (a free object of ours,
    /// with its free tag), so an overwritten link word is reported, not followed.
    ///
    /// # Safety
    /// - `magazine` is a chain of this cache's free objects (magazine module docs).
    #[inline(always)]
    unsafe fn pop(&self, magazine: &mut Magazine) -> Option<NonNull<u8>> {
        #[cfg(any(debug_assertions, feature = "hardened"))]
        if let Some(head) = NonNull::new(magazine.head) {
            slab::check_free(head, &self.header, &self.geometry);
        }
        // SAFETY: forwarded from the caller.
        unsafe { magazine.pop(self.geometry.link_offset) }
    }

    /// Frees an object.
    ///
    /// # Safety
    /// - `object` was allocated from this cache and is not used afterwards.
    #[inline(always)]
    pub(crate) unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_hinted(self.header.fast_id, self.header.link_offset, object) }
    }

    /// [`free`](Self::free) with the header's `id` and `link_offset` given by the caller.
    ///
    /// # Safety
    /// As [`free`](Self::free); `id` and `link_offset` are this core's.
    #[inline(always)]
    pub(crate) unsafe fn free_hinted(&self, id: u32, link_offset: usize, object: NonNull<u8>) {
        debug_assert!(id == self.header.fast_id && link_offset == self.header.link_offset);
        #[cfg(any(debug_assertions, feature = "hardened"))]
        // SAFETY: the caller frees the object (a foreign pointer is reported), through a
        // pointer that covers its free words (ours, or the heap's for short blocks).
        unsafe {
            slab::mark_free(object, &self.header, &self.geometry)
        };
        // SAFETY: forwarded from the caller; checked and marked free above in checked
        // builds.
        unsafe { self.put_freed(id, link_offset, object) }
    }

    /// [`free`](Self::free) for a caller that located the object's slab itself (the
    /// slab at `base`, whose owner word names this cache): the object is checked to be
    /// at a slot start of that slab and not free already (else the process aborts with
    /// a message), then freed.
    ///
    /// # Safety
    /// - `base` is the base of a live slab of this cache, `object` lies in it, and if
    ///   `object` is the start of one of its objects, that object was allocated from
    ///   this cache and is not used afterwards.
    #[cfg(any(debug_assertions, feature = "hardened"))]
    #[inline(always)]
    pub(crate) unsafe fn free_in_slab(&self, object: NonNull<u8>, base: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { slab::mark_free_in_slab(object, base, &self.geometry) };
        // SAFETY: an object of ours at a slot start, just marked free (a double free
        // aborted above), given up by the caller.
        unsafe { self.put_freed(self.header.fast_id, self.header.link_offset, object) }
    }

    /// The checks of [`free`](Self::free) alone, in checked builds: the object is one of
    /// this cache's, at a slot start and not free already (else the process aborts with
    /// a message), and is marked free. For a caller that then puts it in the thread's
    /// magazine itself ([`SlabHeap`](crate::SlabHeap)'s `dealloc`, by slot offset).
    ///
    /// # Safety
    /// As [`free`](Self::free).
    #[cfg(any(debug_assertions, feature = "hardened"))]
    #[inline(always)]
    pub(crate) unsafe fn mark_freed(&self, object: NonNull<u8>) {
        // SAFETY: the caller frees the object (a foreign pointer is reported), through a
        // pointer that covers its free words (ours, or the heap's for short blocks).
        unsafe { slab::mark_free(object, &self.header, &self.geometry) };
    }

    /// What [`free`](Self::free) does after a free that
    /// [`free_to_thread_slot`] (or its `_at` form) did not finish: the hits' look at
    /// the decay clock for [`FastFree::PushedClockDue`], the slow path for
    /// [`FastFree::Missed`]. Out of line, for a fast path that found the slot without
    /// the cache.
    ///
    /// # Safety
    /// - `outcome` is what the fast path returned for `object`, an object of this cache
    ///   (as [`free`](Self::free) requires; in checked builds marked free), on the slot
    ///   of this cache's fast index or on that of [`NO_ID`] (which only misses).
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn finish_free(&self, outcome: FastFree, object: NonNull<u8>) {
        match outcome {
            FastFree::Pushed => {}
            FastFree::PushedClockDue => self.look_from_magazine_hits(),
            // SAFETY: forwarded from the caller (the slot of `NO_ID` has capacity 0, so
            // nothing was pushed for a cache without magazines).
            FastFree::Missed => unsafe { self.free_slow(object) },
        }
    }

    /// The part of [`free_hinted`](Self::free_hinted) after the checks: the object goes
    /// into the calling thread's loaded magazine, or down the slow path.
    ///
    /// # Safety
    /// As [`free_hinted`](Self::free_hinted); in checked builds the object was marked
    /// free.
    #[inline(always)]
    unsafe fn put_freed(&self, id: u32, link_offset: usize, object: NonNull<u8>) {
        // SAFETY: forwarded from the caller; `id` and `link_offset` are this cache's.
        match unsafe { free_to_thread_slot(id, link_offset, object) } {
            FastFree::Pushed => {}
            FastFree::PushedClockDue => self.look_from_magazine_hits(),
            // SAFETY: forwarded from the caller (the slot of `NO_ID` has capacity 0, so
            // nothing was pushed for a cache without magazines).
            FastFree::Missed => unsafe { self.free_slow(object) },
        }
    }

    /// Frees an object past the magazines, for a caller that needs its memory back in
    /// the page source at once (an async heap whose requests are starved): the object,
    /// and the calling thread's magazines of this cache, go back to their slabs, and
    /// every empty slab is released to the source, before this returns.
    ///
    /// # Safety
    /// As [`free`](Self::free).
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_to_slab(&self, object: NonNull<u8>) {
        #[cfg(any(debug_assertions, feature = "hardened"))]
        // SAFETY: the caller frees the object (a foreign pointer is reported), through a
        // pointer that covers its free words (ours, or the heap's for short blocks).
        unsafe {
            slab::mark_free(object, &self.header, &self.geometry)
        };
        let id = self.header.id;
        // Objects this thread freed before, still in its magazines of this cache.
        let own = with_magazines(|magazines| {
            let slot = magazines.own_slot(id).filter(|_| id != NO_ID)?;
            let capacity = slot.capacity.load(Relaxed);
            let (loaded, previous) = slot.take_all();
            slot.capacity.store(capacity, Relaxed);
            Some((loaded, previous, slot.take_hits()))
        });
        self.locked_op(|state| {
            state.magazine_misses += 1;
            // SAFETY: lock held; a free object of ours (caller).
            unsafe { self.give_back(state, object) };
            if let Some((loaded, previous, hits)) = own {
                state.magazine_hits += u64::from(hits);
                // SAFETY: lock held; the magazines held free objects of ours and are out
                // of the calling thread's slot (an empty magazine gives back nothing).
                unsafe {
                    self.give_back_magazine(state, loaded);
                    self.give_back_magazine(state, previous);
                }
            }
            // SAFETY: lock held.
            unsafe { self.release_empty(state, 0) };
        });
    }

    /// # Safety
    /// As [`free`](Self::free).
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn free_slow(&self, object: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_slow_locked(object) };
        self.decay_if_requested(Operation::Free);
    }

    /// [`free_slow`](Self::free_slow) but for the decay pass.
    ///
    /// # Safety
    /// As [`free`](Self::free).
    #[inline(always)]
    unsafe fn free_slow_locked(&self, object: NonNull<u8>) {
        let link_offset = self.header.link_offset;
        if self.header.id != NO_ID {
            register_thread();
            let done = with_magazines(|magazines| {
                let Some(slot) = self.thread_slot(magazines) else {
                    return false;
                };
                let mut capacity = slot.capacity.load(Relaxed);
                if capacity == 0 {
                    capacity = self.thread_capacity_after_miss(0);
                    slot.capacity.store(capacity, Relaxed);
                }
                let mut loaded = slot.loaded();
                if loaded.count < capacity {
                    // SAFETY: a free object of ours (caller).
                    unsafe { loaded.push(object, link_offset) };
                    slot.set_loaded(loaded);
                    slot.count_hit();
                    return true;
                }
                let previous = slot.previous();
                if previous.count > 0 {
                    // Both magazines full: the previous one goes to the depot.
                    slot.capacity
                        .store(self.thread_capacity_after_miss(capacity), Relaxed);
                    let hits = slot.take_hits();
                    self.locked_op(|state| {
                        state.magazine_hits += u64::from(hits);
                        state.magazine_misses += 1;
                        if let Err(magazine) = self.deposit(state, previous) {
                            // SAFETY: lock held; the magazine's objects are free.
                            unsafe { self.give_back_magazine(state, magazine) };
                        }
                    });
                } else {
                    slot.count_hit();
                }
                slot.set_previous(loaded);
                let mut fresh = Magazine::EMPTY;
                // SAFETY: as above.
                unsafe { fresh.push(object, link_offset) };
                slot.set_loaded(fresh);
                true
            });
            if done {
                return;
            }
        }
        self.locked_op(|state| {
            state.magazine_misses += 1;
            // SAFETY: lock held; the object is free and ours (caller).
            unsafe { self.give_back(state, object) }
        });
    }

    /// The registry's flush callback (a thread's exit, the cache's destruction): takes a
    /// magazine back into the depot or slabs, then calls the
    /// [`set_space_returned`](Self::set_space_returned) hook.
    ///
    /// # Safety
    /// - `header` is the header of a live `CacheCore<S>`.
    /// - `magazine` holds free objects of that cache that nobody else refers to.
    unsafe fn flush_magazine(header: NonNull<CoreHeader>, magazine: Magazine) {
        // SAFETY: `header` is the first field of a `repr(C)` `CacheCore<S>` and carries
        // the provenance of the whole core (caller).
        let core = unsafe { header.cast::<Self>().as_ref() };
        // SAFETY: forwarded from the caller.
        unsafe { core.take_back(magazine) };
        core.space_returned(SpaceReturned::ThreadExit);
    }

    /// The registry's reclaim callback: gives a magazine taken from an idle thread back to
    /// the slabs. Not counted as an operation of the cache, so a class nobody uses still
    /// counts as idle in the decay pass that follows, which then releases its slabs.
    ///
    /// # Safety
    /// - As [`flush_magazine`](Self::flush_magazine).
    unsafe fn reclaim_magazine(header: NonNull<CoreHeader>, magazine: Magazine) {
        // SAFETY: as in `flush_magazine`.
        let core = unsafe { header.cast::<Self>().as_ref() };
        core.locked(|state| {
            // SAFETY: lock held; the objects are free objects of ours that nobody else
            // refers to (caller).
            unsafe { core.give_back_magazine(state, magazine) };
            core.space_returned(SpaceReturned::UnderLock);
        });
    }

    /// Stores a full magazine in the depot, or gives it back when the depot holds
    /// `max_depot_magazines`.
    fn deposit(&self, state: &mut State, magazine: Magazine) -> Result<(), Magazine> {
        if state.depot.magazines() >= self.max_depot_magazines {
            return Err(magazine);
        }
        state.depot.push_full(magazine)
    }

    /// Takes a magazine back into the depot (or the slabs when the depot is full).
    ///
    /// # Safety
    /// - `magazine` holds free objects of this cache that nobody else refers to.
    unsafe fn take_back(&self, magazine: Magazine) {
        self.locked_op(|state| {
            if let Err(magazine) = self.deposit(state, magazine) {
                // SAFETY: lock held; the objects are free (caller).
                unsafe { self.give_back_magazine(state, magazine) };
            }
        });
    }

    /// The capacity a thread's magazines of this cache take at a miss, when they had
    /// `current` (0: the thread's first miss): a page's worth of objects at first, then
    /// twice as many at every miss, up to the cache's magazine capacity.
    ///
    /// A magazine is filled whole at a miss and holds as many freed objects before the
    /// next: at the cache's full capacity from the first miss on (64 KiB of objects in
    /// the classes from 1 KiB up), a program that used a class a few times held a whole
    /// magazine's worth of it, resident, per thread (bash under `LD_PRELOAD` held
    /// 1.3 MiB more than under glibc). Growing the magazines with use costs a busy thread
    /// a few extra misses per class (four for 1 KiB objects: 4, 8, 16, 32, then 64;
    /// three for 64-byte objects: 64, 128, 256, then 512).
    fn thread_capacity_after_miss(&self, current: u32) -> u32 {
        let bound = self.header.magazine_capacity.load(Relaxed);
        self.page_worth.max(current.saturating_mul(2)).min(bound)
    }

    /// Takes up to `want` objects from the slabs, making slabs as needed. Fewer (maybe
    /// none) if the source fails.
    ///
    /// # Safety
    /// - The lock is held and `state` is this core's.
    unsafe fn take_from_slabs(
        &self,
        state: &mut State,
        want: u32,
        construct: Construct<'_>,
    ) -> Magazine {
        let geometry = &self.geometry;
        let mut magazine = Magazine::EMPTY;
        while magazine.count < want {
            let slab = if let Some(slab) = NonNull::new(state.partial.head) {
                slab
            } else {
                // SAFETY: lock held.
                let slab = match unsafe { state.empty.pop() } {
                    Some(slab) => slab,
                    None => match self.new_slab(state) {
                        Some(slab) => slab,
                        None => break,
                    },
                };
                // SAFETY: lock held; the slab is on no list.
                unsafe { state.partial.push(slab) };
                slab
            };
            // SAFETY: lock held; slabs on our lists are live.
            let header = unsafe { &mut *slab.as_ptr() };
            while magazine.count < want {
                // SAFETY: lock held, our geometry.
                let Some((object, fresh)) = (unsafe { header.take(geometry) }) else {
                    break;
                };
                if fresh && let Some(construct) = construct {
                    let _abort = AbortOnUnwind {
                        what: "an object constructor panicked inside the allocator",
                    };
                    construct(object);
                }
                state.objects_out += 1;
                // SAFETY: the object is free and ours; its link word is ours.
                unsafe { magazine.push(object, geometry.link_offset) };
            }
            if header.used == header.capacity {
                // SAFETY: lock held; the slab is on the partial list.
                unsafe {
                    state.partial.remove(slab);
                    state.full.push(slab);
                }
            }
        }
        magazine
    }

    /// Makes a fresh slab (on no list), or `None` when the source fails.
    fn new_slab(&self, state: &mut State) -> Option<NonNull<SlabHeader>> {
        let bytes = self.geometry.slab_bytes;
        let base = self.source.reserve_committed(bytes, SLAB_BYTES).ok()?;
        // SAFETY: a fresh reservation of the geometry's slab bytes aligned to SLAB_BYTES,
        // all ours; our header, registered at `init`.
        let slab = unsafe { slab::init(base, &self.geometry, &self.header) };
        if !slab_map::insert(base, bytes, slab::owner_tag(&self.header)) {
            // SAFETY: the reservation made above, unused.
            let _ = unsafe { self.source.release(base, bytes, SLAB_BYTES) };
            return None;
        }
        state.slabs_created += 1;
        Some(slab)
    }

    /// Returns every object of a magazine to its slab.
    ///
    /// # Safety
    /// - Lock held, `state` is ours; the magazine's objects are free objects of ours.
    unsafe fn give_back_magazine(&self, state: &mut State, mut magazine: Magazine) {
        // SAFETY: a chain of free objects of ours (caller).
        while let Some(object) = unsafe { self.pop(&mut magazine) } {
            // SAFETY: forwarded.
            unsafe { self.give_back(state, object) };
        }
    }

    /// Returns one object to its slab and moves the slab between lists.
    ///
    /// # Safety
    /// - Lock held, `state` is ours; `object` is a free object of ours.
    unsafe fn give_back(&self, state: &mut State, object: NonNull<u8>) {
        // The object's pointer may carry only the object's provenance (a user's `Box`);
        // header and free-list pointers are derived from the slab's base instead.
        let Some(base) = slab_map::lookup(object.addr().get() & !(SLAB_BYTES - 1)) else {
            crate::sync::fatal(
                "free of a pointer in no slab (object, cache)",
                object.addr().get(),
                ptr::from_ref(&self.header).addr(),
            );
        };
        let object = base.with_addr(object.addr());
        let slab = base.cast::<SlabHeader>();
        // SAFETY: the object's slab is one of ours (caller), guarded by the held lock.
        let header = unsafe { &mut *slab.as_ptr() };
        let was = header.list;
        // SAFETY: lock held, our geometry, free object of this slab.
        unsafe { header.give(&self.geometry, object) };
        state.objects_out -= 1;
        if self.purge_free_objects {
            self.purge(object);
        }
        if header.used == 0 {
            // SAFETY: lock held; the slab is on the list named by `was`.
            unsafe {
                match was {
                    ListKind::Partial => state.partial.remove(slab),
                    ListKind::Full => state.full.remove(slab),
                    ListKind::Empty => unreachable!("a free into an empty slab"),
                }
                state.empty.push(slab);
            }
            let hard_cap = self.empty_slabs_hard_cap();
            if state.empty.len > hard_cap {
                // A burst beyond any working set: trim to half the cap at once (the
                // halving is the hysteresis), without waiting for the epoch.
                // SAFETY: lock held.
                unsafe { self.release_empty(state, hard_cap / 2) };
            }
        } else if was == ListKind::Full {
            // SAFETY: lock held; the slab is on the full list.
            unsafe {
                state.full.remove(slab);
                state.partial.push(slab);
            }
        }
    }

    /// Gives back the whole pages of a free object after its free words (its first
    /// words: link and, when checked, free tag); a failure only leaves them resident.
    fn purge(&self, object: NonNull<u8>) {
        let page = pagekeep_mmap::sys::page_size();
        let free_words = slab::FREE_WORDS * size_of::<*mut u8>();
        let start = (object.addr().get() + free_words).next_multiple_of(page);
        let end = (object.addr().get() + self.geometry.slot_size) & !(page - 1);
        if start < end {
            let pages =
                object.with_addr(core::num::NonZeroUsize::new(start).unwrap_or(object.addr()));
            // SAFETY: the range is page-aligned and inside the object, which is free and
            // in its slab (the link word before `start` is not touched), inside a live
            // reservation of our source; `object` has the slab's provenance.
            let _ = unsafe {
                self.source
                    .decommit(pages, end - start, pagekeep_mmap::Decommit::Zero)
            };
        }
    }

    /// Counts a locked operation and, at the end of an epoch, applies the working-set
    /// rule of Bonwick & Adams (2001, section 3.3): full magazines and empty slabs that
    /// stayed unused for the whole epoch (the epoch's minimum) are surplus; the magazines
    /// go back to the slabs, and empty slabs beyond `max_empty_slabs` are released.
    /// Memory that was needed at any moment of the epoch is kept, so a program cycling
    /// between allocating and freeing does not pay for it again each cycle.
    ///
    /// # Safety
    /// - Lock held, `state` is ours.
    ///
    /// Every [`CONTENTION_WINDOW`] operations it also applies the contention rule (module
    /// docs): `contended` says whether this operation found the lock held.
    unsafe fn tick(&self, state: &mut State, contended: bool) {
        if contended {
            state.lock_contentions += 1;
            state.window_contentions += 1;
        }
        state.empty_low = state.empty_low.min(state.empty.len);
        state.depot_low = state.depot_low.min(state.depot.magazines());
        state.epoch_events = state.epoch_events.wrapping_add(1);
        state.ops = state.ops.wrapping_add(1);
        // Windows count `ops`, which an epoch's end does not reset (it resets
        // `epoch_events`, at any multiple of `CLOCK_EVENTS`): a window cut short by it
        // would leave its contentions to the next window.
        if state.ops.is_multiple_of(u64::from(CONTENTION_WINDOW)) {
            if state.window_contentions >= CONTENTION_THRESHOLD {
                self.grow_magazines(state);
            }
            state.window_contentions = 0;
        }
        if !state.epoch_events.is_multiple_of(CLOCK_EVENTS) {
            return;
        }
        // Reading the clock costs a vDSO call: only every `CLOCK_EVENTS` operations.
        let now = Instant::now();
        self.request_decay_if_due(now);
        if state.epoch_events >= EPOCH_EVENTS && now.duration_since(state.epoch_start) >= EPOCH_TIME
        {
            // SAFETY: forwarded (lock held).
            unsafe { self.end_epoch(state, now) };
        }
    }

    /// Ends the working-set epoch (see [`tick`](Self::tick)).
    ///
    /// # Safety
    /// - Lock held, `state` is ours.
    unsafe fn end_epoch(&self, state: &mut State, now: Instant) {
        state.epoch_start = now;
        // The floors (DEPOT_FLOOR magazines, `max_empty_slabs` slabs) are hysteresis for
        // a class that draws on what it keeps. One that never went below its starting
        // level all epoch needs none: a busy class with a small working set would
        // otherwise keep a freed peak's magazines (grown under contention to a slab's
        // worth each) and slabs for good.
        let depot_floor = if state.depot_low < state.depot_start {
            DEPOT_FLOOR
        } else {
            0
        };
        let surplus_magazines = state.depot_low.saturating_sub(depot_floor);
        for _ in 0..surplus_magazines {
            let Some(magazine) = state.depot.pop_full() else {
                break;
            };
            // SAFETY: lock held; depot objects are free objects of ours.
            unsafe { self.give_back_magazine(state, magazine) };
        }
        let slab_floor = if state.empty_low < state.empty_start {
            self.max_empty_slabs
        } else {
            0
        };
        let surplus_slabs = state.empty_low.saturating_sub(slab_floor);
        let keep = state
            .empty
            .len
            .saturating_sub(surplus_slabs)
            .max(slab_floor);
        // SAFETY: lock held.
        unsafe { self.release_empty(state, keep) };
        state.epoch_events = 0;
        state.empty_low = state.empty.len;
        state.depot_low = state.depot.magazines();
        state.empty_start = state.empty_low;
        state.depot_start = state.depot_low;
    }

    /// The first sibling (whose clock is the one used).
    fn first_sibling(&self) -> &Self {
        // SAFETY: siblings live as long as this core (`set_siblings`); `siblings` is
        // this core itself for a lone cache.
        unsafe { &*self.siblings }
    }

    /// The clock look of a thread whose operations on this cache hit its magazines
    /// ([`HITS_AT_LOOK`] of them, taken off its slot's count, credited here to the
    /// statistics): asks for a decay pass if one is due and runs it, so that a freed
    /// peak goes back while a program works from its magazines alone. Called with no
    /// lock held and no magazine borrowed.
    #[cold]
    #[inline(never)]
    pub(crate) fn look_from_magazine_hits(&self) {
        self.hits_at_looks
            .fetch_add(u64::from(HITS_AT_LOOK), Relaxed);
        self.clock_from_magazines(Operation::Free);
    }

    /// [`look_from_magazine_hits`](Self::look_from_magazine_hits)'s look at the clock, and
    /// that of a heap's large operation: asks for a decay pass if one is due and runs
    /// it. Called with no lock held and no magazine borrowed.
    #[cold]
    #[inline(never)]
    pub(crate) fn clock_from_magazines(&self, operation: Operation) {
        self.request_decay_if_due(Instant::now());
        self.decay_if_requested(operation);
    }

    /// Asks for a decay pass if one is due at `now` (only one caller per interval wins).
    fn request_decay_if_due(&self, now: Instant) {
        let clock = &self.first_sibling().clock;
        let elapsed =
            u64::try_from(now.saturating_duration_since(clock.base).as_nanos()).unwrap_or(u64::MAX);
        let due = clock.due_nanos.load(Relaxed);
        if elapsed >= due
            && clock
                .due_nanos
                .compare_exchange(
                    due,
                    elapsed.saturating_add(DECAY_INTERVAL.as_nanos() as u64),
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
        {
            clock.requested.store(true, Relaxed);
        }
    }

    /// Runs the decay pass an operation asked for, if any, and the hook if `operation`
    /// is an allocation (a free leaves it to the next allocation's slow path): called at
    /// the end of the slow paths, with no lock held and no magazine borrowed.
    #[inline]
    fn decay_if_requested(&self, operation: Operation) {
        let clock = &self.first_sibling().clock;
        if clock.requested.load(Relaxed) && clock.requested.swap(false, Relaxed) {
            if clock.hook.is_some() {
                clock.hook_pending.store(true, Relaxed);
            }
            self.decay_siblings(Instant::now());
        }
        if operation == Operation::Allocation
            && clock.hook_pending.load(Relaxed)
            && clock.hook_pending.swap(false, Relaxed)
            && let Some(hook) = clock.hook
        {
            run_decay_hook(hook);
        }
    }

    /// A decay pass over every sibling (module docs). Takes no lock that is held.
    ///
    /// It first takes back the magazines of threads that stayed idle since the previous
    /// pass, of every cache ([`registry::reclaim_threads`]).
    pub(crate) fn decay_siblings(&self, now: Instant) {
        registry::reclaim_threads(registry::Reclaim::Idle(now));
        for index in 0..self.sibling_count {
            // SAFETY: `index < sibling_count`, siblings live as long as this core.
            let sibling = unsafe { &*self.siblings.add(index) };
            sibling.decay(now);
        }
        // SAFETY: set by `set_siblings` to a cache that lives as long as the siblings.
        if let Some(large) = unsafe { self.first_sibling().clock.large.as_ref() } {
            large.decay(now);
        }
    }

    /// This cache's part of a decay pass: an idle cache (no locked operation since the
    /// previous pass) gives back the calling thread's magazines of it, its depot and its
    /// empty slabs; a busy one ends an epoch older than [`EPOCH_TIME`].
    fn decay(&self, now: Instant) {
        let Some(_guard) = self.header.lock.try_guard() else {
            return;
        };
        // SAFETY: the lock is held until the end of the function; the state is only
        // accessed under it.
        let state = unsafe { &mut *self.state.get() };
        let id = self.header.id;
        // The calling thread's magazine hits on this cache since its last depot exchange
        // or pass: work served by its magazines makes the cache busy, as locked operations
        // do. A pass that a free's clock look runs comes from such a thread, and used to
        // take its magazines, the depot and the empty slabs every interval, as from an
        // idle cache.
        let own_hits = with_magazines(|magazines| {
            magazines
                .own_slot(id)
                .filter(|_| id != NO_ID)
                .map_or(0, |slot| slot.take_hits())
        });
        state.magazine_hits += u64::from(own_hits);
        let idle = state.ops == state.ops_at_decay && own_hits == 0;
        state.ops_at_decay = state.ops;
        if idle {
            let own = with_magazines(|magazines| {
                let slot = magazines.own_slot(id).filter(|_| id != NO_ID)?;
                if slot.loaded().count == 0 && slot.previous().count == 0 {
                    return None;
                }
                let capacity = slot.capacity.load(Relaxed);
                let (loaded, previous) = slot.take_all();
                slot.capacity.store(capacity, Relaxed);
                Some((loaded, previous, slot.take_hits()))
            });
            if let Some((loaded, previous, hits)) = own {
                state.magazine_hits += u64::from(hits);
                // SAFETY: lock held; the magazines held free objects of ours and are out
                // of the calling thread's slot.
                unsafe {
                    self.give_back_magazine(state, loaded);
                    self.give_back_magazine(state, previous);
                }
            }
            while let Some(magazine) = state.depot.pop_full() {
                // SAFETY: lock held; depot objects are free objects of ours.
                unsafe { self.give_back_magazine(state, magazine) };
            }
            // SAFETY: lock held.
            unsafe { self.release_empty(state, 0) };
            state.epoch_start = now;
            state.epoch_events = 0;
            state.empty_low = 0;
            state.depot_low = 0;
            state.empty_start = 0;
            state.depot_start = 0;
        } else if now.saturating_duration_since(state.epoch_start) >= EPOCH_TIME {
            // SAFETY: lock held.
            unsafe { self.end_epoch(state, now) };
        }
        #[cfg(feature = "invariant-checks")]
        Self::check_state(&self.geometry, state, self);
    }

    /// The most empty slabs kept between epochs: `8 * max_empty_slabs + 8` slabs of
    /// [`SLAB_BYTES`], in bytes, so a cache of bigger slabs keeps fewer of them (but never
    /// fewer than `max_empty_slabs + 1`).
    ///
    /// Saturates: a `max_empty_slabs` near `usize::MAX` means no cap.
    fn empty_slabs_hard_cap(&self) -> usize {
        let slabs = self.max_empty_slabs.saturating_mul(8).saturating_add(8);
        (slabs.saturating_mul(SLAB_BYTES) / self.geometry.slab_bytes)
            .max(self.max_empty_slabs.saturating_add(1))
    }

    /// Doubles the magazine size, up to its bound.
    fn grow_magazines(&self, state: &mut State) {
        let capacity = self.header.magazine_capacity.load(Relaxed);
        if capacity < self.max_magazine_capacity {
            let grown = capacity.saturating_mul(2).min(self.max_magazine_capacity);
            self.header.magazine_capacity.store(grown, Relaxed);
            state.magazine_resizes += 1;
        }
    }

    /// Releases empty slabs until at most `keep` remain.
    ///
    /// # Safety
    /// - Lock held, `state` is ours.
    unsafe fn release_empty(&self, state: &mut State, keep: usize) {
        let mut released = false;
        while state.empty.len > keep {
            // SAFETY: lock held.
            let Some(slab) = (unsafe { state.empty.pop() }) else {
                break;
            };
            // SAFETY: an empty slab of ours, off every list.
            unsafe { self.release_slab(state, slab) };
            released = true;
        }
        if released {
            self.space_returned(SpaceReturned::UnderLock);
        }
    }

    /// Destroys the constructed free objects of a slab and gives it back to the source.
    ///
    /// # Safety
    /// - Lock held (or exclusive access); the slab is ours, on no list, and every object
    ///   of it that is not free is never used again.
    unsafe fn release_slab(&self, state: &mut State, slab: NonNull<SlabHeader>) {
        // SAFETY: ours, lock held.
        let header = unsafe { &mut *slab.as_ptr() };
        if let Some(drop_object) = self.drop_object {
            if header.used == 0 {
                // SAFETY: every carved object is free and was constructed.
                header.for_each_carved(&self.geometry, |object| unsafe { drop_object(object) });
            } else {
                // Only the free ones (the rest were leaked by their users).
                // SAFETY: as for `check`: lock held, free objects carry links.
                let mut free = slab::free_list_of(header);
                while let Some(object) = NonNull::new(free) {
                    // SAFETY: free objects of a constructed cache hold valid objects
                    // and a link written by `give`.
                    free = unsafe {
                        object
                            .add(self.geometry.link_offset)
                            .cast::<*mut u8>()
                            .read()
                    };
                    // SAFETY: as above.
                    unsafe { drop_object(object) };
                }
            }
        }
        let base = slab.cast::<u8>();
        let base = NonNull::new(header.base).unwrap_or(base);
        let bytes = self.geometry.slab_bytes;
        slab_map::remove(base, bytes);
        // SAFETY: the slab is a reservation of the geometry's slab bytes aligned to
        // SLAB_BYTES made by our source (`new_slab`) and not used afterwards.
        let _ = unsafe { self.source.release(base, bytes, SLAB_BYTES) };
        state.slabs_released += 1;
    }

    /// Gives the calling thread's magazines back to the depot.
    pub(crate) fn flush_thread(&self) {
        let id = self.header.id;
        if id == NO_ID {
            return;
        }
        let taken = with_magazines(|magazines| {
            let slot = magazines.own_slot(id)?;
            let capacity = slot.capacity.load(Relaxed);
            let (loaded, previous) = slot.take_all();
            slot.capacity.store(capacity, Relaxed);
            Some((loaded, previous, slot.take_hits()))
        });
        let Some((loaded, previous, hits)) = taken else {
            return;
        };
        if loaded.count == 0 && previous.count == 0 && hits == 0 {
            // Nothing to flush: not an operation of the cache (a thread that reads the
            // statistics does not keep an idle cache from decaying).
            return;
        }
        self.locked_op(|state| {
            state.magazine_hits += u64::from(hits);
            for magazine in [loaded, previous] {
                if let Err(magazine) = self.deposit(state, magazine) {
                    // SAFETY: lock held; the magazine's objects are free objects of ours,
                    // out of the slot (an empty magazine gives back nothing).
                    unsafe { self.give_back_magazine(state, magazine) };
                }
            }
        });
    }

    /// Checks the free words a write past the end of a block reaches first: the frontier
    /// of every slab that has one (the first object never carved, which follows the
    /// last one carved) and every object of the calling thread's magazines. Aborts with
    /// a message naming the object on the first overwritten one.
    #[cfg(any(debug_assertions, feature = "hardened"))]
    pub(crate) fn check_free_words(&self) {
        self.locked(|state| {
            for list in [&state.partial, &state.empty] {
                let mut slab = list.head;
                while let Some(current) = NonNull::new(slab) {
                    // SAFETY: slabs on our lists are live; the lock is held.
                    let header = unsafe { current.as_ref() };
                    if let Some(frontier) = header.frontier(&self.geometry) {
                        slab::check_free(frontier, &self.header, &self.geometry);
                    }
                    slab = header.next;
                }
            }
        });
        let id = self.header.id;
        if id == NO_ID {
            return;
        }
        with_magazines(|magazines| {
            let Some(slot) = magazines.own_slot(id) else {
                return;
            };
            for mut magazine in [slot.loaded(), slot.previous()] {
                // SAFETY: a copy of the calling thread's magazine: a chain of free objects
                // of ours, walked (each checked before its link word is read) and left
                // as it is.
                while unsafe { self.pop(&mut magazine) }.is_some() {}
            }
        });
    }

    /// Empties the depot and releases every empty slab.
    pub(crate) fn trim(&self) {
        self.locked(|state| {
            while let Some(magazine) = state.depot.pop_full() {
                // SAFETY: lock held; depot objects are free objects of ours.
                unsafe { self.give_back_magazine(state, magazine) };
            }
            // SAFETY: lock held.
            unsafe { self.release_empty(state, 0) };
        });
    }

    /// Statistics (flushes the calling thread's magazines first, so that its cached
    /// objects do not count as live).
    pub(crate) fn stats(&self) -> CacheStats {
        self.flush_thread();
        // Objects a pass took from a thread's magazines are counted out until the pass
        // gives them back: let any such pass finish (it may have taken this thread's).
        #[cfg(feature = "reclaim-idle-threads")]
        registry::wait_for_reclaims();
        self.locked(|state| CacheStats {
            object_size: self.geometry.slot_size,
            objects_per_slab: self.geometry.capacity,
            objects_live: state.objects_out - state.depot.objects(),
            objects_in_depot: state.depot.objects(),
            magazines_in_depot: state.depot.magazines(),
            slabs_partial: state.partial.len,
            slabs_full: state.full.len,
            slabs_empty: state.empty.len,
            bytes_committed: (state.partial.len + state.full.len + state.empty.len)
                * self.geometry.slab_bytes,
            slabs_created: state.slabs_created,
            slabs_released: state.slabs_released,
            magazine_hits: state.magazine_hits + self.hits_at_looks.load(Relaxed),
            magazine_misses: state.magazine_misses,
            magazine_capacity: self.header.magazine_capacity.load(Relaxed),
            magazine_resizes: state.magazine_resizes,
            lock_contentions: state.lock_contentions,
        })
    }

    /// Walks every list and checks every counter; panics on the first inconsistency.
    pub(crate) fn check_invariants(&self) {
        self.locked(|state| Self::check_state(&self.geometry, state, self));
    }

    fn check_state(geometry: &Geometry, state: &State, core: &Self) {
        let mut used = 0usize;
        for (list, kind) in [
            (&state.partial, ListKind::Partial),
            (&state.full, ListKind::Full),
            (&state.empty, ListKind::Empty),
        ] {
            let mut count = 0;
            let mut slab = list.head;
            while let Some(current) = NonNull::new(slab) {
                // SAFETY: slabs on our lists are live; the caller holds the lock.
                let header = unsafe { current.as_ref() };
                assert_eq!(header.list, kind, "slab {current:p} on the wrong list");
                assert!(
                    ptr::eq(header.owner, &core.header),
                    "slab {current:p} has another owner"
                );
                header.check(geometry);
                match kind {
                    ListKind::Empty => {
                        assert_eq!(header.used, 0, "empty slab {current:p} has objects out")
                    }
                    ListKind::Full => assert_eq!(
                        header.used, header.capacity,
                        "full slab {current:p} is not full"
                    ),
                    ListKind::Partial => assert!(
                        header.used > 0 && header.used < header.capacity,
                        "partial slab {current:p} is empty or full ({} of {})",
                        header.used,
                        header.capacity
                    ),
                }
                used += header.used as usize;
                count += 1;
                slab = header.next;
            }
            assert_eq!(count, list.len, "list length of {kind:?} slabs is off");
        }
        assert_eq!(
            used, state.objects_out,
            "objects out of slabs != sum of slab use"
        );
        assert!(
            state.empty.len <= core.empty_slabs_hard_cap(),
            "more empty slabs than the hard cap"
        );
        assert!(state.depot.objects() <= state.objects_out);
    }

    /// Unregisters the core (taking back every thread's magazines), releases every slab
    /// and the core's own block.
    ///
    /// # Safety
    /// - `core` was initialised with [`init`](Self::init), nobody uses it concurrently or
    ///   afterwards, and objects still out are never used again.
    /// - `release_block` gives the core's memory back; it gets the core's source.
    pub(crate) unsafe fn destroy(core: NonNull<Self>) -> S {
        // SAFETY: initialised and registered (caller).
        unsafe { registry::unregister_core(core.cast::<CoreHeader>()) };
        // An async heap's budgets that the magazines taken back queued are announced
        // outside the registry's lock (see `async_heap::announce_deferred`).
        crate::async_heap::announce_deferred();
        // SAFETY: exclusive access from here on (caller).
        let this = unsafe { core.as_ref() };
        this.locked(|state| {
            while let Some(magazine) = state.depot.pop_full() {
                // SAFETY: lock held; free objects of ours.
                unsafe { this.give_back_magazine(state, magazine) };
            }
            loop {
                // SAFETY: lock held (we are inside `locked`).
                let slab = unsafe {
                    match state.partial.pop() {
                        Some(slab) => Some(slab),
                        None => match state.full.pop() {
                            Some(slab) => Some(slab),
                            None => state.empty.pop(),
                        },
                    }
                };
                let Some(slab) = slab else { break };
                // SAFETY: ours, off every list, nothing uses its objects any more.
                unsafe { this.release_slab(state, slab) };
            }
        });
        // SAFETY: we own the core; the source is moved out once and the rest of the core
        // has no destructor.
        unsafe { ptr::read(&raw const (*core.as_ptr()).source) }
    }
}

impl<S: PageSource> fmt::Debug for CacheCore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheCore")
            .field("id", &self.header.id)
            .field(
                "magazine_capacity",
                &self.header.magazine_capacity.load(Relaxed),
            )
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

/// Why a cache could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheError {
    /// The size or alignment cannot be served by a slab: alignment not a power of two or
    /// above 32 KiB, or an object larger than half a slab.
    UnsupportedLayout,
    /// The page source refused the cache's bookkeeping block.
    Source(pagekeep_mmap::Error),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::UnsupportedLayout => f.write_str("object layout not supported by slabs"),
            CacheError::Source(error) => write!(f, "page source failed: {error}"),
        }
    }
}

impl std::error::Error for CacheError {}

/// A core made by [`new_core`] and its depot's slots, in one block.
#[repr(C)]
struct CoreBlock<S: PageSource> {
    core: CacheCore<S>,
    depot_slots: UnsafeCell<DepotSlots>,
}

/// Reserves a block from `source` and builds a core in it.
pub(crate) fn new_core<S: PageSource>(
    config: CoreConfig,
    source: S,
) -> Result<NonNull<CacheCore<S>>, CacheError> {
    let bytes = size_of::<CoreBlock<S>>();
    let align = align_of::<CoreBlock<S>>();
    let block = source
        .reserve_committed(bytes, align)
        .map_err(CacheError::Source)?
        .cast::<CoreBlock<S>>();
    // The core is the block's first field: the block's address, with its provenance.
    let place = block.cast::<CacheCore<S>>();
    // SAFETY: a field of the fresh block (no reference to it exists): in bounds of a
    // non-null allocation, so non-null.
    let slots = unsafe {
        NonNull::new_unchecked(UnsafeCell::raw_get(
            &raw const (*block.as_ptr()).depot_slots,
        ))
    };
    // SAFETY: a fresh, zeroed block of the right size and alignment (page-aligned), which
    // the core owns until `free_core`; the slots are its own part of it, which only the
    // core's depot touches.
    unsafe { CacheCore::init(place, config, source, slots) };
    Ok(place)
}

/// Destroys a core made by [`new_core`] and releases its block.
///
/// # Safety
/// - As [`CacheCore::destroy`].
pub(crate) unsafe fn free_core<S: PageSource>(core: NonNull<CacheCore<S>>) {
    // SAFETY: forwarded.
    let source = unsafe { CacheCore::destroy(core) };
    // SAFETY: the block was reserved by `new_core` from this very source with this size
    // and alignment (the core starts it), and nothing uses it any more.
    let _ = unsafe {
        source.release(
            core.cast::<u8>(),
            size_of::<CoreBlock<S>>(),
            align_of::<CoreBlock<S>>(),
        )
    };
}

/// An untyped object cache: allocates objects of one size and alignment from slabs,
/// with per-thread magazines in front.
///
/// Frees may come from any thread; a free goes to the freeing thread's magazine.
///
/// # Examples
///
/// ```
/// use pagekeep_slab::SlabCache;
///
/// let cache = SlabCache::new(48, 16)?;
/// let object = cache.alloc();
/// assert_eq!(object.addr().get() % 16, 0);
/// // SAFETY: 48 writable bytes.
/// unsafe { object.write_bytes(0xAB, 48) };
/// // SAFETY: allocated from this cache above, not used afterwards.
/// unsafe { cache.free(object) };
/// assert_eq!(cache.stats().objects_live, 0);
/// # Ok::<(), pagekeep_slab::CacheError>(())
/// ```
pub struct SlabCache<S: PageSource = DefaultPages> {
    core: NonNull<CacheCore<S>>,
    _owns: PhantomData<CacheCore<S>>,
}

// SAFETY: the core is Sync/Send under these bounds (see `CacheCore`).
unsafe impl<S: PageSource + Sync + Send> Sync for SlabCache<S> {}
// SAFETY: as above.
unsafe impl<S: PageSource + Send> Send for SlabCache<S> {}

/// Options of a [`SlabCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes per object.
    pub object_size: usize,
    /// Alignment of every object (a power of two; at least the pointer size is used).
    pub align: usize,
    /// Empty slabs kept for reuse before some are released (the working-set bound). Any
    /// value works: 0 keeps none beyond the hard cap's hysteresis, `usize::MAX` keeps
    /// every empty slab until [`SlabCache::trim`].
    pub max_empty_slabs: usize,
    /// Objects per magazine at first; `None` picks one by object size (64 KiB worth, 4
    /// to 512). Clamped to between 1 and the objects of one slab.
    pub magazine_capacity: Option<u32>,
    /// The bound up to which the magazine size grows when the cache lock is contended;
    /// `None` picks one by object size (256 KiB worth, 16 to 512). A bound at or below
    /// the first size turns the growth off; above the objects of one slab, that many is
    /// the bound.
    pub max_magazine_capacity: Option<u32>,
    /// Whether threads get magazines (else every operation takes the cache lock).
    pub magazines: bool,
}

impl CacheConfig {
    /// The defaults for objects of `object_size` bytes aligned to `align`.
    pub const fn new(object_size: usize, align: usize) -> Self {
        CacheConfig {
            object_size,
            align,
            max_empty_slabs: 4,
            magazine_capacity: None,
            max_magazine_capacity: None,
            magazines: true,
        }
    }
}

impl SlabCache<DefaultPages> {
    /// A cache for objects of `object_size` bytes aligned to `align`, with pages from
    /// the OS.
    ///
    /// # Errors
    /// [`CacheError::UnsupportedLayout`] for layouts slabs cannot serve;
    /// [`CacheError::Source`] if the bookkeeping block cannot be mapped.
    pub fn new(object_size: usize, align: usize) -> Result<Self, CacheError> {
        Self::with_config(
            CacheConfig::new(object_size, align),
            DefaultPages::default(),
        )
    }
}

impl<S: PageSource> SlabCache<S> {
    /// A cache configured by `config` that takes its pages from `source`.
    ///
    /// # Errors
    /// As [`SlabCache::new`].
    pub fn with_config(config: CacheConfig, source: S) -> Result<Self, CacheError> {
        let geometry = Geometry::new(config.object_size, config.align, false)
            .ok_or(CacheError::UnsupportedLayout)?;
        let core = new_core(
            CoreConfig {
                geometry,
                max_empty_slabs: config.max_empty_slabs,
                magazine_capacity: config
                    .magazine_capacity
                    .unwrap_or_else(|| default_magazine_capacity(geometry.slot_size)),
                max_magazine_capacity: config
                    .max_magazine_capacity
                    .unwrap_or_else(|| default_max_magazine_capacity(geometry.slot_size)),
                max_depot_magazines: DEPOT_MAGAZINES,
                purge_free_objects: false,
                magazines: config.magazines,
                drop_object: None,
            },
            source,
        )?;
        Ok(SlabCache {
            core,
            _owns: PhantomData,
        })
    }

    fn core(&self) -> &CacheCore<S> {
        // SAFETY: the core lives until `self` is dropped.
        unsafe { self.core.as_ref() }
    }

    /// The layout of every object (size is the slot size, at least the requested one).
    pub fn layout(&self) -> Layout {
        let geometry = &self.core().geometry;
        // The geometry was validated when the cache was made.
        Layout::from_size_align(geometry.slot_size, geometry.align).unwrap_or(Layout::new::<u8>())
    }

    /// Allocates an object (uninitialised).
    ///
    /// # Errors
    /// [`AllocError`] when the page source is exhausted.
    #[inline(always)]
    pub fn try_alloc(&self) -> Result<NonNull<u8>, AllocError> {
        self.core().alloc(None).ok_or(AllocError)
    }

    /// Allocates an object (uninitialised); calls [`std::alloc::handle_alloc_error`]
    /// when memory is exhausted.
    #[inline(always)]
    pub fn alloc(&self) -> NonNull<u8> {
        match self.try_alloc() {
            Ok(object) => object,
            Err(AllocError) => self.alloc_failed(),
        }
    }

    #[cold]
    #[inline(never)]
    fn alloc_failed(&self) -> ! {
        std::alloc::handle_alloc_error(self.layout())
    }

    /// Frees an object, from any thread.
    ///
    /// # Safety
    /// - `object` was allocated from this cache and not freed since.
    /// - It is not used afterwards.
    #[inline(always)]
    pub unsafe fn free(&self, object: NonNull<u8>) {
        // SAFETY: forwarded from the caller.
        unsafe { self.core().free(object) }
    }

    /// Statistics. Objects cached in the calling thread's magazines are flushed to the
    /// depot first; objects cached by other threads still count as live.
    pub fn stats(&self) -> CacheStats {
        self.core().stats()
    }

    /// Returns the calling thread's magazines to the depot.
    pub fn flush_thread_cache(&self) {
        self.core().flush_thread();
    }

    /// Empties the depot into the slabs and releases every empty slab.
    pub fn trim(&self) {
        self.core().trim();
    }

    /// Walks every slab list and free list and checks every counter.
    ///
    /// # Panics
    /// On the first inconsistency, naming the slab.
    pub fn check_invariants(&self) {
        self.core().check_invariants();
    }

    /// The page source.
    pub fn source(&self) -> &S {
        self.core().source()
    }
}

impl<S: PageSource> Drop for SlabCache<S> {
    fn drop(&mut self) {
        // SAFETY: we own the core; objects still out are the caller's to never use again
        // (documented on `free`: they belong to the cache).
        unsafe { free_core(self.core) };
    }
}

impl<S: PageSource> fmt::Debug for SlabCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabCache")
            .field("layout", &self.layout())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(initial: u32, bound: u32) -> SlabCache {
        SlabCache::with_config(
            CacheConfig {
                magazine_capacity: Some(initial),
                max_magazine_capacity: Some(bound),
                ..CacheConfig::new(64, 8)
            },
            DefaultPages::default(),
        )
        .unwrap()
    }

    /// Makes one locked operation of `core` meet contention: the lock is held while
    /// another thread attempts it (retried until that thread's first attempt did find
    /// the lock held, which a slow thread start could prevent).
    fn contended_op(core: &CacheCore<DefaultPages>) {
        use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
        loop {
            let before = core.locked(|state| state.lock_contentions);
            let guard = core.header.lock.guard();
            let started = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let waiter = scope.spawn(|| {
                    started.store(true, SeqCst);
                    core.locked_op(|_| ());
                });
                while !started.load(SeqCst) {
                    std::thread::yield_now();
                }
                std::thread::sleep(Duration::from_millis(2));
                drop(guard);
                waiter.join().unwrap();
            });
            if core.locked(|state| state.lock_contentions) > before {
                return;
            }
        }
    }

    /// Runs locked operations until the current contention window ends, `contended` of
    /// them (from its start) contended.
    fn window(core: &CacheCore<DefaultPages>, contended: u32) {
        for _ in 0..contended {
            contended_op(core);
        }
        let window = u64::from(CONTENTION_WINDOW);
        let left = core.locked(|state| window - state.ops % window);
        for _ in 0..left {
            core.locked_op(|_| ());
        }
    }

    /// A thread's magazines of a class start at a page's worth of objects (at most 8
    /// under miri) and double at every miss, up to the cache's capacity: a miss fills a
    /// magazine of that many.
    #[test]
    fn a_threads_magazines_grow_from_a_page_of_objects() {
        let page = pagekeep_mmap::sys::page_size();
        // Turns the thread's magazines on (registers the thread) and gives the warm-up
        // cache its first magazine, so that the cache below starts from a thread that
        // has magazines.
        let warm_up = cache(4, 4);
        let object = warm_up.alloc();
        // SAFETY: allocated just above, freed once.
        unsafe { warm_up.free(object) };
        drop(warm_up);
        for size in [64, 1024, 4096, 16384] {
            let cache = SlabCache::with_config(
                CacheConfig {
                    magazine_capacity: Some(64),
                    max_magazine_capacity: Some(64),
                    ..CacheConfig::new(size, 8)
                },
                DefaultPages::default(),
            )
            .unwrap();
            let core = cache.core();
            let slot = core.geometry.slot_size;
            let bound = cache.stats().magazine_capacity as usize;
            let thread_capacity = || {
                with_magazines(|magazines| {
                    magazines
                        .existing_slot(core.header.id)
                        .map(|slot| slot.capacity.load(Relaxed))
                })
            };
            // A page's worth, at most 8 under miri (`first_magazine_capacity`).
            let page_worth = (page / slot).max(1);
            let first = if cfg!(miri) {
                page_worth.min(8)
            } else {
                page_worth
            };
            let mut expected = first.min(bound);
            let mut objects = Vec::new();
            let mut out = 0;
            for miss in 0..8 {
                // The loaded magazine is empty: this allocation misses, fills a magazine
                // of `expected` objects and takes one.
                objects.push(cache.alloc());
                out += expected;
                // (Read under the lock: `stats` would first hand the thread's
                // magazines to the depot.)
                assert_eq!(
                    core.locked(|state| state.objects_out),
                    out,
                    "{slot} B, miss {miss}: objects out of the slabs"
                );
                assert_eq!(
                    thread_capacity(),
                    Some(u32::try_from(expected).unwrap()),
                    "{slot} B, miss {miss}"
                );
                objects.extend((1..expected).map(|_| cache.alloc()));
                expected = (expected * 2).min(bound);
            }
            for object in objects {
                // SAFETY: allocated above, freed once.
                unsafe { cache.free(object) };
            }
            cache.check_invariants();
        }
    }

    /// A thread that only frees a class's objects starts at a page's worth of them too,
    /// and doubles when both of its magazines are full.
    #[test]
    fn a_freeing_threads_magazines_grow_from_a_page_of_objects() {
        struct Objects(Vec<NonNull<u8>>);
        // SAFETY: objects of the cache, handed to the thread that frees them.
        unsafe impl Send for Objects {}
        let cache = SlabCache::with_config(
            CacheConfig {
                magazine_capacity: Some(64),
                max_magazine_capacity: Some(64),
                ..CacheConfig::new(1024, 8)
            },
            DefaultPages::default(),
        )
        .unwrap();
        let core = cache.core();
        // A page's worth (4 objects of 1 KiB; the cap of 8 under miri does not apply).
        let page_worth = u32::try_from(pagekeep_mmap::sys::page_size() / core.geometry.slot_size)
            .unwrap()
            .max(1);
        let objects = Objects((0..3 * page_worth).map(|_| cache.alloc()).collect());
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let objects = objects;
                // Turns this thread's magazines on (registers the thread), as above.
                let warm_up = super::tests::cache(4, 4);
                let object = warm_up.alloc();
                // SAFETY: allocated just above, freed once.
                unsafe { warm_up.free(object) };
                drop(warm_up);
                let capacity = || {
                    with_magazines(|magazines| {
                        magazines
                            .existing_slot(core.header.id)
                            .map(|slot| slot.capacity.load(Relaxed))
                    })
                };
                let mut objects = objects.0.into_iter();
                let mut free = || {
                    // SAFETY: allocated by `cache`, freed once.
                    unsafe { cache.free(objects.next().unwrap()) };
                };
                free();
                assert_eq!(capacity(), Some(page_worth), "the first free");
                // Both magazines full: `page_worth` objects each.
                for _ in 1..2 * page_worth {
                    free();
                }
                assert_eq!(capacity(), Some(page_worth), "both magazines full");
                // The next free sends one to the depot and doubles the size.
                free();
                assert_eq!(capacity(), Some(2 * page_worth), "a depot exchange");
            });
        });
        cache.check_invariants();
    }

    #[test]
    fn contention_grows_magazines_up_to_the_bound() {
        let cache = cache(4, 20);
        let core = cache.core();
        // Finish the window the cache creation may have started.
        window(core, 0);
        assert_eq!(cache.stats().magazine_capacity, 4);
        window(core, CONTENTION_THRESHOLD - 1);
        let stats = cache.stats();
        assert_eq!(stats.magazine_capacity, 4, "below the threshold: no growth");
        assert!(stats.lock_contentions >= u64::from(CONTENTION_THRESHOLD - 1));
        window(core, CONTENTION_THRESHOLD);
        assert_eq!(cache.stats().magazine_capacity, 8);
        window(core, CONTENTION_THRESHOLD);
        assert_eq!(cache.stats().magazine_capacity, 16);
        window(core, CONTENTION_THRESHOLD);
        assert_eq!(
            cache.stats().magazine_capacity,
            20,
            "doubling stops at the bound"
        );
        window(core, CONTENTION_THRESHOLD);
        let stats = cache.stats();
        assert_eq!(stats.magazine_capacity, 20);
        assert_eq!(stats.magazine_resizes, 3);

        // A thread takes up the new size at its next depot exchange: it now caches 20
        // objects per magazine, so 40 frees after 40 allocations reach the depot once
        // (the previous magazine going back when both are full) at most.
        let objects: Vec<_> = (0..40).map(|_| cache.alloc()).collect();
        let misses = cache.stats().magazine_misses;
        for object in objects {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
        assert!(cache.stats().magazine_misses - misses <= 1);
        with_magazines(|magazines| {
            let slot = magazines.existing_slot(core.header.id).unwrap();
            assert_eq!(slot.capacity.load(Relaxed), 20);
        });
        cache.check_invariants();
    }

    #[test]
    fn an_epoch_ending_in_the_middle_of_a_window_keeps_its_contentions() {
        let cache = cache(4, 20);
        let core = cache.core();
        window(core, 0);
        // The epoch is long enough in events and overdue in time: the next clock read
        // (at a multiple of `CLOCK_EVENTS` epoch events) ends it, 64 operations into the
        // window below.
        core.locked(|state| {
            state.epoch_events = EPOCH_EVENTS;
            state.epoch_start = Instant::now()
                .checked_sub(EPOCH_TIME * 2)
                .unwrap_or(state.epoch_start);
        });
        window(core, CONTENTION_THRESHOLD);
        assert!(
            core.locked(|state| state.epoch_events) < EPOCH_EVENTS,
            "the epoch ended"
        );
        assert_eq!(
            cache.stats().magazine_capacity,
            8,
            "the window's contentions counted"
        );
    }

    #[test]
    fn a_bound_at_the_first_size_turns_growth_off() {
        let cache = cache(8, 8);
        window(cache.core(), 0);
        window(cache.core(), CONTENTION_WINDOW / 8);
        let stats = cache.stats();
        assert_eq!(stats.magazine_capacity, 8);
        assert_eq!(stats.magazine_resizes, 0);
        assert!(stats.lock_contentions >= u64::from(CONTENTION_WINDOW / 8));
    }
}
