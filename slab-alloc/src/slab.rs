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
//! | SlabHeader | owner (debug) | pad | obj 0 | obj 1 | ... | obj n-1 | tail |
//!                                                ^ first_offset, a multiple of align
//! ```
//!
//! Objects are carved lazily with a bump index (`carved`), so untouched pages of a new
//! slab are never faulted in; returned objects go on an intrusive free list threaded
//! through the link word of each object (at the cache's `link_offset`).
//!
//! In debug builds and with the `hardened` feature every object that is not handed out
//! carries a *free tag* (a word derived from its address and a random secret of the
//! process) in the word after its link word, and so does the first object never carved
//! (the *frontier*). A free checks that the tag is absent (else it is a double free) and
//! writes it; handing an object out checks that it is present (else the free object was
//! overwritten: a write past the end of the block before it, or a write after free)
//! before its link word is read, and clears it. The checks touch only the object's own
//! words, which the operation touches anyway, and the slab's owner word, which is never
//! written after the slab is made (so it stays in every core's cache): no atomic
//! read-modify-write and no write to a line that other threads' operations use.
//!
//! # Safety
//! All fields of a header are read and written only with the owning cache's lock held
//! (the holder borrows the header mutably). In debug builds and with the `hardened`
//! feature the owner word after the header is read without the lock: it is written before
//! the slab is published in the slab map and never changes. A free object's tag word is
//! written by the thread that frees it and read by the one that takes it out of a
//! magazine, the depot or the slab: the object moves between them through the same
//! synchronisation as its link word.

use core::mem::size_of;
use core::ptr::{self, NonNull};
#[cfg(any(debug_assertions, feature = "hardened"))]
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::magazine::INLINE_SLOTS;
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
    /// `ceil(2^64 / slot_size)`: an offset below 2^32 divided by `slot_size` is
    /// `(offset * slot_divisor) >> 64` (Lemire, Kaser and Kurz, "Faster remainder by
    /// direct computation", 2019), a multiplication instead of a division.
    pub(crate) slot_divisor: u64,
}

/// Words kept after the header in debug builds and with the `hardened` feature: the
/// owner word.
///
/// The owner is kept there, outside the header, for the lock-free checks of
/// [`mark_free`] and [`mark_handed_out`]: the lock holder borrows the whole header
/// mutably (which the memory model counts as a write of all its bytes), so no other
/// thread may read the header.
const DEBUG_WORDS: usize = if cfg!(any(debug_assertions, feature = "hardened")) {
    1
} else {
    0
};

