//! [`SlabHeap`]: a general-purpose allocator of size classes, each a slab cache with
//! per-thread magazines; large blocks come from [`MmapAlloc`].

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicUsize, Ordering};

use allocator_api2::alloc::{AllocError, Allocator};
use pagekeep_mmap::{DefaultPages, MmapAlloc, PageSource};

use crate::cache::{
    CacheCore, CoreConfig, FastFree, Operation, SpaceReturned, default_magazine_capacity,
    default_max_magazine_capacity,
};
use crate::depot::{DEPOT_MAGAZINES, DepotSlots};
use crate::large_cache::LargeCache;
use crate::magazine::SLOT_BYTES;
use crate::registry::NO_ID;
use crate::size_class::{
    CLASS_COUNT, CLASS_SIZES, MAX_MEDIUM, class_align, class_for, class_up_to_1024_aligned_16,
};
use crate::slab::{Geometry, SLAB_BYTES, heap_class_geometry};
use crate::stats::HeapStats;
use crate::sync::CachePadded;

/// The classes of a heap.
type Classes<S> = [CacheCore<S>; CLASS_COUNT];

/// What a heap builds on first use, in one block of its page source: its classes, the
/// freed large blocks it keeps for reuse (see `large_cache`), which the classes' decay
/// passes expire, and the classes' depot slots, last and apart from the classes so that
/// building them touches only the classes' few pages (see [`Depot`](crate::depot::Depot)).
#[repr(C)]
struct Built<S: PageSource + Clone> {
    classes: Classes<S>,
    large: LargeCache,
    depot_slots: UnsafeCell<[DepotSlots; CLASS_COUNT]>,
}

/// A general-purpose allocator: 50 size classes up to 128 KiB (see
/// [`size_class`](crate::size_class) for the table and its fragmentation bound), each a
/// slab cache with per-thread magazines, and [`MmapAlloc`] above. The classes above
/// 16 KiB have bigger slabs (at least eight objects each), keep fewer empty slabs and
/// smaller magazines, so that a block they cache costs little memory while a program
/// that allocates and frees such blocks makes no system call.
///
/// Usable as `#[global_allocator]` on stable Rust: [`SlabHeap::new`] is `const`, the
/// classes are built on first use from the page source (never from the global
/// allocator), the per-thread magazines need no constructor nor destructor (a
/// const-initialised thread-local, or with the `initial-exec-tls` feature a block
/// mapped when the thread registers),
/// and the exit hook is a pthread key registered with the thread's magazines switched
/// off, so an allocation made while registering does not recurse. A thread's magazines
/// go back to the depots when it exits; `fork` handlers keep every lock consistent, so a
/// child can allocate.
///
/// `realloc` stays in place when the new size is in the same class; blocks above
/// [`MAX_SMALL`](crate::size_class::MAX_SMALL) grow with `mremap`. A block that moves
/// keeps every byte of its old usable size ([`usable_size`](Self::usable_size)) that fits
/// the new one, not only the bytes of the old layout.
///
/// # Examples
///
/// ```
/// use pagekeep_slab::SlabHeap;
///
/// #[global_allocator]
/// static HEAP: SlabHeap = SlabHeap::new();
///
/// let numbers: Vec<u64> = (0..1000).collect();
/// assert_eq!(numbers.iter().sum::<u64>(), 499_500);
/// ```
pub struct SlabHeap<S: PageSource + Clone = DefaultPages> {
    source: S,
    /// Read by every operation, written once.
    built: AtomicPtr<Built<S>>,
    /// The address of `built` once set (release, after `built`), [`NO_CLASSES`] before:
    /// what a free by address compares a slab's owner with. Unlike a null `built`, no
    /// owner address lies within the classes' span above it, however low a page source
    /// places its caches.
    classes_address: AtomicUsize,
    /// The fast index of each class's cache (its slot in every thread's magazines),
    /// [`NO_ID`] (a slot always empty) until the classes are built and for the indices
    /// past [`CLASS_COUNT`]: the allocation fast path finds its slot from here, a load
    /// beside `built`, without reaching the class. 256 entries, so that a class index of
    /// type `u8` needs no bounds check.
    fast_ids: [AtomicU8; 256],
    /// The magazine slot of the class of every size up to 1 KiB, as its byte offset in
    /// the threads' slot tables (its fast index times
    /// [`SLOT_BYTES`](crate::magazine::SLOT_BYTES)): row 0 for alignments up to 8, row 1
    /// for 16, at `(size + 7) / 8`, as the class table behind
    /// [`class_for`](crate::size_class::class_for) is laid out; that of [`NO_ID`] until
    /// the classes are built. The fast paths of [`alloc_aligned_16`](Self::alloc_aligned_16)
    /// (C's `malloc`, row 1) and of `GlobalAlloc`'s `alloc` and `dealloc` for layouts
    /// of these sizes and alignments find their slot with this one load and a mask: no
    /// class index between, no scaling of a fast index, no load from the class.
    slots_by_size: [[AtomicU32; 129]; 2],
    /// Written by every large allocation and free, so on cache lines of their own, away
    /// from `classes`.
    large: CachePadded<LargeCounters>,
    /// Called at every decay pass driven by operations ([`SlabHeap::on_decay_pass`]).
    decay_hook: Option<fn()>,
    /// The process that runs this heap's decay thread (0: none started).
    decay_thread_pid: AtomicU32,
    /// Told when a class gives memory back ([`SlabHeap::on_space_returned`]).
    space_returned: Option<fn(&S, SpaceReturned)>,
}

/// [`SlabHeap`]'s `classes_address` before the classes are built: the top half of the
/// address space, where no user-space cache lies, so that `owner - NO_CLASSES` wraps to
/// far more than the classes' span for every owner.
const NO_CLASSES: usize = 1 << (usize::BITS - 1);

/// The most bytes of objects the depot of a class above 16 KiB keeps (in full
/// magazines).
pub(crate) const LARGE_CLASS_DEPOT_BYTES: usize = 1 << 20;

/// How the cache of a class with `geometry` is configured.
///
/// Classes up to 1 KiB keep four empty slabs, up to 16 KiB two, above one (their slabs
/// are 256 KiB to 2 MiB). Magazines hold about 64 KiB of objects (4 to 512), and under
/// contention grow to about [`SLAB_BYTES`] of objects: between 16 and 512 objects up to
/// 16 KiB, between 4 and 12 above (a thread then caches at most two magazines of four
/// 128 KiB blocks in that class).
///
/// The depot of a class above 16 KiB holds at most [`LARGE_CLASS_DEPOT_BYTES`] of
/// objects: a burst of large blocks freed at once goes back to the slabs, where the
/// hard cap on empty slabs releases it, instead of waiting in the depot for the end of
/// the working-set epoch; and each object that goes back to its slab gives back its
/// whole pages (`purge_free_objects`), so that the free objects of partial slabs cost
/// no memory. Blocks freed and reallocated through the magazines make no system call.
fn class_config(geometry: Geometry) -> CoreConfig {
    let size = geometry.slot_size;
    let max_magazine_capacity =
        default_max_magazine_capacity(size).min((SLAB_BYTES / size).max(4) as u32);
    CoreConfig {
        geometry,
        max_empty_slabs: if size <= 1024 {
            4
        } else if size <= MAX_MEDIUM {
            2
        } else {
            1
        },
        magazine_capacity: default_magazine_capacity(size),
        max_magazine_capacity,
        max_depot_magazines: if size <= MAX_MEDIUM {
            DEPOT_MAGAZINES
        } else {
            (LARGE_CLASS_DEPOT_BYTES / (size * max_magazine_capacity as usize))
                .clamp(1, DEPOT_MAGAZINES)
        },
        purge_free_objects: size > MAX_MEDIUM,
        magazines: true,
        drop_object: None,
    }
}

/// The bytes a large block of `size` requested bytes counts for in the statistics: its
/// usable size, whole pages. The same for any size between the request and that usable
/// size, which is what an `Allocator` caller may free the block with, so the counter
/// goes back to zero.
fn large_block_bytes(size: usize) -> usize {
    MmapAlloc::usable_size(size).unwrap_or(size)
}

