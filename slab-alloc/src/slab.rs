//! Slabs: fixed-size, size-aligned blocks carved into equal objects (Bonwick, "The Slab
//! Allocator: An Object-Caching Kernel Memory Allocator", USENIX 1994).
//!
//! A slab is [`SLAB_BYTES`] long and aligned to [`SLAB_BYTES`], so masking the address
//! of any object in it gives the address of its [`SlabHeader`]: no per-object header.
//! (The pointer to use for that address comes from [`crate::slab_map`], which keeps
//! each slab's base pointer with its provenance.)
//!
//! The largest size classes of [`SlabHeap`](crate::SlabHeap) (objects above 28 KiB) use
//! bigger slabs, a power-of-two multiple of [`SLAB_BYTES`] chosen by [`heap_class_geometry`]
//! so that at least [`MIN_OBJECTS_PER_SLAB`] objects fit (as mimalloc's medium pages
//! and jemalloc's multi-page slabs do). Such a slab is aligned to [`SLAB_BYTES`] only:
//! masking an object's address gives one of its [`SLAB_BYTES`] granules, and the slab
//! map records the slab's base for every granule, so the lookup is the same for every
//! slab.
//!
//! ```text
//! base                                                         base + geometry.slab_bytes
//! | SlabHeader | owner + live bitmap (debug) | pad | obj 0 | obj 1 | ... | obj n-1 | tail |
//!                                                ^ first_offset, a multiple of align
//! ```
//!
//! Objects are carved lazily with a bump index (`carved`), so untouched pages of a new
//! slab are never faulted in; returned objects go on an intrusive free list threaded
//! through the link word of each object (at the cache's `link_offset`).
//!
//! # Safety
//! All fields of a header are read and written only with the owning cache's lock held
//! (the holder borrows the header mutably). In debug builds and with the `hardened`
//! feature the owner word and the live bitmap after the header are read without the lock: the owner word is written before
//! the slab is published in the slab map and never changes, and the bitmap words are
//! atomics that any thread may update for objects it owns.

use core::mem::size_of;
use core::ptr::{self, NonNull};
#[cfg(any(debug_assertions, feature = "hardened"))]
use core::sync::atomic::{AtomicU64, Ordering};

use crate::registry::CoreHeader;

/// Bytes per slab (and their alignment); the granule of the slab map. Slabs of the
/// largest heap classes are a power-of-two multiple of it, chosen per class so that at
/// least `MIN_OBJECTS_PER_SLAB` objects fit.
pub const SLAB_BYTES: usize = 256 * 1024;

/// Objects a slab of a heap class holds at least: [`heap_class_geometry`] doubles the slab
/// until this many fit.
pub(crate) const MIN_OBJECTS_PER_SLAB: usize = 8;

/// The largest slab [`heap_class_geometry`] picks.
pub(crate) const MAX_SLAB_BYTES: usize = 8 * SLAB_BYTES;

/// The layout of a heap class's slabs for objects of `slot_size` bytes aligned to
/// `align`: the smallest power-of-two multiple of [`SLAB_BYTES`] (at most
/// [`MAX_SLAB_BYTES`]) that holds at least [`MIN_OBJECTS_PER_SLAB`] of them after the
/// header. `None` if not even [`MAX_SLAB_BYTES`] holds one.
pub(crate) fn heap_class_geometry(slot_size: usize, align: usize) -> Option<Geometry> {
    let mut slab_bytes = SLAB_BYTES;
    loop {
        let geometry = Geometry::with_slab_bytes(slot_size, align, false, slab_bytes);
        let enough = geometry.is_some_and(|geometry| geometry.capacity >= MIN_OBJECTS_PER_SLAB);
        if enough || slab_bytes >= MAX_SLAB_BYTES {
            return geometry;
        }
        slab_bytes *= 2;
    }
}

const MAGIC: u32 = 0x51AB_0A11;

