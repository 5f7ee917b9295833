//! The slab map: a two-level radix table from address to slab, like the page maps of
//! tcmalloc and the segment map of mimalloc.
//!
//! Masking an object's address gives the address of its slab header, but under strict
//! provenance an *address* is not enough: a pointer that a user gives back (say from a
//! `Box`, whose retag covers only the object) may not be used to reach the header. The
//! map stores each slab's base pointer, with the provenance of the whole slab, so the
//! slow paths derive header and object pointers from it (`with_addr`). It also makes
//! the debug checks robust: an address in no slab is reported, not dereferenced.
//!
//! Beside the base pointer each entry holds a *tag*, a word that the slab's owner
//! chooses when it records the slab (a cache stores its header's address and its fast
//! index, see [`crate::slab::owner_tag`]). C's `free` reads the tag instead of the slab
//! header: every header sits at a 256 KiB boundary, so all of them fall in the same set
//! of a set-associative cache (the same set of a 48 KiB, 12-way L1, or of a 2 MiB, 16-way
//! L2 indexed by virtual address) and evict each other once a program uses more slabs than
//! the cache has ways; the entries of neighbouring slabs share lines instead (four to a
//! line).
//!
//! # Safety
//! Entries are atomics. A slab's entry is set after its header is written and before
//! any of its objects is handed out (the tag first, then the base pointer with release),
//! and cleared before the slab is released (the tag to 0, then the base pointer to null
//! with release); readers load the base pointer with acquire, then the tag, which is the
//! one written with that base pointer or a later one (only when the slab was released
//! and another recorded meanwhile, which a reader that holds a live object of the slab
//! rules out). So a reader that finds a null base pointer finds the tag 0, or the tag
//! of a slab being recorded, none of whose objects is handed out yet; C's `free` tests
//! only the tag ([`lookup_tag`]). The root table is a static of null entries (256 KiB of
//! zeroed data: pages that are never written cost no memory; the entry of a leaf is its
//! first write to them); the leaves are created on demand from the default pages
//! (zeroed: all entries null), published with a compare-exchange, and never freed (they
//! stay reachable from the root).
//!
//! The root is static rather than mapped on first use so that a lookup (every C `free`)
//! makes no load of a root pointer and no test of it: an index into the static, the
//! leaf's entry and the slab's entry. Entries are borrowed one at a time, never a whole
//! table: under miri a borrow of 32 768 atomics costs a visit of each, which made every
//! free take tens of milliseconds.

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use pagekeep_mmap::{DefaultPages, PageSource};

use crate::slab::SLAB_BYTES;

const SLAB_SHIFT: u32 = SLAB_BYTES.trailing_zeros();
/// The significant bits of the addresses the slab map covers: user addresses have at
/// most 48 on the targets we support, and no slab lies at or above
/// `1 << SLAB_MAP_ADDRESS_BITS` (a lookup there finds none).
pub const SLAB_MAP_ADDRESS_BITS: u32 = 48;
const LEAF_BITS: u32 = 15;
const ROOT_BITS: u32 = SLAB_MAP_ADDRESS_BITS - SLAB_SHIFT - LEAF_BITS;

/// One granule's entry: the base pointer of the slab that covers it (null: none) and
/// the tag its owner gave.
#[repr(C)]
struct Entry {
    base: AtomicPtr<u8>,
    tag: AtomicUsize,
}

type Leaf = [Entry; 1 << LEAF_BITS];
type Root = [AtomicPtr<Leaf>; 1 << ROOT_BITS];

/// The root table: entry `i` is the leaf of the addresses whose slab index has `i` in
/// its high [`ROOT_BITS`] bits, null until a slab there is recorded.
static ROOT: Root = [const { AtomicPtr::new(ptr::null_mut()) }; 1 << ROOT_BITS];

/// The table `slot` points to; if there is none and `create` is set, a zeroed one is
/// mapped and published (or the one another thread published first is used). `None` if
/// there is none and none could be made.
fn table<T>(slot: &AtomicPtr<T>, create: bool) -> Option<NonNull<T>> {
    if let Some(existing) = NonNull::new(slot.load(Ordering::Acquire)) {
        return Some(existing);
    }
    if !create {
        return None;
    }
    let pages = DefaultPages::default();
    let fresh = pages
        .reserve_committed(size_of::<T>(), align_of::<T>())
        .ok()?
        .cast::<T>();
    // Zeroed pages are a table of null entries.
    match slot.compare_exchange(
        ptr::null_mut(),
        fresh.as_ptr(),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // Just published; lives forever.
        Ok(_) => Some(fresh),
        Err(winner) => {
            // SAFETY: our unpublished table, reserved just above with this size/alignment.
            let _ = unsafe { pages.release(fresh.cast(), size_of::<T>(), align_of::<T>()) };
            // The winner's published table.
            NonNull::new(winner)
        }
    }
}