/// A block of `size` requested bytes, freed: `ptr` itself, or, for a block smaller
/// than its free words (a pointer; two, with the free tag, in checked builds), which
/// get written beyond the requested bytes that the caller's pointer may cover alone (a
/// `Box<u8>`), `ptr` with its slab's provenance.
#[inline(always)]
fn covering_free_words(ptr: NonNull<u8>, size: usize) -> NonNull<u8> {
    if size < crate::slab::FREE_WORDS * size_of::<*mut u8>() {
        with_slab_provenance(ptr)
    } else {
        ptr
    }
}

/// `ptr` with the provenance of its slab, which covers the whole slot (a block shorter
/// than its free words gets them written past its requested bytes); `ptr` as it is if
/// it lies in no slab. Out of line: only such short blocks need it.
#[cold]
#[inline(never)]
fn with_slab_provenance(ptr: NonNull<u8>) -> NonNull<u8> {
    crate::slab_map::lookup(ptr.addr().get() & !(crate::SLAB_BYTES - 1))
        .map_or(ptr, |base| base.with_addr(ptr.addr()))
}

/// Statistics of the large blocks.
#[derive(Debug)]
struct LargeCounters {
    blocks: AtomicUsize,
    bytes: AtomicUsize,
}

// SAFETY: the classes are `Sync` cores under these bounds; the rest are atomics.
unsafe impl<S: PageSource + Clone + Sync + Send> Sync for SlabHeap<S> {}
// SAFETY: as above.
unsafe impl<S: PageSource + Clone + Send> Send for SlabHeap<S> {}

impl SlabHeap<DefaultPages> {
    /// A heap on OS pages (heap pages under miri). Builds nothing until first used.
    pub const fn new() -> Self {
        Self::with_source(DefaultPages {})
    }
}

impl Default for SlabHeap<DefaultPages> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: PageSource + Clone> SlabHeap<S> {
    /// A heap whose slabs come from `source` (large blocks always from [`MmapAlloc`]).
    pub const fn with_source(source: S) -> Self {
        SlabHeap {
            source,
            built: AtomicPtr::new(ptr::null_mut()),
            classes_address: AtomicUsize::new(NO_CLASSES),
            fast_ids: [const { AtomicU8::new(NO_ID as u8) }; 256],
            slots_by_size: [const { [const { AtomicU32::new(NO_ID * SLOT_BYTES) }; 129] }; 2],
            large: CachePadded::new(LargeCounters {
                blocks: AtomicUsize::new(0),
                bytes: AtomicUsize::new(0),
            }),
            decay_hook: None,
            decay_thread_pid: AtomicU32::new(0),
            space_returned: None,
        }
    }

    /// The same heap, calling `hook` (with the classes' source) whenever a class gives
    /// memory back: empty slabs released to the source or free objects back in their
    /// slabs (under the class's lock: the hook must not wake anyone), or an exiting
    /// thread's magazines taken back (under the registry's lock). For an async heap,
    /// whose starved requests wait for such returns.
    pub(crate) const fn on_space_returned(mut self, hook: fn(&S, SpaceReturned)) -> Self {
        self.space_returned = Some(hook);
        self
    }

    /// The same heap, calling `hook` at every decay pass its operations drive (at most
    /// once per [`DECAY_INTERVAL`](crate::DECAY_INTERVAL)), outside any lock of the heap,
    /// from the thread whose allocation found the pass due, or from the next allocation
    /// when a free did: a C runtime frees from inside its own locked sections (glibc's
    /// `pthread_join` frees a finished thread's TLS holding the lock `pthread_create`
    /// takes), where a hook that starts a thread would wait for ever. For instance to start the
    /// decay thread of a `static` heap once the program is running (as the C ABI does
    /// when `SLAB_DECAY_THREAD=1`). The hook may allocate from the heap; a panic in it
    /// aborts the process with a message (it would otherwise unwind out of the
    /// allocator). The first pass
    /// of a heap with a hook is due at once: it runs at the heap's first clock reading
    /// (a class reads the clock every 64 locked operations), so a decay thread started by
    /// the hook also runs for a program that frees its peak within the first
    /// `DECAY_INTERVAL` and then stays idle.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_slab::SlabHeap;
    ///
    /// static HEAP: SlabHeap = SlabHeap::new().on_decay_pass(start);
    ///
    /// fn start() {
    ///     let _ = HEAP.start_decay_thread();
    /// }
    /// # let _ = &HEAP;
    /// ```
    pub const fn on_decay_pass(mut self, hook: fn()) -> Self {
        self.decay_hook = Some(hook);
        self
    }

    /// Class `index` (below [`CLASS_COUNT`]), the classes being built on first use;
    /// `None` if the source cannot supply their block.
    ///
    /// Only the class is borrowed, not the whole table (under miri a borrow costs in
    /// proportion to the bytes it covers).
    #[inline(always)]
    fn class(&self, index: usize) -> Option<&CacheCore<S>> {
        debug_assert!(index < CLASS_COUNT);
        let built = self.built.load(Ordering::Acquire);
        if built.is_null() {
            return self.class_after_build(index);
        }
        // SAFETY: once published the classes live until the heap is dropped; `index` is
        // a class index (from `class_for`), inside the table, which starts the block.
        Some(unsafe { &*built.cast::<CacheCore<S>>().add(index) })
    }

    /// [`class`](Self::class) at the heap's first use: builds the classes. Out of line
    /// with the index, so the inlined fast paths keep nothing across the call (the
    /// index kept for after it made every allocation save and restore a register).
    #[cold]
    #[inline(never)]
    fn class_after_build(&self, index: usize) -> Option<&CacheCore<S>> {
        let built = ptr::from_ref(self.build()?).cast::<CacheCore<S>>();
        // SAFETY: as in `class`: the classes just built or published by another thread
        // live until the heap is dropped; `index` is inside the table.
        Some(unsafe { &*built.add(index) })
    }

    #[cold]
    #[inline(never)]
    fn build(&self) -> Option<&Built<S>> {
        // The fork handlers before any lock of the classes exists. Installing them
        // allocates, which for C's `malloc` is this heap: that reentrant call builds the
        // classes, and then this one uses them rather than build a second set to drop.
        let _ = crate::registry::install_hooks();
        let built = self.built.load(Ordering::Acquire);
        if !built.is_null() {
            // SAFETY: published classes live until the heap is dropped.
            return Some(unsafe { &*built });
        }
        let bytes = size_of::<Built<S>>();
        let align = align_of::<Built<S>>();
        let block = self.source.reserve_committed(bytes, align).ok()?;
        let built = block.cast::<Built<S>>();
        // SAFETY: inside the fresh block, aligned; it stays there as long as the classes.
        let large = unsafe {
            let large = &raw mut (*built.as_ptr()).large;
            large.write(LargeCache::new());
            &*large
        };
        let place = block.cast::<CacheCore<S>>();
        // SAFETY: a field of the fresh block (no reference to it exists): in bounds of a
        // non-null allocation, so non-null.
        let slots = unsafe {
            NonNull::new_unchecked(UnsafeCell::raw_get(
                &raw const (*built.as_ptr()).depot_slots,
            ))
            .cast::<DepotSlots>()
        };
        for (index, &size) in CLASS_SIZES.iter().enumerate() {
            let config = class_config(heap_class_geometry(size, class_align(index))?);
            // SAFETY: `index < CLASS_COUNT`, inside the fresh block, aligned; each core
            // stays there until the heap is dropped (or until the loser of the race
            // below destroys it). Its depot slots are the index's own zeroed slots of
            // the block, which only its depot touches, and live as long.
            unsafe {
                CacheCore::init(
                    place.add(index),
                    config,
                    self.source.clone(),
                    slots.add(index),
                );
            }
        }
        // SAFETY: the classes were all initialised in one block just above, which lives
        // as long as they do, and nobody else sees them yet.
        unsafe { CacheCore::set_siblings(place, CLASS_COUNT, self.decay_hook, Some(large)) };
        if let Some(hook) = self.space_returned {
            // SAFETY: as above.
            unsafe { CacheCore::set_space_returned(place, CLASS_COUNT, hook) };
        }
        match self.built.compare_exchange(
            ptr::null_mut(),
            built.as_ptr(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // SAFETY: published, lives until the heap is dropped.
                let built = unsafe { built.as_ref() };
                self.classes_address
                    .store(ptr::from_ref(built).addr(), Ordering::Release);
                // The fast indices, for `alloc_in_class`: only the winner's (the loser's
                // classes, and their ids, are destroyed). A thread that reads `NO_ID`
                // meanwhile takes the slow path, which finds the classes built.
                for (index, class) in built.classes.iter().enumerate() {
                    let id = class.header.fast_id;
                    debug_assert!(id <= u32::from(u8::MAX) && class.header.link_offset == 0);
                    self.fast_ids[index].store(id as u8, Ordering::Relaxed);
                }
                for (row, align) in self.slots_by_size.iter().zip([8, 16]) {
                    for (index, entry) in row.iter().enumerate() {
                        // The class of `index * 8` bytes: that of every size with this
                        // table index, at the row's alignments.
                        if let Some(class) = class_for(index * 8, align) {
                            let id = self.fast_ids[class].load(Ordering::Relaxed);
                            entry.store(u32::from(id) * SLOT_BYTES, Ordering::Relaxed);
                        }
                    }
                }
                Some(built)
            }
            Err(winner) => {
                // SAFETY: nobody saw our classes; destroy them and use the winner's.
                unsafe { Self::destroy(&self.source, built) };
                // SAFETY: published by the winner.
                Some(unsafe { &*winner })
            }
        }
    }