/// Words a free object needs: its link word, and in debug builds and with the
/// `hardened` feature its free tag after it (module docs).
pub(crate) const FREE_WORDS: usize = if cfg!(any(debug_assertions, feature = "hardened")) {
    2
} else {
    1
};

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
            (link, link + FREE_WORDS * word)
        } else {
            (0, object_size.max(FREE_WORDS * word))
        };
        let slot_size = bytes.checked_next_multiple_of(align)?;
        if slot_size > slab_bytes / 2 {
            return None;
        }
        let header = size_of::<SlabHeader>() + DEBUG_WORDS * word;
        let first_offset = header.next_multiple_of(align);
        let capacity = (slab_bytes - first_offset) / slot_size;
        (capacity >= 1 && capacity <= u32::MAX as usize).then_some(Geometry {
            slot_size,
            align,
            link_offset,
            first_offset,
            capacity,
            slab_bytes,
            slot_divisor: (u64::MAX / slot_size as u64).wrapping_add(1),
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

// One cache line.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<SlabHeader>() == 64);

/// The slab map's tag of a slab owned by the cache whose header is `owner`: the header's
/// address, with the cache's fast index in its low bits (a header is aligned to at
/// least the number of fast indices, so they are clear). C's `free` reads owner and
/// fast index from it instead of from the slab's header (see [`crate::slab_map`]).
pub(crate) fn owner_tag(owner: &CoreHeader) -> usize {
    debug_assert!((owner.fast_id as usize) < INLINE_SLOTS);
    ptr::from_ref(owner).addr() | owner.fast_id as usize
}

/// The owner's address in a tag made by [`owner_tag`].
#[inline(always)]
pub(crate) fn tag_owner_address(tag: usize) -> usize {
    tag & !(INLINE_SLOTS - 1)
}

/// The owner's fast index in a tag made by [`owner_tag`].
#[inline(always)]
pub(crate) fn tag_fast_id(tag: usize) -> u32 {
    (tag & (INLINE_SLOTS - 1)) as u32
}

// The fast indices fit below a header's alignment.
const _: () = assert!(align_of::<CoreHeader>() >= INLINE_SLOTS && INLINE_SLOTS.is_power_of_two());

/// The head of a slab's free list.
pub(crate) fn free_list_of(header: &SlabHeader) -> *mut u8 {
    header.free
}

/// Writes the header of a fresh slab; it starts on no list (`list` says `Empty`).
///
/// # Safety
/// - `base` is aligned to [`SLAB_BYTES`] and valid for writes of `geometry.slab_bytes`
///   bytes that nothing else uses.
/// - `owner` is the header of a live, registered cache.
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
        init_secret();
        // SAFETY: the owner word lies between the header and `first_offset`, and object
        // 0 (the frontier) after it, inside the slab; nobody else sees the slab yet.
        unsafe {
            base.add(size_of::<SlabHeader>())
                .cast::<*const CoreHeader>()
                .write(owner);
            write_tag(
                base.add(geometry.first_offset),
                geometry.link_offset,
                TagState::Free,
            );
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
            // A free-list entry that is not a free object of this slab's cache (an
            // overwritten link word) is reported before its link word is read.
            #[cfg(any(debug_assertions, feature = "hardened"))]
            check_free(object, self.owner, geometry);
            // SAFETY: objects on the free list are free and their link word was written
            // by `give`.
            self.free = unsafe { object.add(geometry.link_offset).cast::<*mut u8>().read() };
            self.used += 1;
            return Some((object, false));
        }
        if self.carved < self.capacity {
            let object = self.object(geometry, self.carved as usize);
            // The frontier carries the free tag (the block before it may have run over
            // it); it moves to the next object.
            #[cfg(any(debug_assertions, feature = "hardened"))]
            // SAFETY: the next object is inside this slab, which the caller's lock gives
            // us, and is not handed out.
            unsafe {
                check_free(object, self.owner, geometry);
                if self.carved + 1 < self.capacity {
                    let next = self.object(geometry, self.carved as usize + 1);
                    write_tag(next, geometry.link_offset, TagState::Free);
                }
            }
            self.carved += 1;
            self.used += 1;
            return Some((object, true));
        }
        None
    }

    /// The first object never carved, if any (it carries the free tag in debug builds
    /// and with the `hardened` feature).
    #[cfg(any(debug_assertions, feature = "hardened"))]
    pub(crate) fn frontier(&self, geometry: &Geometry) -> Option<NonNull<u8>> {
        (self.carved < self.capacity).then(|| self.object(geometry, self.carved as usize))
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

/// The secret the free tags are derived from: random per process, set (non-zero) when
/// the first slab is made.
#[cfg(any(debug_assertions, feature = "hardened"))]
static SECRET: AtomicUsize = AtomicUsize::new(0);

/// Sets [`SECRET`] if it is not set yet. Allocates nothing (the keys of `RandomState`
/// come from the OS into a thread-local without destructor).
#[cfg(any(debug_assertions, feature = "hardened"))]
fn init_secret() {
    use std::hash::BuildHasher;
    if SECRET.load(Ordering::Relaxed) == 0 {
        let random = std::collections::hash_map::RandomState::new().hash_one(0x51AB_u64);
        let _ = SECRET.compare_exchange(
            0,
            (random as usize) | 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// The free tag of the object at `address` (module docs).
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
fn free_tag(address: usize) -> usize {
    SECRET.load(Ordering::Relaxed) ^ address.rotate_left(29)
}

/// What a tag word is set to.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum TagState {
    /// The object is free (or is the frontier).
    Free,
    /// The object is handed out.
    HandedOut,
}

/// The tag word of the object at `object` (after its link word).
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
fn tag_word(object: NonNull<u8>, link_offset: usize) -> *mut usize {
    object
        .as_ptr()
        .wrapping_add(link_offset + size_of::<*mut u8>())
        .cast::<usize>()
}

/// Writes the tag word of an object.
///
/// # Safety
/// - `object` is an object (with the slab's provenance) of a live slab whose geometry
///   has `link_offset`, and the caller may write its free words.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
unsafe fn write_tag(object: NonNull<u8>, link_offset: usize, state: TagState) {
    let value = match state {
        TagState::Free => free_tag(object.addr().get()),
        TagState::HandedOut => 0,
    };
    // SAFETY: the free words lie inside the object's slot (caller).
    unsafe { tag_word(object, link_offset).write(value) };
}

/// Locates `object` in the slab map and checks that it is the start of an object of a
/// slab of `owner`; aborts with a message naming the problem otherwise. Returns the
/// object with the slab's provenance, and the slab's base.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
fn locate(
    object: NonNull<u8>,
    owner: *const CoreHeader,
    geometry: &Geometry,
) -> (NonNull<u8>, NonNull<u8>) {
    use crate::sync::fatal;
    let address = object.addr().get();
    let Some(base) = crate::slab_map::lookup(address & !(SLAB_BYTES - 1)) else {
        fatal(
            "free of a pointer this allocator did not hand out (object, cache)",
            address,
            owner.addr(),
        );
    };
    // SAFETY: `base` is a live slab's base from the slab map.
    if unsafe { debug_owner(base) } != owner {
        fatal(
            "free into the wrong heap: this cache or heap did not hand out the pointer, \
             another one did (object, cache)",
            address,
            owner.addr(),
        );
    }
    (check_slot(object, base, geometry), base)
}

/// Checks that `object`, which lies in the live slab at `base` with `geometry`, is the
/// start of one of its objects; aborts with a message naming the problem otherwise.
/// Returns the object with the slab's provenance.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
fn check_slot(object: NonNull<u8>, base: NonNull<u8>, geometry: &Geometry) -> NonNull<u8> {
    use crate::sync::fatal;
    let address = object.addr().get();
    let offset = address.wrapping_sub(base.addr().get());
    // A pointer before the slab's first object, or past the slab (possible only for a
    // caller that located the slab itself), is at no object's start.
    let Some(relative) = offset
        .checked_sub(geometry.first_offset)
        .filter(|&relative| relative < geometry.slab_bytes)
    else {
        fatal(
            "free of a pointer that is not the start of an object (object, slab)",
            address,
            base.addr().get(),
        );
    };
    // Slabs are at most a few MiB: the offset is below 2^32, where the multiplication
    // gives the exact quotient.
    let index = ((u128::from(geometry.slot_divisor) * relative as u128) >> 64) as usize;
    if index * geometry.slot_size != relative {
        fatal(
            "free of a pointer that is not the start of an object (object, slab)",
            address,
            base.addr().get(),
        );
    }
    if index >= geometry.capacity {
        fatal(
            "free of a pointer past the slab's objects (object, slab)",
            address,
            base.addr().get(),
        );
    }
    base.with_addr(object.addr())
}

/// Checks, in debug builds and with the `hardened` feature, that `object` is an object
/// of a slab of `owner` that is handed out, and marks it free (writes its free tag);
/// aborts with a message on a foreign, interior or misaligned pointer, and on a double
/// free.
///
/// An object whose tag word holds its free tag while handed out (its owner wrote exactly
/// that word there) would be reported as a double free: with a random secret, a chance
/// of 2^-64 for data that does not depend on the secret.
///
/// # Safety
/// - If `object` is the start of an object of a live slab of `owner`, the caller owns
///   it (it is being freed), and `object` may write its first `link_offset + 16`
///   bytes.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn mark_free(object: NonNull<u8>, owner: *const CoreHeader, geometry: &Geometry) {
    let (_, base) = locate(object, owner, geometry);
    // SAFETY: an object of a live slab of ours at a slot start (checked), which the
    // caller owns.
    unsafe { write_free_tag(object, base, geometry) }
}

/// [`mark_free`] for a caller that located the object's slab itself (the C ABI's
/// hardened `free`, which looks the pointer up once for its own checks): checks that
/// `object` is at the start of an object of the slab at `base`, and that it is not free
/// already, then marks it free. Aborts with a message otherwise.
///
/// # Safety
/// - `base` is the base of a live slab of the cache that frees `object`, with `geometry`
///   (from the slab map, and the slab's owner word checked by the caller), and `object`
///   lies in that slab.
/// - If `object` is the start of an object of that slab, the caller owns it (it is
///   being freed), and `object` may write its first `link_offset + 16` bytes.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn mark_free_in_slab(
    object: NonNull<u8>,
    base: NonNull<u8>,
    geometry: &Geometry,
) {
    check_slot(object, base, geometry);
    // SAFETY: at a slot start of a live slab of the freeing cache (checked, caller),
    // owned by the caller.
    unsafe { write_free_tag(object, base, geometry) }
}

/// The double-free check and the free tag of [`mark_free`], for an object already found
/// at a slot start of the live slab at `base`.
///
/// # Safety
/// - `object` is at a slot start of the live slab at `base` with `geometry`, owned by
///   the caller, and may write its first `link_offset + 16` bytes.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
unsafe fn write_free_tag(object: NonNull<u8>, base: NonNull<u8>, geometry: &Geometry) {
    // The tag word is reached through the caller's pointer, not the slab's: a `Box`
    // being freed is protected for the length of the call, so (under Stacked Borrows)
    // an access to its bytes through another pointer would be undefined. The heap gives
    // the slab's pointer for a block too short to cover the tag word.
    //
    // Under miri, which tracks uninitialised bytes, the word is not read: a live
    // object's owner may have left it uninitialised (or copied padding into it), and
    // reading that as an integer is undefined behaviour in the abstract machine. The
    // double-free check then runs natively only (the death tests spawn processes, which
    // miri does not run anyway); everything else is checked alike.
    let tag = free_tag(object.addr().get());
    let word = tag_word(object, geometry.link_offset);
    #[cfg(not(miri))]
    // SAFETY: an object of a live slab of ours, at a slot start (caller), which the
    // caller owns: its free words are inside its slot.
    if unsafe { word.read() } == tag {
        crate::sync::fatal(
            "double free (object, slab)",
            object.addr().get(),
            base.addr().get(),
        );
    }
    #[cfg(miri)]
    let _ = base;
    // SAFETY: as above.
    unsafe { word.write(tag) };
}

/// Checks that `object`, taken from a chain of free objects of `owner` (a magazine, the
/// depot or a slab's free list), is a free object of a slab of `owner`: at the start of
/// an object and carrying its free tag. Aborts otherwise: the object (or the link word
/// that led to it) was overwritten, by a write past the end of the block before it or a
/// write after free. Called before the object's link word is read.
/// Returns the object with the slab's provenance.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
pub(crate) fn check_free(
    object: NonNull<u8>,
    owner: *const CoreHeader,
    geometry: &Geometry,
) -> NonNull<u8> {
    let (object, base) = locate(object, owner, geometry);
    // SAFETY: an object of a live slab of ours (checked): its tag word is inside its
    // slot, and free objects' words belong to the allocator.
    if unsafe { tag_word(object, geometry.link_offset).read() } != free_tag(object.addr().get()) {
        crate::sync::fatal(
            "a free block was overwritten: a write past the end of the block before it, \
             or a write after free (object, slab)",
            object.addr().get(),
            base.addr().get(),
        );
    }
    object
}

/// [`check_free`], then marks the object handed out (clears its tag). Returns the
/// object with the slab's provenance, which is what must be handed out: the tag was
/// written through it, which (under Stacked Borrows) ends the access of the pointers
/// of the object's previous owner to the tag word.
///
/// Not inlined: the allocation fast path calls it inside its thread-local closure,
/// which must stay small to be inlined itself.
///
/// # Safety
/// - The caller takes `object` out of its chain (it is being handed out).
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(never)]
pub(crate) unsafe fn mark_handed_out(
    object: NonNull<u8>,
    owner: *const CoreHeader,
    geometry: &Geometry,
) -> NonNull<u8> {
    let object = check_free(object, owner, geometry);
    // SAFETY: checked to be a free object of ours, now the caller's.
    unsafe { write_tag(object, geometry.link_offset, TagState::HandedOut) };
    object
}

/// Checks that `object`, the head of the calling thread's loaded magazine, carries its
/// free tag, then marks it handed out (clears the tag); aborts with a message otherwise
/// (the free object, or the link word that led to it, was overwritten). Called before
/// the object's link word is read.
///
/// Unlike [`mark_handed_out`] it does not locate the object's slab: every object that
/// reaches a magazine was carved by a slab of the cache or passed [`mark_free`]'s full
/// check (slab map, owner, slot) when it was freed, and its tag is keyed by its address with the process's secret, so an overwritten
/// object or a link that was overwritten to lead anywhere else fails the comparison
/// (but for a 2^-64 chance, or a link that names another free object exactly). What
/// the lookup added was the slab's owner word, a cache line of the slab's header read
/// on every allocation (18% of the hardened build's time on mimalloc-bench's larson).
/// A link overwritten with an unmapped address faults on the read here instead of
/// being reported, as glibc's tcache does.
///
/// # Safety
/// - `object` is the head of the calling thread's loaded magazine of a cache with
///   `link_offset` (its words are the allocator's until it is handed out), or a link
///   word overwritten by a program's bug; the caller takes it out of the magazine.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn take_from_magazine(object: NonNull<u8>, link_offset: usize) -> NonNull<u8> {
    let tag = tag_word(object, link_offset);
    // SAFETY: a free object's tag word is inside its slot and belongs to the allocator
    // while the object is in a magazine (caller).
    if unsafe { tag.read() } != free_tag(object.addr().get()) {
        overwritten_in_magazine(object);
    }
    // SAFETY: as above; the object is now the caller's, its tag cleared first.
    unsafe { tag.write(0) };
    object
}

