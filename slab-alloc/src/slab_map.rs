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
//! readers load with acquire. Leaves are created on demand from [`OsPages`]-like default
//! pages, published with a compare-exchange, and never freed (they stay reachable from
//! the root).

use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use mmap_alloc::{DefaultPages, PageSource};

use crate::slab::SLAB_BYTES;

const SLAB_SHIFT: u32 = SLAB_BYTES.trailing_zeros();
/// User addresses have at most 48 significant bits on the targets we support.
const ADDRESS_BITS: u32 = 48;
const LEAF_BITS: u32 = 15;
const ROOT_BITS: u32 = ADDRESS_BITS - SLAB_SHIFT - LEAF_BITS;

type Leaf = [AtomicPtr<u8>; 1 << LEAF_BITS];

static ROOT: [AtomicPtr<Leaf>; 1 << ROOT_BITS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; 1 << ROOT_BITS];

/// Root and leaf index of the slab holding `address`, if the address is mappable.
#[inline(always)]
fn split(address: usize) -> Option<(usize, usize)> {
    let index = address >> SLAB_SHIFT;
    let root = index >> LEAF_BITS;
    (root < (1 << ROOT_BITS)).then_some((root, index & ((1 << LEAF_BITS) - 1)))
}

/// The leaf for `root`, made if needed; `None` if the pages cannot be had.
fn leaf(root: usize, create: bool) -> Option<&'static Leaf> {
    let existing = ROOT[root].load(Ordering::Acquire);
    if let Some(existing) = NonNull::new(existing) {
        // SAFETY: published leaves are never freed and only accessed through atomics.
        return Some(unsafe { existing.as_ref() });
    }
    if !create {
        return None;
    }
    let pages = DefaultPages::default();
    let fresh = pages
        .reserve_committed(size_of::<Leaf>(), align_of::<Leaf>())
        .ok()?
        .cast::<Leaf>();
    // Zeroed pages are a leaf of null entries.
    match ROOT[root].compare_exchange(
        ptr::null_mut(),
        fresh.as_ptr(),
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: just published; lives forever.
        Ok(_) => Some(unsafe { fresh.as_ref() }),
        Err(winner) => {
            // SAFETY: our unpublished leaf, reserved just above with this size/alignment.
            let _ = unsafe { pages.release(fresh.cast(), size_of::<Leaf>(), align_of::<Leaf>()) };
            // SAFETY: the winner's published leaf.
            Some(unsafe { &*winner })
        }
    }
}

/// Records a slab; `false` if its address cannot be mapped or a leaf cannot be made
/// (the slab must then not be used).
pub(crate) fn insert(base: NonNull<u8>) -> bool {
    let Some((root, index)) = split(base.addr().get()) else {
        return false;
    };
    let Some(leaf) = leaf(root, true) else {
        return false;
    };
    leaf[index].store(base.as_ptr(), Ordering::Release);
    true
}

/// Forgets a slab (before it is released).
pub(crate) fn remove(base: NonNull<u8>) {
    if let Some((root, index)) = split(base.addr().get())
        && let Some(leaf) = leaf(root, false)
    {
        leaf[index].store(ptr::null_mut(), Ordering::Release);
    }
}

/// The base pointer (with the whole slab's provenance) of the live slab holding
/// `address`, if any.
#[inline]
pub(crate) fn lookup(address: usize) -> Option<NonNull<u8>> {
    let (root, index) = split(address)?;
    let leaf = leaf(root, false)?;
    NonNull::new(leaf[index].load(Ordering::Acquire))
}