    /// # Safety
    /// - `built` was built by `build` from `source` and nothing uses it.
    unsafe fn destroy(source: &S, built: NonNull<Built<S>>) {
        // The first class, whose decay clock the others read, goes last; the large
        // blocks after it (whose lock the fork handlers reach through it).
        for index in (0..CLASS_COUNT).rev() {
            // SAFETY: each class core was initialised and is unused (caller).
            drop(unsafe { CacheCore::destroy(built.cast::<CacheCore<S>>().add(index)) });
        }
        // SAFETY: initialised by `build`, unused (caller); dropping it unmaps the blocks.
        unsafe { ptr::drop_in_place(&raw mut (*built.as_ptr()).large) };
        // SAFETY: the block was reserved from `source` with this size and alignment.
        let _ =
            unsafe { source.release(built.cast(), size_of::<Built<S>>(), align_of::<Built<S>>()) };
    }

    /// Allocates a block for `layout` (non-zero size).
    ///
    /// Up to 1 KiB at alignments up to 16 (nearly every Rust value), the class's
    /// magazine slot comes from `slots_by_size` by the layout alone: one load between
    /// the size and the thread's slot, where the class index and then its fast index
    /// were two.
    #[inline(always)]
    pub(crate) fn alloc_nonzero(&self, layout: Layout) -> Option<NonNull<u8>> {
        let (size, align) = (layout.size(), layout.align());
        if size <= 1024 && align <= 16 {
            let slot = self.slot_of_layout(size, align);
            // SAFETY: the slot offset of a fast index of one of this heap's classes, that
            // of `layout` (set once the classes are built, from their headers), whose
            // link word is the object's first (checked when they are built), or of
            // `NO_ID`; the object is handed out as that class's allocation.
            return match unsafe { crate::cache::alloc_from_thread_slot_at(slot, 0) } {
                Some(object) => Some(object),
                None => self.alloc_layout_miss(layout),
            };
        }
        match class_for(size, align) {
            Some(class) => self.alloc_in_class(class as u8),
            None => self.alloc_large(layout, false),
        }
    }

    /// The magazine slot offset of the class of `size` bytes aligned to `align`, from
    /// `slots_by_size` (that of `NO_ID` until the classes are built).
    #[inline(always)]
    fn slot_of_layout(&self, size: usize, align: usize) -> u32 {
        debug_assert!(size <= 1024 && align <= 16);
        self.slots_by_size[usize::from(align > 8)][(size + 7) >> 3].load(Ordering::Relaxed)
    }

    /// [`alloc_nonzero`](Self::alloc_nonzero) past the thread's loaded magazine, for a
    /// layout of the classes' table (up to 1 KiB, alignment up to 16): the class's slow
    /// path. Out of line as a whole.
    #[cold]
    #[inline(never)]
    fn alloc_layout_miss(&self, layout: Layout) -> Option<NonNull<u8>> {
        self.alloc_class_miss(class_for(layout.size(), layout.align())? as u8)
    }

    /// Allocates a block of class `class` (an index into
    /// [`CLASS_SIZES`](crate::size_class::CLASS_SIZES), as
    /// [`class_for`](crate::size_class::class_for) gives it): a block of that class's
    /// size and alignment. `None` if the page source fails, or if `class` is not a class
    /// index (at least [`CLASS_COUNT`]).
    ///
    /// The fast path of the heap's allocations, for a caller that computed the class
    /// itself (C's `malloc`, with a table of its own for its sizes): the class's fast
    /// index from the heap, then the calling thread's loaded magazine; the class itself
    /// is reached only on a miss.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_slab::SlabHeap;
    /// use pagekeep_slab::size_class::{CLASS_SIZES, class_for};
    ///
    /// let heap = SlabHeap::new();
    /// let class = class_for(100, 16).unwrap();
    /// let block = heap.alloc_in_class(class as u8).unwrap();
    /// // SAFETY: a block of this heap, freed once.
    /// unsafe {
    ///     assert_eq!(heap.small_block_size(block.as_ptr()), Some(CLASS_SIZES[class]));
    ///     assert!(heap.free_small_block(block));
    /// }
    /// assert!(heap.alloc_in_class(200).is_none());
    /// ```
    #[inline(always)]
    pub fn alloc_in_class(&self, class: u8) -> Option<NonNull<u8>> {
        let id = self.fast_ids[usize::from(class)].load(Ordering::Relaxed);
        // SAFETY: a fast index of one of this heap's classes (set once they are built,
        // from their headers), whose link word is the object's first (checked when
        // they are built), or `NO_ID`; the object is handed out as that class's
        // allocation.
        match unsafe { crate::cache::alloc_from_thread_slot(u32::from(id), 0) } {
            Some(object) => Some(object),
            None => self.alloc_class_miss(class),
        }
    }

    /// Allocates a block of at least `size` bytes aligned to 16 (a block of one byte for
    /// `size == 0`), as [`alloc`](GlobalAlloc::alloc) does for that layout; `None` if the
    /// page source or the system fails, or the size overflows a layout.
    ///
    /// The fast path of C's `malloc`: for sizes up to 1 KiB, the byte offset of the
    /// class's magazine slot from one table of the heap indexed by the size, then the
    /// calling thread's loaded magazine (one load fewer than
    /// [`class_up_to_1024_aligned_16`] and [`alloc_in_class`](Self::alloc_in_class),
    /// whose class index is a load of its own, and no scaling of a fast index).
    /// A block above 1 KiB is freed as any block of its layout; one up to 1 KiB is a block
    /// of a size class, which [`free_small_block`](Self::free_small_block) also frees.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_slab::SlabHeap;
    ///
    /// let heap = SlabHeap::new();
    /// let block = heap.alloc_aligned_16(100).unwrap();
    /// assert!(block.as_ptr().addr() % 16 == 0);
    /// // SAFETY: a block of this heap, freed once.
    /// unsafe {
    ///     assert_eq!(heap.small_block_size(block.as_ptr()), Some(112));
    ///     assert!(heap.free_small_block(block));
    /// }
    /// ```
    #[inline(always)]
    pub fn alloc_aligned_16(&self, size: usize) -> Option<NonNull<u8>> {
        if size > 1024 {
            return self.alloc_aligned_16_above_1024(size);
        }
        match self.alloc_aligned_16_from_magazine(size) {
            Some(object) => Some(object),
            None => Self::alloc_by_size_miss(size, self),
        }
    }