/// How a cache lays out its slabs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes from one object to the next, a multiple of `align`.
    pub(crate) slot_size: usize,
    /// The alignment of every object.
    pub(crate) align: usize,
    /// Where, inside a free object, the link word lives.
    pub(crate) link_offset: usize,
    /// Offset of object 0 from the slab base.
    pub(crate) first_offset: usize,
    /// Objects per slab.
    pub(crate) capacity: usize,
    /// Bytes per slab: [`SLAB_BYTES`] times a power of two. Slabs are aligned to
    /// [`SLAB_BYTES`] only.
    pub(crate) slab_bytes: usize,
}

/// Words kept after the header in debug builds and with the `hardened` feature: the
/// owner word, then the live bitmap.
///
/// The owner is kept there, outside the header, for the lock-free checks of
/// [`debug_mark`]: the lock holder borrows the whole header mutably (which the memory
/// model counts as a write of all its bytes), so no other thread may read the header.
fn debug_words(capacity_bound: usize) -> usize {
    if cfg!(any(debug_assertions, feature = "hardened")) {
        1 + capacity_bound.div_ceil(64)
    } else {
        0
    }
}

impl Geometry {
    /// The layout for objects of `object_size` bytes aligned to `align` (a power of two).
    /// With `link_after_object` the link word is placed after the object, so a free
    /// object keeps its contents (constructed objects); otherwise it is the object's
    /// first word. Slabs are [`SLAB_BYTES`] long. `None` if an object takes more than
    /// half a slab.
    pub(crate) fn new(object_size: usize, align: usize, link_after_object: bool) -> Option<Self> {
        Self::with_slab_bytes(object_size, align, link_after_object, SLAB_BYTES)
    }

    /// As [`new`](Self::new), with slabs of `slab_bytes` (a power-of-two multiple of
    /// [`SLAB_BYTES`]).
    pub(crate) fn with_slab_bytes(
        object_size: usize,
        align: usize,
        link_after_object: bool,
        slab_bytes: usize,
    ) -> Option<Self> {
        if !align.is_power_of_two()
            || align > SLAB_BYTES / 8
            || !slab_bytes.is_multiple_of(SLAB_BYTES)
            || !(slab_bytes / SLAB_BYTES).is_power_of_two()
        {
            return None;
        }
        let word = size_of::<*mut u8>();
        let align = align.max(word);
        let (link_offset, bytes) = if link_after_object {
            let link = object_size.checked_next_multiple_of(word)?;
            (link, link + word)
        } else {
            (0, object_size.max(word))
        };
        let slot_size = bytes.checked_next_multiple_of(align)?;
        if slot_size > slab_bytes / 2 {
            return None;
        }
        let header = size_of::<SlabHeader>() + debug_words(slab_bytes / slot_size) * 8;
        let first_offset = header.next_multiple_of(align);
        let capacity = (slab_bytes - first_offset) / slot_size;
        (capacity >= 1 && capacity <= u32::MAX as usize).then_some(Geometry {
            slot_size,
            align,
            link_offset,
            first_offset,
            capacity,
            slab_bytes,
        })
    }
}

/// Which list of its cache a slab is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Some objects out, some available.
    Partial,
    /// Every object out.
    Full,
    /// No object out.
    Empty,
}

/// The header at the start of every slab.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SlabHeader {
    /// [`MAGIC`], checked by `check`.
    magic: u32,
    /// Objects out of the slab: handed to users or held in magazines and the depot.
    pub(crate) used: u32,
    /// Objects carved so far; those at index `carved..capacity` were never used.
    pub(crate) carved: u32,
    /// Objects the slab holds.
    pub(crate) capacity: u32,
    /// The cache that owns the slab.
    pub(crate) owner: *const CoreHeader,
    /// The slab's base, with the provenance of the whole slab.
    pub(crate) base: *mut u8,
    /// Intrusive list of returned objects.
    free: *mut u8,
    /// The list the slab is on.
    pub(crate) list: ListKind,
    /// Neighbours on that list.
    pub(crate) prev: *mut SlabHeader,
    pub(crate) next: *mut SlabHeader,
}

