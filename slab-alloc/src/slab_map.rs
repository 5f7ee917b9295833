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
//! # Safety
//! Entries are atomics. A slab's entry is set (release) after its header is written and
//! before any of its objects is handed out, and cleared before the slab is released;
//! readers load with acquire. The root table is a static of null entries (256 KiB of
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
use core::sync::atomic::{AtomicPtr, Ordering};

use pagekeep_mmap::{DefaultPages, PageSource};

use crate::slab::SLAB_BYTES;

const SLAB_SHIFT: u32 = SLAB_BYTES.trailing_zeros();
/// User addresses have at most 48 significant bits on the targets we support.
const ADDRESS_BITS: u32 = 48;
const LEAF_BITS: u32 = 15;
const ROOT_BITS: u32 = ADDRESS_BITS - SLAB_SHIFT - LEAF_BITS;

type Leaf = [AtomicPtr<u8>; 1 << LEAF_BITS];
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

/// Entry `index` of a published table of `N` atomics, borrowed alone.
#[inline(always)]
fn entry<E, const N: usize>(
    table: NonNull<[AtomicPtr<E>; N]>,
    index: usize,
) -> &'static AtomicPtr<E> {
    debug_assert!(index < N);
    // SAFETY: published tables are never freed and only accessed through atomics; the
    // index is inside the table (`split` masks or bounds it).
    unsafe { &*table.cast::<AtomicPtr<E>>().as_ptr().add(index) }
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
/// to [`SLAB_BYTES`]): every granule it covers maps to `base`. `false` if an address
/// cannot be mapped or a leaf cannot be made (nothing is then recorded and the slab
/// must not be used).
pub(crate) fn insert(base: NonNull<u8>, bytes: usize) -> bool {
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
        entry.store(base.as_ptr(), Ordering::Release);
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
            entry(leaf, index).store(ptr::null_mut(), Ordering::Release);
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
    NonNull::new(entry(leaf, index).load(Ordering::Acquire))
}