    /// The fast path of [`alloc_aligned_16`](Self::alloc_aligned_16) alone: a block of at
    /// least `size` bytes (at most 1 KiB) aligned to 16 from the calling thread's loaded
    /// magazine, or `None` without any other work (the magazine is empty, `size` is above
    /// 1 KiB, or the heap has not been used yet). The caller then calls
    /// [`alloc_aligned_16`](Self::alloc_aligned_16): C's `malloc` does so from a function
    /// of its own that also sets `errno` on failure, which it reaches by a jump.
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_slab::SlabHeap;
    ///
    /// let heap = SlabHeap::new();
    /// // A new heap has no magazines yet: the general path fills them.
    /// assert_eq!(heap.alloc_aligned_16_from_magazine(48), None);
    /// let first = heap.alloc_aligned_16(48).unwrap();
    /// // SAFETY: a block of this heap, freed once.
    /// unsafe { assert!(heap.free_small_block(first)) };
    /// // The freed block went into this thread's magazine, which now serves the size.
    /// let again = heap.alloc_aligned_16_from_magazine(48).unwrap();
    /// assert_eq!(again, first);
    /// // SAFETY: as above.
    /// unsafe { assert!(heap.free_small_block(again)) };
    /// assert_eq!(heap.alloc_aligned_16_from_magazine(2000), None);
    /// assert_eq!(heap.alloc_aligned_16_from_magazine(usize::MAX), None);
    /// ```
    #[inline(always)]
    pub fn alloc_aligned_16_from_magazine(&self, size: usize) -> Option<NonNull<u8>> {
        if size > 1024 {
            return None;
        }
        let slot = self.slot_of_layout(size, 16);
        // SAFETY: the slot offset of a fast index of one of this heap's classes, that of
        // `size` at alignment 16 (set once the classes are built, from their headers),
        // whose link word is the object's first (checked when they are built), or of
        // `NO_ID`; the object is handed out as that class's allocation.
        unsafe { crate::cache::alloc_from_thread_slot_at(slot, 0) }
    }

    /// [`alloc_aligned_16`](Self::alloc_aligned_16) past the thread's loaded magazine
    /// (`size` at most 1 KiB): the class's slow path. Out of line as a whole. The size
    /// comes first, where the caller received it (C's `malloc`: no register move on
    /// its fast path to keep it for this call).
    #[cold]
    #[inline(never)]
    fn alloc_by_size_miss(size: usize, heap: &Self) -> Option<NonNull<u8>> {
        heap.alloc_class_miss(class_up_to_1024_aligned_16(size)?)
    }

    /// [`alloc_aligned_16`](Self::alloc_aligned_16) above 1 KiB: the general path.
    #[inline(never)]
    fn alloc_aligned_16_above_1024(&self, size: usize) -> Option<NonNull<u8>> {
        self.alloc_nonzero(Layout::from_size_align(size, 16).ok()?)
    }

    /// [`alloc_in_class`](Self::alloc_in_class) past the thread's loaded magazine: the
    /// class (built on the heap's first use), then its slow path. Out of line as a
    /// whole, so that nothing the inlined fast path computed is needed after a call.
    #[cold]
    #[inline(never)]
    fn alloc_class_miss(&self, class: u8) -> Option<NonNull<u8>> {
        let class = usize::from(class);
        if class >= CLASS_COUNT {
            return None;
        }
        let class = self.class(class)?;
        self.alloc_small_miss(class)
    }

    /// A small allocation that missed the thread's loaded magazine. Out of line as a
    /// whole, so that nothing the inlined fast path computed is needed after a call.
    #[cold]
    #[inline(never)]
    fn alloc_small_miss(&self, class: &CacheCore<S>) -> Option<NonNull<u8>> {
        class.alloc(None).or_else(|| self.alloc_small_again(class))
    }

    /// A small allocation that `class` could not serve, tried once more if releasing the
    /// kept large blocks gave memory back. Out of line, so the inlined allocation path
    /// does not carry a second copy of the class's.
    #[cold]
    #[inline(never)]
    fn alloc_small_again(&self, class: &CacheCore<S>) -> Option<NonNull<u8>> {
        self.release_kept_large().then(|| class.alloc(None))?
    }

    /// Releases every freed large block kept for reuse, for an allocation that the system
    /// refused (an address-space limit, strict overcommit, a cgroup): `true` if there was
    /// one, and the allocation is worth trying again.
    #[cold]
    #[inline(never)]
    fn release_kept_large(&self) -> bool {
        self.built().is_some_and(|built| built.large.release_all())
    }

    #[cold]
    #[inline(never)]
    fn alloc_large(&self, layout: Layout, zeroed: bool) -> Option<NonNull<u8>> {
        let map = || {
            // SAFETY: callers pass non-zero sizes.
            NonNull::new(unsafe {
                if zeroed {
                    MmapAlloc.alloc_zeroed(layout)
                } else {
                    MmapAlloc.alloc(layout)
                }
            })
        };
        let block = match self.kept_large(layout, zeroed) {
            Some(kept) => kept,
            None => map().or_else(|| self.release_kept_large().then(map)?)?,
        };
        self.large.blocks.fetch_add(1, Ordering::Relaxed);
        self.large
            .bytes
            .fetch_add(large_block_bytes(layout.size()), Ordering::Relaxed);
        self.clock_from_large_operation(Operation::Allocation);
        Some(block)
    }

    /// Large operations drive the heap's decay clock too, as the classes' do: a program
    /// that works with large blocks alone has its kept ones expired and its decay hook
    /// called (so the C ABI's decay thread starts, which then returns the kept blocks
    /// while the program idles). A clock reading per large operation, which makes a
    /// system call or takes the large cache's lock anyway.
    fn clock_from_large_operation(&self, operation: Operation) {
        if let Some(first) = self.class(0) {
            first.clock_from_magazines(operation);
        }
    }

    /// A kept large block for `layout` (see `large_cache`), if the request may have one:
    /// not zeroed, aligned to at most a page.
    fn kept_large(&self, layout: Layout, zeroed: bool) -> Option<NonNull<u8>> {
        if zeroed || layout.align() > pagekeep_mmap::sys::page_size() {
            return None;
        }
        let len = MmapAlloc::usable_size(layout.size())?;
        self.class(0)?;
        self.built()?.large.take(len)
    }

    /// Keeps a freed large block for reuse (see `large_cache`); `false` if it was not
    /// kept and the caller must unmap it.
    ///
    /// # Safety
    /// - `ptr` is a live large block of this heap allocated with `layout`, given up by
    ///   the caller.
    #[cold]
    unsafe fn keep_large(&self, ptr: NonNull<u8>, layout: Layout) -> bool {
        if layout.align() > pagekeep_mmap::sys::page_size() {
            return false;
        }
        let (Some(built), Some(len)) = (self.built(), MmapAlloc::usable_size(layout.size())) else {
            return false;
        };
        // SAFETY: a large block is a whole mapping of its usable size (`MmapAlloc`, or a
        // piece of `len` bytes from `kept_large`), given up by the caller, here with the
        // provenance of the whole mapping.
        unsafe {
            built
                .large
                .give(pagekeep_mmap::sys::whole_mapping(ptr), len)
        }
    }