/// Reports an object of a magazine that lost its free tag ([`take_from_magazine`]).
#[cfg(any(debug_assertions, feature = "hardened"))]
#[cold]
#[inline(never)]
fn overwritten_in_magazine(object: NonNull<u8>) -> ! {
    let address = object.addr().get();
    let slab =
        crate::slab_map::lookup(address & !(SLAB_BYTES - 1)).map_or(0, |base| base.addr().get());
    crate::sync::fatal(
        "a free block was overwritten: a write past the end of the block before it, \
         or a write after free (object, slab)",
        address,
        slab,
    )
}

/// The owner word of the live slab at `base` (debug builds and `hardened`).
///
/// # Safety
/// - `base` is the base pointer of a live slab, as [`crate::slab_map::lookup`] gives it.
#[cfg(any(debug_assertions, feature = "hardened"))]
#[inline(always)]
pub(crate) unsafe fn debug_owner(base: NonNull<u8>) -> *const CoreHeader {
    // SAFETY: the owner word follows the header inside the live slab (caller); it is
    // written before the slab is published and never changes while the slab is live.
    unsafe {
        base.add(size_of::<SlabHeader>())
            .cast::<*const CoreHeader>()
            .read()
    }
}

/// Whether the object at `object` (the start of an object of a live slab with
/// `geometry`, with the slab's provenance) carries its free tag (debug builds and
/// `hardened`).
///
/// # Safety
/// - As stated; nobody writes the object's words meanwhile.
#[cfg(any(debug_assertions, feature = "hardened"))]
pub(crate) unsafe fn debug_is_free(object: NonNull<u8>, geometry: &Geometry) -> bool {
    // SAFETY: the tag word is inside the object's slot (caller).
    unsafe { tag_word(object, geometry.link_offset).read() == free_tag(object.addr().get()) }
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
