//! Magazines and the per-thread magazine slots (Bonwick & Adams, "Magazines and Vmem:
//! Extending the Slab Allocator to Many CPUs and Arbitrary Resources", USENIX 2001).
//!
//! A *magazine* is a bounded stack of free objects of one cache. Here it is intrusive:
//! the objects are chained through a link word inside each free object (at the cache's
//! `link_offset`), and the magazine is just `(head, count)`. An empty magazine therefore
//! costs no memory, and moving a full one between a thread and the depot moves two words.
//!
//! Every thread has one [`Slot`] per cache id (see [`crate::registry`]) holding its
//! *loaded* and *previous* magazines. The paper's invariants hold: the previous magazine
//! is always either empty or full, so a thread alternating allocations and frees at a
//! magazine boundary swaps its two magazines instead of visiting the depot.
//!
//! # Safety
//! - A slot is read and written only by its thread, except (a) when the thread exits and
//!   its destructor flushes the slot, which is the thread itself, and (b) when a cache is
//!   dropped and sweeps the slots of its id in every thread. In case (b) no thread can be
//!   using the slot: the owner of a slot id is the cache being dropped, and dropping it
//!   requires that no thread still borrows it, with the happens-before edge that ended
//!   those borrows. Both (a) and (b) run under the registry lock.
//! - The fields are atomics accessed with `Relaxed` ordering, so that the sweeps of (b)
//!   are data-race free; on the fast path they compile to plain loads and stores.
//! - The objects of a magazine are free: nothing but the magazine refers to them, and the
//!   link word of each belongs to the allocator until the object is handed out again.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, Ordering::Relaxed};

/// The largest number of caches that can have per-thread magazines at once; caches made
/// beyond it work without them (every operation takes the cache lock).
pub(crate) const MAX_CACHE_IDS: usize = 128;

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

/// One thread's magazines for one cache id.
#[derive(Debug)]
#[repr(C, align(32))]
pub(crate) struct Slot {
    /// Head of the loaded magazine (null when empty).
    pub(crate) loaded: AtomicPtr<u8>,
    /// Objects in the loaded magazine.
    pub(crate) loaded_count: AtomicU32,
    /// How many objects a magazine of this slot holds; 0 while the thread has no
    /// magazines (not yet registered, registering, or exiting): every free then misses.
    pub(crate) capacity: AtomicU32,
    /// Head of the previous magazine: either empty or full (`capacity` objects).
    pub(crate) previous: AtomicPtr<u8>,
    /// Objects in the previous magazine.
    pub(crate) previous_count: AtomicU32,
    /// Operations served by the magazines since the last slow path (for statistics).
    pub(crate) hits: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            loaded: AtomicPtr::new(ptr::null_mut()),
            loaded_count: AtomicU32::new(0),
            capacity: AtomicU32::new(0),
            previous: AtomicPtr::new(ptr::null_mut()),
            previous_count: AtomicU32::new(0),
            hits: AtomicU32::new(0),
        }
    }

    /// The loaded magazine.
    #[inline(always)]
    pub(crate) fn loaded(&self) -> Magazine {
        Magazine {
            head: self.loaded.load(Relaxed),
            count: self.loaded_count.load(Relaxed),
        }
    }

    /// Replaces the loaded magazine.
    #[inline(always)]
    pub(crate) fn set_loaded(&self, magazine: Magazine) {
        self.loaded.store(magazine.head, Relaxed);
        self.loaded_count.store(magazine.count, Relaxed);
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

    /// Takes the hit count (reset to zero).
    #[inline]
    pub(crate) fn take_hits(&self) -> u32 {
        let hits = self.hits.load(Relaxed);
        self.hits.store(0, Relaxed);
        hits
    }
}

/// The thread has not used any magazine yet.
pub(crate) const UNREGISTERED: u8 = 0;
/// The thread is registering its exit hook; allocations meanwhile bypass the magazines.
pub(crate) const REGISTERING: u8 = 1;
/// The thread's magazines are in use.
pub(crate) const ACTIVE: u8 = 2;
/// The thread has exited (its destructor ran) or could not register: no magazines.
pub(crate) const RETIRED: u8 = 3;

/// The magazines of one thread: one slot per cache id, its registration state, and its
/// links in the registry's list of threads.
#[derive(Debug)]
pub(crate) struct ThreadMagazines {
    /// Indexed by cache id.
    pub(crate) slots: [Slot; MAX_CACHE_IDS],
    /// [`UNREGISTERED`], [`REGISTERING`], [`ACTIVE`] or [`RETIRED`]; written by the
    /// thread only.
    pub(crate) state: AtomicU8,
    /// Next thread in the registry (registry lock).
    pub(crate) next: AtomicPtr<ThreadMagazines>,
    /// Previous thread in the registry (registry lock).
    pub(crate) prev: AtomicPtr<ThreadMagazines>,
}

impl ThreadMagazines {
    const fn new() -> Self {
        ThreadMagazines {
            slots: [const { Slot::new() }; MAX_CACHE_IDS],
            state: AtomicU8::new(UNREGISTERED),
            next: AtomicPtr::new(ptr::null_mut()),
            prev: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The slot of cache `id` (masked, so no bounds check is needed).
    #[inline(always)]
    pub(crate) fn slot(&self, id: u32) -> &Slot {
        &self.slots[id as usize & (MAX_CACHE_IDS - 1)]
    }
}

std::thread_local! {
    /// Const-initialised and without `Drop`, so touching it never allocates nor registers
    /// a destructor; the exit hook is a separate pthread key (see [`crate::registry`]).
    static MAGAZINES: ThreadMagazines = const { ThreadMagazines::new() };
}

/// Runs `f` on the calling thread's magazines.
#[inline(always)]
pub(crate) fn with_magazines<R>(f: impl FnOnce(&ThreadMagazines) -> R) -> R {
    MAGAZINES.with(f)
}