    /// Frees a block.
    ///
    /// # Safety
    /// - `ptr` was allocated by this heap with `layout` (or a layout of the same class).
    #[inline(always)]
    pub(crate) unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        let (size, align) = (layout.size(), layout.align());
        if size <= 1024 && align <= 16 {
            let ptr = covering_free_words(ptr, size);
            // As in `alloc_nonzero`: the slot by the layout alone, the class not reached.
            let slot = self.slot_of_layout(size, align);
            #[cfg(any(debug_assertions, feature = "hardened"))]
            {
                // SAFETY: a block of ours means the classes were built and are live; a
                // layout up to 1 KiB aligned to at most 16 has a class.
                let class = unsafe { self.built_class_of(layout) };
                // The table's slot is the class's, or that of `NO_ID` (read before this
                // thread saw the table filled): a block pushed into another class's
                // magazine would be handed out at that class's size.
                debug_assert!(
                    slot == NO_ID * SLOT_BYTES || slot == class.header.fast_id * SLOT_BYTES,
                    "the slot table disagrees with the class of {layout:?}"
                );
                // SAFETY: the block came from the class of its layout, and the caller
                // gives it up.
                unsafe { class.mark_freed(ptr) };
            }
            // SAFETY: the slot offset of the fast index of the block's class (the class of
            // its layout, as for its allocation), whose link word is the object's first,
            // or of `NO_ID` (read before this thread saw the classes' indices: its slot
            // has no room); the block is given up by the caller, covers its free words
            // (the provenance above) and in checked builds was marked free.
            let outcome = unsafe { crate::cache::free_to_thread_slot_at(slot, 0, ptr) };
            if outcome != FastFree::Pushed {
                // SAFETY: as above; the outcome of the fast path for this block.
                unsafe { self.built_class_of(layout).finish_free(outcome, ptr) };
            }
            return;
        }
        match class_for(size, align) {
            Some(class) => {
                let ptr = covering_free_words(ptr, size);
                let built = self.built.load(Ordering::Acquire);
                // SAFETY: a block of ours means the classes were built and are live; the
                // block came from this class (same layout, same class).
                unsafe { (*built).classes[class].free(ptr) }
            }
            // SAFETY: forwarded from the caller.
            None => unsafe { self.free_large(ptr, layout) },
        }
    }

    /// The class of `layout` (a layout of the classes' table), for a block of it.
    ///
    /// # Safety
    /// - `layout` has a size class with one table lookup: its size is at most 1 KiB and
    ///   its alignment at most 16.
    /// - The heap's classes are built (a block of `layout` was allocated from it).
    #[inline(always)]
    unsafe fn built_class_of(&self, layout: Layout) -> &CacheCore<S> {
        let class = class_for(layout.size(), layout.align());
        let built = self.built.load(Ordering::Acquire);
        debug_assert!(class.is_some() && !built.is_null());
        // SAFETY: the classes are built and live (caller); a layout of the table has a
        // class, below `CLASS_COUNT`.
        unsafe { &(*built).classes[class.unwrap_unchecked()] }
    }

    /// Frees a small block past the magazines: the block, and the calling thread's
    /// magazines of its class, go back to their slabs, and the class's empty slabs go
    /// back to the page source at once (see [`CacheCore::free_to_slab`]).
    ///
    /// # Safety
    /// - `ptr` was allocated by this heap with `layout` (or a layout of the same class),
    ///   a layout of one of the size classes.
    pub(crate) unsafe fn free_to_slab(&self, ptr: NonNull<u8>, layout: Layout) {
        let class = class_for(layout.size(), layout.align())
            .expect("free_to_slab is for blocks of the size classes");
        let ptr = covering_free_words(ptr, layout.size());
        let built = self.built.load(Ordering::Acquire);
        // SAFETY: a block of ours means the classes were built and are live; the block
        // came from this class (same layout, same class), and is freed once (caller).
        unsafe { (*built).classes[class].free_to_slab(ptr) }
    }

    /// Frees a large block: kept for reuse, or unmapped. Out of line, as `alloc_large`
    /// is: inlined, its calls make every free save and restore registers.
    ///
    /// # Safety
    /// - `ptr` is a live large block of this heap allocated with `layout`, given up by
    ///   the caller.
    #[cold]
    #[inline(never)]
    unsafe fn free_large(&self, ptr: NonNull<u8>, layout: Layout) {
        self.large.blocks.fetch_sub(1, Ordering::Relaxed);
        self.large
            .bytes
            .fetch_sub(large_block_bytes(layout.size()), Ordering::Relaxed);
        // SAFETY: a large block with its layout, which the caller gives up.
        if !unsafe { self.keep_large(ptr, layout) } {
            // SAFETY: large blocks are `MmapAlloc` blocks of their layout.
            unsafe { MmapAlloc.dealloc(ptr.as_ptr(), layout) }
        }
        self.clock_from_large_operation(Operation::Free);
    }

    /// Resizes a block; `None` leaves the old one untouched.
    ///
    /// # Safety
    /// - `ptr` was allocated by this heap with `old`; `new_size` is non-zero and, rounded
    ///   up to `old.align()`, does not overflow `isize`.
    unsafe fn resize(&self, ptr: NonNull<u8>, old: Layout, new_size: usize) -> Option<NonNull<u8>> {
        let old_class = class_for(old.size(), old.align());
        let new_class = class_for(new_size, old.align());
        // SAFETY: the caller guarantees the new layout is valid.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, old.align()) };
        match (old_class, new_class) {
            (Some(a), Some(b)) if a == b => {
                // In place. The caller's pointer may carry provenance for the old size
                // only (a `Box<[T]>` turned back into a `Vec` is retagged to its length),
                // so writes to the grown part through it would be undefined: hand back
                // the block with the slab's provenance, which covers the whole slot.
                let slab = crate::slab_map::lookup(ptr.addr().get() & !(crate::SLAB_BYTES - 1));
                Some(slab.map_or(ptr, |base| base.with_addr(ptr.addr())))
            }
            (None, None) => {
                // SAFETY: a large block of `MmapAlloc` with layout `old`; a failed realloc
                // leaves it untouched, so it may be tried again.
                let remap =
                    || NonNull::new(unsafe { MmapAlloc.realloc(ptr.as_ptr(), old, new_size) });
                let Some(moved) = remap().or_else(|| self.release_kept_large().then(remap)?) else {
                    // A block made of kept pages moved together from several mappings
                    // (`large_cache`) cannot grow with `mremap`: copy it.
                    // SAFETY: forwarded from the caller.
                    return unsafe { self.resize_by_copy(ptr, old, new) };
                };
                self.large
                    .bytes
                    .fetch_add(large_block_bytes(new_size), Ordering::Relaxed);
                self.large
                    .bytes
                    .fetch_sub(large_block_bytes(old.size()), Ordering::Relaxed);
                Some(moved)
            }
            // SAFETY: forwarded from the caller.
            _ => unsafe { self.resize_by_copy(ptr, old, new) },
        }
    }

    /// Resizes a block into a new one, copying; `None` leaves the old one untouched.
    ///
    /// # Safety
    /// - `ptr` was allocated by this heap with `old`; `new` has a non-zero size.
    unsafe fn resize_by_copy(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<NonNull<u8>> {
        let moved = self.alloc_nonzero(new)?;
        // Every byte of the old block's usable size may hold data (C callers are
        // promised them by `malloc_usable_size`, `Allocator` callers by the length of
        // the slice they got), and all that fit the new block's usable size are kept,
        // as a block resized in place keeps them.
        // SAFETY: both blocks are live and distinct and span their usable sizes (the new
        // one's pointer has the provenance of its slot or mapping).
        unsafe {
            ptr::copy_nonoverlapping(
                ptr.as_ptr(),
                moved.as_ptr(),
                Self::usable_size(old).min(Self::usable_size(new)),
            );
            self.free(ptr, old);
        }
        Some(moved)
    }

    /// The bytes usable in a block allocated with `layout`.
    pub fn usable_size(layout: Layout) -> usize {
        match class_for(layout.size(), layout.align()) {
            Some(class) => CLASS_SIZES[class],
            None => MmapAlloc::usable_size(layout.size()).unwrap_or(layout.size()),
        }
    }

    /// Statistics of every class and of the large blocks.
    pub fn stats(&self) -> HeapStats {
        let mut stats = HeapStats {
            large_blocks: self.large.blocks.load(Ordering::Relaxed),
            large_bytes: self.large.bytes.load(Ordering::Relaxed),
            ..HeapStats::default()
        };
        if let Some(built) = self.built() {
            stats.large_bytes_kept = built.large.kept_bytes();
            for class in &built.classes {
                stats.small.accumulate(&class.stats());
            }
        }
        stats
    }

    /// Statistics of one size class (`None` before the heap is used).
    pub fn class_stats(&self, class: usize) -> Option<crate::CacheStats> {
        Some(self.built()?.classes.get(class)?.stats())
    }

    fn built(&self) -> Option<&Built<S>> {
        let built = self.built.load(Ordering::Acquire);
        // SAFETY: published classes live as long as the heap.
        (!built.is_null()).then(|| unsafe { &*built })
    }

    /// The classes, if built.
    fn classes(&self) -> impl Iterator<Item = &CacheCore<S>> {
        self.built().into_iter().flat_map(|built| &built.classes)
    }

    /// Returns the calling thread's magazines of every class to the depots.
    pub fn flush_thread_cache(&self) {
        for class in self.classes() {
            class.flush_thread();
        }
    }

    /// Empties the depots and releases every empty slab and every freed large block
    /// kept for reuse, after taking back the calling thread's magazines of this heap and,
    /// with the `reclaim-idle-threads` feature (on Linux; see the README), the magazines
    /// of every other thread that is not inside an allocation or free at that moment (of
    /// every cache of the process). Then releases the ranges that the system refused to
    /// release at its mapping-count limit and has room for now
    /// ([`release_deferred`](pagekeep_mmap::sys::release_deferred)).
    pub fn trim(&self) {
        crate::registry::reclaim_threads(crate::registry::Reclaim::Every);
        self.flush_thread_cache();
        for class in self.classes() {
            class.trim();
        }
        if let Some(built) = self.built() {
            built.large.release_all();
        }
        // Ranges the system refused to release at its mapping-count limit, any heap's.
        pagekeep_mmap::sys::release_deferred();
    }

    /// Starts a thread that runs a decay pass over the heap's classes every
    /// [`DECAY_INTERVAL`](crate::DECAY_INTERVAL), so that a freed peak goes back to the
    /// system even when the program makes no further allocation at all (decay passes
    /// are otherwise driven by the heap's own operations; see the README). Returns
    /// without starting another when this process already runs one (a child made by
    /// `fork` has none, and may start its own). The thread takes no lock that is held
    /// and never allocates from the heap.
    ///
    /// # Errors
    /// The error of [`std::thread::Builder::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_slab::SlabHeap;
    ///
    /// static HEAP: SlabHeap = SlabHeap::new();
    ///
    /// HEAP.start_decay_thread()?;
    /// HEAP.start_decay_thread()?; // already running: nothing more
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start_decay_thread(&'static self) -> std::io::Result<()>
    where
        S: Sync + Send,
    {
        let pid = std::process::id();
        if self.decay_thread_pid.swap(pid, Ordering::Relaxed) == pid {
            return Ok(());
        }
        let spawned = std::thread::Builder::new()
            .name("slab-decay".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(crate::DECAY_INTERVAL);
                    if let Some(built) = self.built() {
                        built.classes[0].decay_siblings(std::time::Instant::now());
                    }
                }
            });
        match spawned {
            Ok(_) => Ok(()),
            Err(error) => {
                self.decay_thread_pid.store(0, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Walks and checks every class.
    ///
    /// # Panics
    /// On the first inconsistency.
    pub fn check_invariants(&self) {
        for class in self.classes() {
            class.check_invariants();
        }
    }

    /// With the `hardened` feature (and in debug builds), checks the free blocks that a
    /// write past the end of a block reaches first, and aborts with a message naming the
    /// block if one was overwritten; without it, does nothing.
    ///
    /// Every free block carries a tag that is checked when the block is handed out
    /// again, so a write past the end of a block into a free neighbour is caught at the
    /// neighbour's next allocation; a neighbour that is handed out is the caller's to
    /// check (the C ABI checks its prefix at every free). This catches the rest, for a
    /// program that stops before either happens: the first object never carved of every
    /// slab (the neighbour of the last one carved) and the calling thread's cached
    /// blocks. The C ABI's hardened build runs it when the process exits.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    ///
    /// let heap = pagekeep_slab::SlabHeap::new();
    /// let layout = Layout::from_size_align(24, 8).unwrap();
    /// // SAFETY: a valid layout; the block is written within its size and freed once.
    /// unsafe {
    ///     let block = heap.alloc(layout);
    ///     block.write_bytes(7, 24);
    ///     heap.dealloc(block, layout);
    /// }
    /// heap.check_free_blocks(); // nothing was overwritten: returns
    /// ```
    pub fn check_free_blocks(&self) {
        #[cfg(any(debug_assertions, feature = "hardened"))]
        for class in self.classes() {
            class.check_free_words();
        }
    }

    /// The class (its index and core) of the block at `ptr`, if it lies in a slab of
    /// this heap's classes, and `ptr` with the provenance of that slab. One lookup in the slab map
    /// (the owner comes from the slab's tag, see `slab_map`): how a caller that does not
    /// keep sizes (C's `malloc_usable_size`, `realloc`) finds a block.
    ///
    /// # Safety
    /// - `ptr` is a live block of this heap, or lies in no slab of any heap or cache of
    ///   this process, live or being made (a large block, or memory of another
    ///   allocator).
    #[inline(always)]
    unsafe fn small_block(&self, ptr: *const u8) -> Option<(usize, &CacheCore<S>, NonNull<u8>)> {
        let address = core::num::NonZeroUsize::new(ptr.addr())?;
        let (base, tag) = crate::slab_map::lookup_tagged(address.get() & !(SLAB_BYTES - 1))?;
        let built = self.built.load(Ordering::Acquire);
        if built.is_null() {
            return None;
        }
        let owner_address = crate::slab::tag_owner_address(tag);
        // The classes sit side by side at the start of `Built` (`repr(C)`), each
        // starting with its header, and owners are headers: an owner inside that range
        // is one of the classes.
        let offset = owner_address.wrapping_sub(built.addr());
        if offset >= CLASS_COUNT * size_of::<CacheCore<S>>() {
            return None;
        }
        // The tag is an address: reach the core through `built`'s provenance.
        let core = built
            .cast::<u8>()
            .with_addr(owner_address)
            .cast::<CacheCore<S>>();
        // SAFETY: a header of one of this heap's classes, which live as long as the heap
        // (a `CoreHeader` is the first field of its `CacheCore`, `repr(C)`), reached with
        // the provenance of the block that holds them all.
        let core = unsafe { &*core };
        let class = offset / size_of::<CacheCore<S>>();
        Some((class, core, base.with_addr(address)))
    }

    /// The usable size of the block at `ptr` if it lies in a slab of this heap's size
    /// classes (its class's size), else `None`: a large block, or none of this heap's.
    /// For callers that keep no sizes, as C's `malloc_usable_size`.
    ///
    /// # Safety
    /// - `ptr` is a live block of this heap, or lies in no slab of any heap or cache of
    ///   this process, live or being made.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// let heap = pagekeep_slab::SlabHeap::new();
    /// let layout = Layout::from_size_align(20, 16).unwrap();
    /// // SAFETY: a non-zero size; the block is freed once, by its address alone.
    /// unsafe {
    ///     let block = heap.alloc(layout);
    ///     assert_eq!(heap.small_block_size(block), Some(32));
    ///     assert!(heap.free_small_block(core::ptr::NonNull::new(block).unwrap()));
    /// }
    /// ```
    #[inline]
    pub unsafe fn small_block_size(&self, ptr: *const u8) -> Option<usize> {
        // SAFETY: forwarded from the caller.
        unsafe { self.small_block(ptr) }.map(|(class, _, _)| CLASS_SIZES[class])
    }

    /// Frees the block at `ptr` if it lies in a slab of this heap's size classes,
    /// finding its class from the slab (no size needed, as C's `free`); returns `false`,
    /// doing nothing, otherwise (a large block, or none of this heap's).
    ///
    /// Without the `hardened` feature a pointer into a block that is not its start, or
    /// a block freed twice, is not detected (as in mimalloc's and jemalloc's default
    /// builds); with it, it is reported and the process aborted.
    ///
    /// # Safety
    /// - `ptr` is a live block of this heap, not used after this call, or lies in no slab
    ///   of any heap or cache of this process, live or being made.
    #[inline(always)]
    pub unsafe fn free_small_block(&self, ptr: NonNull<u8>) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_small_address(ptr.as_ptr()) }
    }

    /// [`free_small_block`](Self::free_small_block) for a pointer that may be null
    /// (then `false`, as for any pointer in no slab of this heap): for C's `free`,
    /// whose null pointer then costs no test on the way to a small block's free (the
    /// slab map has no slab at address 0).
    ///
    /// # Safety
    /// - `ptr` is a live block of this heap, not used after this call, or lies in no slab
    ///   of any heap or cache of this process, live or being made (null lies in none).
    ///
    /// A panic on the way (a [`PageSource`] that panics while the free gives memory
    /// back) aborts the process: the paths past the thread's magazine do not unwind, so
    /// that C's `free` reaches them by a jump.
    ///
    /// # Examples
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// let heap = pagekeep_slab::SlabHeap::new();
    /// let layout = Layout::from_size_align(24, 8).unwrap();
    /// // SAFETY: a non-zero size; the block is freed once, by its address alone.
    /// unsafe {
    ///     assert!(!heap.free_small_address(core::ptr::null_mut()));
    ///     let block = heap.alloc(layout);
    ///     assert!(heap.free_small_address(block));
    /// }
    /// ```
    #[inline(always)]
    pub unsafe fn free_small_address(&self, ptr: *mut u8) -> bool {
        // The fast path of C's `free`: the slab and its tag from the slab map, the
        // tag's owner checked to be one of this heap's classes, and the object pushed
        // into the thread's magazine slot named by the tag; neither the slab's header
        // (whose line all headers compete for, see `slab_map`) nor the class itself is
        // read, except on a miss (and in checked builds).
        // The base pointer is not tested: the tag of an entry without a live slab is 0
        // (outside every heap's classes, below), but for a slab being recorded, whose
        // objects the caller cannot hold (see `slab_map`).
        let Some((base, tag)) = crate::slab_map::lookup_tag(ptr.addr() & !(SLAB_BYTES - 1)) else {
            return false;
        };
        // The classes sit side by side at the start of `Built` (`repr(C)`), each
        // starting with its header, and owners are headers: an owner inside that range
        // is one of the classes (never so before they are built: see `NO_CLASSES`). The
        // tag is compared as it is: its fast index adds less than a header's alignment,
        // to which the classes' start and their size are multiples, so the tag lies in
        // the range exactly when its owner does.
        const {
            assert!(
                size_of::<CacheCore<S>>().is_multiple_of(align_of::<crate::registry::CoreHeader>())
            );
        };
        let classes = self.classes_address.load(Ordering::Acquire);
        if tag.wrapping_sub(classes) >= CLASS_COUNT * size_of::<CacheCore<S>>() {
            return false;
        }
        let fast_id = crate::slab::tag_fast_id(tag);
        // `ptr` with the slab's provenance, which covers the free words written into it.
        // SAFETY: `ptr` is a live block of ours (caller) whose entry's tag is one of this
        // heap's classes, so the entry is its live slab's and `base` is that slab's
        // (`slab_map` docs); no slab lies at address 0 (no mapping does), so the pointer
        // is not null.
        let block = unsafe { NonNull::new_unchecked(base.with_addr(ptr.addr())) };
        #[cfg(any(debug_assertions, feature = "hardened"))]
        {
            // SAFETY: the tag's owner is one of this heap's classes (checked above).
            let core = unsafe { self.class_of_owner(crate::slab::tag_owner_address(tag)) };
            // SAFETY: the caller frees the block (a foreign pointer is reported),
            // through a pointer that covers its free words.
            unsafe { crate::slab::mark_free(block, &core.header, &core.geometry) };
        }
        // SAFETY: the fast index of the block's class (its slab's header), whose link
        // word is an object's first (checked when the classes are built); the caller
        // gives the block up, marked free above in checked builds.
        match unsafe { crate::cache::free_to_thread_slot(fast_id, 0, block) } {
            crate::cache::FastFree::Pushed => {}
            // SAFETY: the tag's owner is one of this heap's classes, and the block was
            // pushed.
            crate::cache::FastFree::PushedClockDue => unsafe {
                Self::free_small_block_clock(tag, self)
            },
            // SAFETY: as above; the block, given up by the caller, was not pushed.
            crate::cache::FastFree::Missed => unsafe {
                Self::free_small_block_miss(block, tag, self)
            },
        }
        true
    }

    /// The class whose header is at `owner_address`, reached with the provenance of the
    /// block that holds all the classes (`built`'s; a slab's tag holds only the address).
    /// Loads `built` itself: the fast path of a free by address compares tags with
    /// `classes_address` and needs `built` only here.
    ///
    /// # Safety
    /// - `owner_address` is the header of one of this heap's classes (so they are built).
    #[inline(always)]
    unsafe fn class_of_owner(&self, owner_address: usize) -> &CacheCore<S> {
        // Published before `classes_address`, which the caller read (release/acquire):
        // the classes' block.
        let built = self.built.load(Ordering::Acquire);
        let core = built
            .cast::<u8>()
            .with_addr(owner_address)
            .cast::<CacheCore<S>>();
        // SAFETY: a header of one of this heap's classes (caller), which live as long as
        // the heap (a `CoreHeader` is the first field of its `CacheCore`, `repr(C)`).
        unsafe { &*core }
    }

    /// [`free_small_block`](Self::free_small_block)'s look at the decay clock, which its
    /// magazine hits reached. Out of line: rare, and a call.
    ///
    /// `extern "C"`, which does not unwind, like the miss below: a caller whose last act
    /// this is (C's `free`) jumps to it instead of calling it, and keeps no stack frame.
    ///
    /// # Safety
    /// - `tag` is the slab-map tag of a slab of one of this heap's classes.
    #[cold]
    #[inline(never)]
    unsafe extern "C" fn free_small_block_clock(tag: usize, heap: &Self) {
        // SAFETY: the tag's owner is one of this heap's classes (caller).
        unsafe { heap.class_of_owner(crate::slab::tag_owner_address(tag)) }
            .look_from_magazine_hits();
    }

    /// [`free_small_block`](Self::free_small_block) when the thread's loaded magazine
    /// had no room: the class's slow path. Out of line as a whole.
    ///
    /// # Safety
    /// - `tag` is the slab-map tag of a slab of one of this heap's classes.
    /// - `block` is a block of that class given up by the caller (marked free in checked
    ///   builds), with its slab's provenance.
    #[cold]
    #[inline(never)]
    unsafe extern "C" fn free_small_block_miss(block: NonNull<u8>, tag: usize, heap: &Self) {
        // SAFETY: the tag's owner is one of this heap's classes; the block is given up
        // (caller).
        unsafe {
            heap.class_of_owner(crate::slab::tag_owner_address(tag))
                .free_slow(block)
        }
    }

    /// Finds the slab of this heap's size classes that `ptr` lies in, from the slab map
    /// and the slab's owner word (both kept for the checked builds' lock-free reads):
    /// `None` if it lies in no slab, or in a slab of another heap or cache. For a caller
    /// that checks bookkeeping of its own beside the block (the C ABI's hardened build
    /// checks its prefix) before it frees the block with
    /// [`free_located`](Self::free_located): one lookup for both.
    ///
    /// Nothing is read through `ptr`, and nothing of the block: any address may be
    /// given.
    #[cfg(any(debug_assertions, feature = "hardened"))]
    #[inline(always)]
    pub fn locate_small_block(&self, ptr: *const u8) -> Option<LocatedBlock<'_, S>> {
        let address = ptr.addr();
        let base = crate::slab_map::lookup(address & !(SLAB_BYTES - 1))?;
        let built = self.built.load(Ordering::Acquire);
        if built.is_null() {
            return None;
        }
        // SAFETY: `base` is a live slab's base from the slab map.
        let owner = unsafe { crate::slab::debug_owner(base) };
        // As in `small_block`: the classes sit side by side at the start of `Built`.
        let offset = owner.addr().wrapping_sub(built.addr());
        if offset >= CLASS_COUNT * size_of::<CacheCore<S>>() {
            return None;
        }
        let core = built
            .cast::<u8>()
            .with_addr(owner.addr())
            .cast::<CacheCore<S>>();
        // SAFETY: a header of one of this heap's classes (see `small_block`), reached
        // with the provenance of the block that holds them all.
        let core = unsafe { &*core };
        Some(LocatedBlock {
            core,
            class: offset / size_of::<CacheCore<S>>(),
            base,
            offset_in_slab: address - base.addr().get(),
        })
    }

    /// Frees the block of a size class that starts at `start`, in the slab `located`
    /// (from [`locate_small_block`](Self::locate_small_block)). The block is checked,
    /// as every free of the checked builds is: `start` must be the start of an object
    /// of that slab, and not free already; else the process aborts with a message
    /// naming the address and what was wrong.
    ///
    /// # Safety
    /// - If `start` is the start of an object of the located slab, that object is a
    ///   live block of this heap, not used after this call.
    #[cfg(any(debug_assertions, feature = "hardened"))]
    #[inline(always)]
    pub unsafe fn free_located(&self, located: LocatedBlock<'_, S>, start: usize) {
        let Some(start) = core::num::NonZeroUsize::new(start) else {
            self.report_bad_free(ptr::null())
        };
        // SAFETY: `base` is a live slab of `core` (its owner word), the object is checked
        // to be at one of its slot starts before anything is written, and the caller
        // gives it up.
        unsafe {
            located
                .core
                .free_in_slab(located.base.with_addr(start), located.base)
        }
    }

    /// Reports a bad free of `pointer` on standard error, naming the address and what
    /// is wrong with it, and aborts the process (no allocation, no unwinding).
    ///
    /// For a caller that keeps its own bookkeeping beside the heap's blocks (the C ABI's
    /// prefix) and found it invalid: the heap then says why. With the `hardened` feature
    /// (and in debug builds) it tells a double free (the object holding `pointer` is
    /// free), a pointer into a block that is not its start (or whose caller bookkeeping
    /// was overwritten), a pointer into a slab of another heap or cache, and a pointer
    /// into no slab at all; without it, only the last from the others.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let heap = pagekeep_slab::SlabHeap::new();
    /// // A pointer this heap never handed out: prints a message and aborts.
    /// heap.report_bad_free(std::ptr::dangling::<u8>());
    /// ```
    #[cold]
    #[inline(never)]
    pub fn report_bad_free(&self, pointer: *const u8) -> ! {
        use crate::sync::fatal;
        let address = pointer.addr();
        let Some(base) = crate::slab_map::lookup(address & !(SLAB_BYTES - 1)) else {
            fatal(
                "free of a pointer this allocator did not hand out, or of a large block \
                 already freed (pointer, 0)",
                address,
                0,
            );
        };
        #[cfg(any(debug_assertions, feature = "hardened"))]
        {
            // SAFETY: `base` is a live slab's base from the slab map.
            let owner = unsafe { crate::slab::debug_owner(base) };
            let class = self.classes().find(|class| ptr::eq(&class.header, owner));
            let Some(class) = class else {
                fatal(
                    "free into the wrong heap: the pointer is in a slab of another heap or \
                     cache (pointer, slab)",
                    address,
                    base.addr().get(),
                );
            };
            let geometry = &class.geometry;
            let offset = address - base.addr().get();
            if offset >= geometry.first_offset {
                let index = (offset - geometry.first_offset) / geometry.slot_size;
                let object = base.with_addr(
                    base.addr()
                        .saturating_add(geometry.first_offset + index * geometry.slot_size),
                );
                if index < geometry.capacity
                    // SAFETY: the start of an object of a live slab of this class (`index`
                    // checked against its capacity), whose words nobody may write while
                    // its block is being freed.
                    && unsafe { crate::slab::debug_is_free(object, geometry) }
                {
                    fatal("double free (pointer, slab)", address, base.addr().get());
                }
            }
        }
        fatal(
            "free of a pointer that is not the start of a block: an interior or misaligned \
             pointer, or the block's header was overwritten (pointer, slab)",
            address,
            base.addr().get(),
        )
    }

    /// The page source of the slabs.
    pub fn source(&self) -> &S {
        &self.source
    }
}