/// Entry `index` of the root, borrowed alone (indexing the static borrows only the
/// entry).
#[inline(always)]
fn root_entry(index: usize) -> &'static AtomicPtr<Leaf> {
    debug_assert!(index < 1 << ROOT_BITS);
    &ROOT[index]
}

/// Entry `index` of a published leaf, borrowed alone.
#[inline(always)]
fn entry(leaf: NonNull<Leaf>, index: usize) -> &'static Entry {
    debug_assert!(index < 1 << LEAF_BITS);
    // SAFETY: published leaves are never freed and only accessed through atomics; the
    // index is inside the leaf (`split` masks it).
    unsafe { &*leaf.cast::<Entry>().as_ptr().add(index) }
}

/// Root and leaf index of the slab holding `address`, if the address is mappable.
#[inline(always)]
fn split(address: usize) -> Option<(usize, usize)> {
    let index = address >> SLAB_SHIFT;
    let root = index >> LEAF_BITS;
    (root < (1 << ROOT_BITS)).then_some((root, index & ((1 << LEAF_BITS) - 1)))
}

/// The leaf for `root`, made if needed and `create` is set; `None` if the pages cannot
/// be had.
fn leaf(root: usize, create: bool) -> Option<NonNull<Leaf>> {
    table(root_entry(root), create)
}

/// Records a slab of `bytes` (a non-zero multiple of [`SLAB_BYTES`]) at `base` (aligned
/// to [`SLAB_BYTES`]) with `tag`: every granule it covers maps to `base` and `tag`.
/// `false` if an address cannot be mapped or a leaf cannot be made (nothing is then
/// recorded and the slab must not be used).
pub(crate) fn insert(base: NonNull<u8>, bytes: usize, tag: usize) -> bool {
    debug_assert!(bytes >= SLAB_BYTES && bytes.is_multiple_of(SLAB_BYTES));
    let start = base.addr().get();
    for offset in (0..bytes).step_by(SLAB_BYTES) {
        let entry = start
            .checked_add(offset)
            .and_then(split)
            .and_then(|(root, index)| Some(entry(leaf(root, true)?, index)));
        let Some(entry) = entry else {
            // Undo the granules recorded so far.
            remove(base, offset);
            return false;
        };
        entry.tag.store(tag, Ordering::Relaxed);
        // Publishes the tag with the base pointer.
        entry.base.store(base.as_ptr(), Ordering::Release);
    }
    true
}

/// Forgets the first `bytes` (a multiple of [`SLAB_BYTES`]) of a slab recorded at `base`
/// (before it is released).
pub(crate) fn remove(base: NonNull<u8>, bytes: usize) {
    let start = base.addr().get();
    for offset in (0..bytes).step_by(SLAB_BYTES) {
        if let Some((root, index)) = start.checked_add(offset).and_then(split)
            && let Some(leaf) = leaf(root, false)
        {
            let entry = entry(leaf, index);
            entry.tag.store(0, Ordering::Relaxed);
            entry.base.store(ptr::null_mut(), Ordering::Release);
        }
    }
}

/// The base pointer (with the whole slab's provenance) of the live slab holding
/// `address`, if any.
///
/// Two dependent loads, inlined (the checks of the hardened mode make one per
/// operation).
#[inline(always)]
pub(crate) fn lookup(address: usize) -> Option<NonNull<u8>> {
    let (root, index) = split(address)?;
    let leaf = NonNull::new(root_entry(root).load(Ordering::Acquire))?;
    NonNull::new(entry(leaf, index).base.load(Ordering::Acquire))
}

/// As [`lookup`], with the tag the slab was recorded with. The tag is read from the line
/// of the entry (which neighbouring slabs share), not from the slab.
#[inline(always)]
pub(crate) fn lookup_tagged(address: usize) -> Option<(NonNull<u8>, usize)> {
    let (base, tag) = lookup_tag(address)?;
    Some((NonNull::new(base)?, tag))
}