/// The head of a slab's free list.
pub(crate) fn free_list_of(header: &SlabHeader) -> *mut u8 {
    header.free
}

/// Writes the header of a fresh slab; it starts on no list (`list` says `Empty`).
///
/// # Safety
/// - `base` is aligned to [`SLAB_BYTES`] and valid for writes of `geometry.slab_bytes`
///   bytes that nothing else uses.
pub(crate) unsafe fn init(
    base: NonNull<u8>,
    geometry: &Geometry,
    owner: *const CoreHeader,
) -> NonNull<SlabHeader> {
    let header = base.cast::<SlabHeader>();
    // SAFETY: the header fits at the start of the slab, which the caller gives us.
    unsafe {
        header.write(SlabHeader {
            magic: MAGIC,
            used: 0,
            carved: 0,
            capacity: geometry.capacity as u32,
            owner,
            base: base.as_ptr(),
            free: ptr::null_mut(),
            list: ListKind::Empty,
            prev: ptr::null_mut(),
            next: ptr::null_mut(),
        });
    }
    #[cfg(any(debug_assertions, feature = "hardened"))]
    {
        let words = debug_words(geometry.slab_bytes / geometry.slot_size);
        // SAFETY: the owner word and the bitmap lie between the header and
        // `first_offset`, inside the slab; nobody else sees the slab yet.
        unsafe {
            let debug = base.add(size_of::<SlabHeader>()).cast::<u64>();
            debug.write_bytes(0, words);
            debug.cast::<*const CoreHeader>().write(owner);
        };
    }
    header
}

impl SlabHeader {
    /// The object at `index`.
    fn object(&self, geometry: &Geometry, index: usize) -> NonNull<u8> {
        debug_assert!(index < self.capacity as usize);
        let object = self
            .base
            .wrapping_add(geometry.first_offset + index * geometry.slot_size);
        // `base` is non-null and the offset stays inside the slab (index < capacity).
        NonNull::new(object).unwrap_or(NonNull::dangling())
    }

    /// Takes an available object; the bool says whether it was never used before (fresh
    /// from the bump index). `None` when the slab is full.
    ///
    /// # Safety
    /// - The caller holds the owning cache's lock and `geometry` is the cache's.
    pub(crate) unsafe fn take(&mut self, geometry: &Geometry) -> Option<(NonNull<u8>, bool)> {
        if let Some(object) = NonNull::new(self.free) {
            // SAFETY: objects on the free list are free and their link word was written
            // by `give`.
            self.free = unsafe { object.add(geometry.link_offset).cast::<*mut u8>().read() };
            self.used += 1;
            return Some((object, false));
        }
        if self.carved < self.capacity {
            let object = self.object(geometry, self.carved as usize);
            self.carved += 1;
            self.used += 1;
            return Some((object, true));
        }
        None
    }

    /// Takes back an object.
    ///
    /// # Safety
    /// - The caller holds the owning cache's lock and `geometry` is the cache's.
    /// - `object` was taken from this slab and is free (nobody uses it any more).
    pub(crate) unsafe fn give(&mut self, geometry: &Geometry, object: NonNull<u8>) {
        debug_assert!(
            self.used > 0,
            "object {object:p} given back to slab {:p} with no object out",
            self.base
        );
        // SAFETY: the link word lies inside the free object, which is ours again.
        unsafe {
            object
                .add(geometry.link_offset)
                .cast::<*mut u8>()
                .write(self.free)
        };
        self.free = object.as_ptr();
        self.used -= 1;
    }

    /// Calls `f` on every carved object (for destroying constructed objects when the
    /// slab is reclaimed).
    pub(crate) fn for_each_carved(&self, geometry: &Geometry, mut f: impl FnMut(NonNull<u8>)) {
        for index in 0..self.carved as usize {
            f(self.object(geometry, index));
        }
    }