/// A block of one of a heap's size classes, found from an address alone by
/// [`SlabHeap::locate_small_block`], to be freed with [`SlabHeap::free_located`]
/// (debug builds and the `hardened` feature).
#[cfg(any(debug_assertions, feature = "hardened"))]
pub struct LocatedBlock<'heap, S: PageSource + Clone> {
    core: &'heap CacheCore<S>,
    class: usize,
    base: NonNull<u8>,
    offset_in_slab: usize,
}

#[cfg(any(debug_assertions, feature = "hardened"))]
impl<S: PageSource + Clone> LocatedBlock<'_, S> {
    /// The size of the block's class: the most a block of it holds.
    pub fn class_size(&self) -> usize {
        CLASS_SIZES[self.class]
    }

    /// Bytes from the start of the block's slab to the address it was located by.
    pub fn offset_in_slab(&self) -> usize {
        self.offset_in_slab
    }
}

#[cfg(any(debug_assertions, feature = "hardened"))]
impl<S: PageSource + Clone> fmt::Debug for LocatedBlock<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocatedBlock")
            .field("class_size", &self.class_size())
            .field("slab", &self.base)
            .field("offset_in_slab", &self.offset_in_slab)
            .finish()
    }
}

impl<S: PageSource + Clone> Drop for SlabHeap<S> {
    fn drop(&mut self) {
        if let Some(built) = NonNull::new(*self.built.get_mut()) {
            // SAFETY: we own the heap; blocks still out die with it (the `Allocator`
            // contract: they are valid only while the allocator lives).
            unsafe { Self::destroy(&self.source, built) };
        }
    }
}