/// The entry of `address`, base pointer and tag, without a test of the base pointer:
/// `None` only where no leaf covers the address. An entry with no live slab has a null
/// base pointer and the tag 0, except while a slab is being recorded there (module
/// docs): a caller that holds a live object of a slab finds that slab's tag, and one
/// that finds a tag its owner recognises knows the base pointer is the slab's (C's
/// `free` tests the tag only: two instructions fewer).
#[inline(always)]
pub(crate) fn lookup_tag(address: usize) -> Option<(*mut u8, usize)> {
    let (root, _) = split(address)?;
    let leaf = NonNull::new(root_entry(root).load(Ordering::Acquire))?;
    // The entry's byte offset in one shift and one mask (an index times the entry's
    // size costs two more instructions on every C `free`).
    const ENTRY_SHIFT: u32 = size_of::<Entry>().trailing_zeros();
    const _: () = assert!(size_of::<Entry>() == 1 << ENTRY_SHIFT);
    let offset = (address >> (SLAB_SHIFT - ENTRY_SHIFT)) & (((1 << LEAF_BITS) - 1) << ENTRY_SHIFT);
    // SAFETY: published leaves are never freed and only accessed through atomics; the
    // offset is that of the entry `split` names (the same bits, scaled), inside the
    // leaf.
    let entry = unsafe { &*leaf.cast::<u8>().as_ptr().add(offset).cast::<Entry>() };
    let base = entry.base.load(Ordering::Acquire);
    // Written before the base pointer that the acquire load above read (module docs).
    Some((base, entry.tag.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slab-sized, slab-aligned reservation, released on drop.
    struct Reservation(NonNull<u8>, usize);

    impl Reservation {
        fn new(bytes: usize) -> Self {
            let base = DefaultPages::default()
                .reserve(bytes, SLAB_BYTES)
                .expect("reserve");
            Reservation(base, bytes)
        }
    }

    impl Drop for Reservation {
        fn drop(&mut self) {
            // SAFETY: the reservation made in `new`, with its size and alignment.
            let _ = unsafe { DefaultPages::default().release(self.0, self.1, SLAB_BYTES) };
        }
    }

    #[test]
    fn every_granule_of_a_slab_gives_its_base_and_tag() {
        let slab = Reservation::new(2 * SLAB_BYTES);
        let base = slab.0;
        assert!(insert(base, 2 * SLAB_BYTES, 0x1234_5680 | 5));
        for offset in [0, 8, SLAB_BYTES - 1, SLAB_BYTES, 2 * SLAB_BYTES - 8] {
            let address = base.addr().get() + offset;
            assert_eq!(
                lookup_tagged(address),
                Some((base, 0x1234_5680 | 5)),
                "offset {offset}"
            );
            assert_eq!(lookup(address), Some(base), "offset {offset}");
        }
        remove(base, 2 * SLAB_BYTES);
        assert_eq!(lookup_tagged(base.addr().get()), None);
        assert_eq!(lookup_tagged(base.addr().get() + SLAB_BYTES), None);
    }

    #[test]
    fn a_slab_recorded_again_gives_its_new_tag_and_neighbours_keep_theirs() {
        let slabs = Reservation::new(3 * SLAB_BYTES);
        let first = slabs.0;
        let second = first.map_addr(|address| address.saturating_add(SLAB_BYTES));
        let third = first.map_addr(|address| address.saturating_add(2 * SLAB_BYTES));
        assert!(insert(first, SLAB_BYTES, 1));
        assert!(insert(second, SLAB_BYTES, 2));
        assert!(insert(third, SLAB_BYTES, 3));
        remove(second, SLAB_BYTES);
        assert_eq!(lookup_tagged(second.addr().get() + 64), None);
        assert!(insert(second, SLAB_BYTES, 7));
        assert_eq!(lookup_tagged(first.addr().get() + 64), Some((first, 1)));
        assert_eq!(lookup_tagged(second.addr().get() + 64), Some((second, 7)));
        assert_eq!(lookup_tagged(third.addr().get() + 64), Some((third, 3)));
        for slab in [first, second, third] {
            remove(slab, SLAB_BYTES);
        }
    }

    #[test]
    fn addresses_in_no_slab_have_no_entry() {
        assert_eq!(lookup_tagged(0), None);
        assert_eq!(lookup_tagged(usize::MAX), None);
        assert_eq!(lookup_tagged(1 << SLAB_MAP_ADDRESS_BITS), None);
    }
}