    /// Checks the free list against the counters; returns how many objects it holds.
    pub(crate) fn check(&self, geometry: &Geometry) -> usize {
        assert_eq!(self.magic, MAGIC, "slab {:p}: bad magic", self.base);
        assert!(self.used <= self.carved && self.carved <= self.capacity);
        let mut free = 0usize;
        let mut object = self.free;
        while let Some(current) = NonNull::new(object) {
            let offset = current.addr().get() - self.base.addr();
            assert!(
                offset >= geometry.first_offset
                    && (offset - geometry.first_offset).is_multiple_of(geometry.slot_size)
                    && (offset - geometry.first_offset) / geometry.slot_size < self.carved as usize,
                "slab {:p}: free list holds {current:p}, not one of its carved objects",
                self.base
            );
            free += 1;
            assert!(
                free <= self.carved as usize,
                "slab {:p}: free list cycles",
                self.base
            );
            // SAFETY: free objects carry the link written by `give`; we hold the lock.
            object = unsafe { current.add(geometry.link_offset).cast::<*mut u8>().read() };
        }
        assert_eq!(
            free + self.used as usize,
            self.carved as usize,
            "slab {:p}: free + used != carved",
            self.base
        );
        free
    }
}

/// Checks, in debug builds and with the `hardened` feature, that `object` is an object of a slab of `owner` and flips its
/// live bit to `live`; aborts with a message on a foreign pointer, a double free, or
/// handing out an object already out.
///
/// # Safety
/// - `object` lies inside a mapped slab (its slab header is readable).
#[cfg(any(debug_assertions, feature = "hardened"))]
pub(crate) unsafe fn debug_mark(
    object: NonNull<u8>,
    owner: *const CoreHeader,
    geometry: &Geometry,
    live: bool,
) {
    use crate::sync::fatal;
    let Some(base) = crate::slab_map::lookup(object.addr().get() & !(SLAB_BYTES - 1)) else {
        fatal(
            "free of a pointer this allocator did not hand out (object, cache)",
            object.addr().get(),
            owner.addr(),
        );
    };
    let base = base.as_ptr();
    let debug = base.wrapping_add(size_of::<SlabHeader>());
    // SAFETY: the caller guarantees the slab is mapped (the map says it is live); the
    // owner word is written once before the slab is published in the map (release, our
    // lookup acquires) and never changes while the slab is live.
    let slab_owner = unsafe { debug.cast::<*const CoreHeader>().read() };
    if slab_owner != owner {
        fatal(
            "free into the wrong heap: this cache or heap did not hand out the pointer, \
             another one did (object, cache)",
            object.addr().get(),
            owner.addr(),
        );
    }
    let offset = object.addr().get() - base.addr();
    if offset < geometry.first_offset
        || !(offset - geometry.first_offset).is_multiple_of(geometry.slot_size)
    {
        fatal(
            "free of a pointer that is not the start of an object (object, slab)",
            object.addr().get(),
            base.addr(),
        );
    }
    let index = (offset - geometry.first_offset) / geometry.slot_size;
    if index >= geometry.capacity {
        fatal(
            "free of a pointer past the slab's objects (object, slab)",
            object.addr().get(),
            base.addr(),
        );
    }
    // SAFETY: the bitmap words lie right after the owner word, inside the slab; they are
    // atomics, and `index / 64` is below the bitmap's length (index < capacity).
    let word = unsafe { &*debug.add(8).cast::<AtomicU64>().add(index / 64) };
    let bit = 1u64 << (index % 64);
    if live {
        let before = word.fetch_or(bit, Ordering::Relaxed);
        if before & bit != 0 {
            fatal(
                "object handed out twice (corrupted free list?) (object, slab)",
                object.addr().get(),
                base.addr(),
            );
        }
    } else {
        let before = word.fetch_and(!bit, Ordering::Relaxed);
        if before & bit == 0 {
            fatal(
                "double free (object, slab)",
                object.addr().get(),
                base.addr(),
            );
        }
    }
}

