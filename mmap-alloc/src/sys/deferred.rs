//! Ranges given up for good that the OS refused to release, kept to be released later.
//!
//! Linux refuses to unmap the middle of a mapping when the split would take the process
//! past its mapping-count limit (`vm.max_map_count`). [`release_or_decommit`] then
//! decommits the pages, so their memory goes back, but the address range and one
//! mapping stay taken. A program that keeps working near the limit would lose one
//! mapping this way at every such release and never get them back, until the limit
//! left no room for anything: even a small allocation that needs a new mapping fails.
//! So the range is noted here, and released after a later release succeeds and on
//! [`release_deferred`] (which a heap's `trim` calls), once a page next to it is no longer
//! mapped: before that, releasing it would split its mapping, taking a mapping (perhaps
//! the one the program just freed) for address space alone.
//!
//! The table is fixed (no allocation: this runs inside allocators) and lock-free, so
//! that any thread, a signal handler or a child after `fork` can use it: a slot holds
//! the range's base (null when free, [`CLAIMED`] while one thread fills or releases it)
//! and its length. A range that finds the table full stays reserved, decommitted, as
//! before. A range claimed by a thread that `fork` left behind stays reserved in the
//! child.
//!
//! A noted range is safe to release at any later time: its caller gave it up for good
//! (nothing accesses it and nobody releases it again), and as it stays mapped until then
//! the OS cannot hand its addresses to anyone else.
//!
//! [`release_or_decommit`]: super::release_or_decommit
//! [`release_deferred`]: super::release_deferred

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// How many ranges can wait at once.
const SLOTS: usize = 64;

/// A slot's base while one thread writes or releases its range: never a page address.
const CLAIMED: *mut u8 = ptr::without_provenance_mut(1);

struct Slot {
    /// The range's first byte, with the provenance of its mapping; null when free.
    base: AtomicPtr<u8>,
    /// The range's length in bytes (whole pages), written before `base` is published.
    len: AtomicUsize,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        base: AtomicPtr::new(ptr::null_mut()),
        len: AtomicUsize::new(0),
    }
}; SLOTS];

/// How many slots hold a range, or are being filled with one (a hint that spares a scan
/// of the table when none does).
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Notes `ptr..ptr + len` (whole pages, validated) to be released later; false when the
/// table is full.
pub(super) fn note(ptr: NonNull<u8>, len: usize) -> bool {
    for slot in &TABLE {
        if slot
            .base
            .compare_exchange(
                ptr::null_mut(),
                CLAIMED,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            slot.len.store(len, Ordering::Relaxed);
            // Counted before it is published, so that a release of it on another thread
            // never takes the count below zero (a count one ahead only costs a scan).
            WAITING.fetch_add(1, Ordering::Release);
            slot.base.store(ptr.as_ptr(), Ordering::Release);
            return true;
        }
    }
    false
}

/// How many ranges wait to be released.
pub(super) fn waiting() -> usize {
    WAITING.load(Ordering::Acquire)
}

/// Tries to release every noted range with `release`; returns how many went.
pub(super) fn release_noted(
    release: impl Fn(NonNull<u8>, usize) -> crate::error::Result<()>,
) -> usize {
    if waiting() == 0 {
        return 0;
    }
    let mut released = 0;
    for slot in &TABLE {
        let base = slot.base.load(Ordering::Acquire);
        if base.is_null() || base == CLAIMED {
            continue;
        }
        if slot
            .base
            .compare_exchange(base, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            continue; // Another thread is releasing it.
        }
        let len = slot.len.load(Ordering::Relaxed);
        let range = NonNull::new(base).expect("a noted base is a page address");
        if release(range, len).is_ok() {
            slot.base.store(ptr::null_mut(), Ordering::Release);
            WAITING.fetch_sub(1, Ordering::Release);
            released += 1;
        } else {
            slot.base.store(base, Ordering::Release);
        }
    }
    released
}