impl<S: PageSource + Clone> fmt::Debug for SlabHeap<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlabHeap")
            .field("built", &self.built().is_some())
            .field("large_blocks", &self.large.blocks.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// SAFETY: blocks are at least `layout.size()` bytes aligned to `layout.align()` (class
// sizes and alignments are chosen for the layout, large blocks come from `MmapAlloc`);
// failures return null; nothing here unwinds (debug corruption checks abort).
unsafe impl<S: PageSource + Clone> GlobalAlloc for SlabHeap<S> {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_nonzero(layout)
            .map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = match class_for(layout.size(), layout.align()) {
            Some(class) => self
                .class(class)
                .and_then(|class| class.alloc(None).or_else(|| self.alloc_small_again(class))),
            None => self.alloc_large(layout, true),
        };
        match block {
            Some(block) => {
                if layout.size() <= crate::size_class::MAX_SMALL {
                    // SAFETY: the block holds at least `layout.size()` bytes.
                    unsafe { block.write_bytes(0, layout.size()) };
                }
                block.as_ptr()
            }
            None => ptr::null_mut(),
        }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(ptr) = NonNull::new(ptr) {
            // SAFETY: forwarded from the caller.
            unsafe { self.free(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(block) = NonNull::new(ptr) else {
            return ptr::null_mut();
        };
        // SAFETY: forwarded from the caller (non-zero, valid new size).
        unsafe { self.resize(block, layout, new_size) }.map_or(ptr::null_mut(), NonNull::as_ptr)
    }
}

/// A zero-sized block for `layout`.
fn dangling(layout: Layout) -> NonNull<[u8]> {
    let ptr = NonNull::<u8>::dangling().with_addr(
        core::num::NonZeroUsize::new(layout.align()).unwrap_or(core::num::NonZeroUsize::MIN),
    );
    NonNull::slice_from_raw_parts(ptr, 0)
}

// SAFETY: as for `GlobalAlloc`; blocks report their usable size, and any layout between
// the requested and the reported size maps to the same class (or to `MmapAlloc`, which
// rounds to pages), so deallocation finds the block's class.
unsafe impl<S: PageSource + Clone> Allocator for SlabHeap<S> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return Ok(dangling(layout));
        }
        let block = self.alloc_nonzero(layout).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(
            block,
            Self::usable_size(layout),
        ))
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: forwarded from the caller.
            unsafe { self.free(ptr, layout) }
        }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.resize_to(ptr, old, new) }
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.resize_to(ptr, old, new) }
    }
}

impl<S: PageSource + Clone> SlabHeap<S> {
    /// `grow` and `shrink` of [`Allocator`].
    ///
    /// # Safety
    /// - `ptr` is a block of this heap allocated with `old` (`Allocator` contract).
    unsafe fn resize_to(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        if old.size() == 0 {
            return self.allocate(new);
        }
        if new.size() == 0 {
            // SAFETY: forwarded.
            unsafe { self.free(ptr, old) };
            return Ok(dangling(new));
        }
        let block = if new.align() == old.align() {
            // SAFETY: forwarded; `new` is a valid layout.
            unsafe { self.resize(ptr, old, new.size()) }.ok_or(AllocError)?
        } else {
            // SAFETY: a live block of this heap with `old` (caller); `new` is non-zero.
            unsafe { self.resize_by_copy(ptr, old, new) }.ok_or(AllocError)?
        };
        Ok(NonNull::slice_from_raw_parts(block, Self::usable_size(new)))
    }
}