/// The owner word of the live slab at `base` (debug builds and `hardened`).
///
/// # Safety
/// - `base` is the base pointer of a live slab, as [`crate::slab_map::lookup`] gives it.
#[cfg(any(debug_assertions, feature = "hardened"))]
pub(crate) unsafe fn debug_owner(base: NonNull<u8>) -> *const CoreHeader {
    // SAFETY: the owner word follows the header inside the live slab (caller); it is
    // written before the slab is published and never changes while the slab is live.
    unsafe {
        base.add(size_of::<SlabHeader>())
            .cast::<*const CoreHeader>()
            .read()
    }
}

/// Whether object `index` (below the geometry's capacity) of the live slab at `base` is
/// handed out, by the live bitmap (debug builds and `hardened`).
///
/// # Safety
/// - `base` is the base pointer of a live slab of a cache with a geometry whose
///   capacity is above `index`.
#[cfg(any(debug_assertions, feature = "hardened"))]
pub(crate) unsafe fn debug_is_live(base: NonNull<u8>, index: usize) -> bool {
    // SAFETY: the bitmap words follow the owner word inside the slab and are atomics;
    // `index / 64` is inside the bitmap (caller).
    let word = unsafe {
        &*base
            .add(size_of::<SlabHeader>() + 8)
            .cast::<AtomicU64>()
            .add(index / 64)
            .as_ptr()
    };
    word.load(Ordering::Relaxed) & (1u64 << (index % 64)) != 0
}

/// A doubly linked list of slabs through their headers.
#[derive(Debug)]
pub(crate) struct SlabList {
    pub(crate) head: *mut SlabHeader,
    pub(crate) len: usize,
    kind: ListKind,
}

impl SlabList {
    pub(crate) const fn new(kind: ListKind) -> Self {
        SlabList {
            head: ptr::null_mut(),
            len: 0,
            kind,
        }
    }

    /// Pushes a slab that is on no list.
    ///
    /// # Safety
    /// - The caller holds the owning cache's lock; `slab` is a live slab of that cache on
    ///   no list.
    pub(crate) unsafe fn push(&mut self, slab: NonNull<SlabHeader>) {
        // SAFETY: the caller holds the lock that guards the header.
        let header = unsafe { &mut *slab.as_ptr() };
        header.list = self.kind;
        header.prev = ptr::null_mut();
        header.next = self.head;
        if let Some(head) = NonNull::new(self.head) {
            // SAFETY: slabs on the list are live; lock held.
            unsafe { (*head.as_ptr()).prev = slab.as_ptr() };
        }
        self.head = slab.as_ptr();
        self.len += 1;
    }

    /// Unlinks a slab that is on this list.
    ///
    /// # Safety
    /// - The caller holds the owning cache's lock; `slab` is on this list.
    pub(crate) unsafe fn remove(&mut self, slab: NonNull<SlabHeader>) {
        // SAFETY: the caller holds the lock that guards the header.
        let header = unsafe { &mut *slab.as_ptr() };
        debug_assert_eq!(header.list, self.kind, "slab {slab:p} is not on this list");
        if let Some(prev) = NonNull::new(header.prev) {
            // SAFETY: a neighbour on the same list; lock held.
            unsafe { (*prev.as_ptr()).next = header.next };
        } else {
            self.head = header.next;
        }
        if let Some(next) = NonNull::new(header.next) {
            // SAFETY: as above.
            unsafe { (*next.as_ptr()).prev = header.prev };
        }
        header.prev = ptr::null_mut();
        header.next = ptr::null_mut();
        self.len -= 1;
    }

    /// Removes and returns the first slab.
    ///
    /// # Safety
    /// - The caller holds the owning cache's lock.
    pub(crate) unsafe fn pop(&mut self) -> Option<NonNull<SlabHeader>> {
        let head = NonNull::new(self.head)?;
        // SAFETY: `head` is on this list; lock held (caller).
        unsafe { self.remove(head) };
        Some(head)
    }
}
