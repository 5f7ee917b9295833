//! `sys::release` behaves as `munmap` does, natively and in the stand-in under miri:
//! releasing pages already released does nothing (and frees nothing else), one call may
//! release the pieces of a split reservation together with the holes between them, and
//! released pages are no longer mapped: later operations on them fail with `ENOMEM`.
//!
//! That last check runs under miri only, and only while another piece of the same
//! reservation keeps its heap block alive: natively, another thread of the test binary
//! may map the hole again at any moment, and operating on it would touch its memory.

use core::ptr::NonNull;

use pagekeep_mmap::sys;

use crate::util::{fill, first_mismatch};

/// Under miri, asserts that no page of `ptr..ptr + len` is mapped any more; natively,
/// does nothing (see the module docs).
///
/// # Safety
/// The caller released the range; under miri, another piece of its reservation is live.
unsafe fn assert_unmapped(ptr: NonNull<u8>, len: usize) {
    #[cfg(miri)]
    {
        use pagekeep_mmap::{Cause, Decommit, Protection};
        let page = sys::page_size();
        for offset in (0..len).step_by(page) {
            // SAFETY: the range was released and nothing else can be mapped there while
            // the heap block around it is live (caller): the calls fail and touch nothing.
            let (protected, decommitted) = unsafe {
                let part = ptr.add(offset);
                (
                    sys::protect(part, page, Protection::ReadWrite),
                    sys::decommit(part, page, Decommit::Zero),
                )
            };
            for error in [protected.unwrap_err(), decommitted.map(drop).unwrap_err()] {
                assert_eq!(error.cause(), Cause::Os(libc::ENOMEM), "{error}");
            }
        }
    }
    let _ = (ptr, len);
}

#[test]
fn releasing_released_pages_frees_nothing_else() {
    let page = sys::page_size();
    let ptr = sys::map_committed(3 * page, page).unwrap();
    // SAFETY: committed, three pages.
    unsafe { fill(ptr, 3 * page, 1) };
    // SAFETY: the reservation is ours; its last page is given up twice, then its middle
    // page, then both again: the repeated calls find nothing mapped.
    unsafe {
        let tail = ptr.add(2 * page);
        sys::release(tail, page).unwrap();
        sys::release(tail, page).unwrap();
        let middle = ptr.add(page);
        sys::release(middle, page).unwrap();
        sys::release(middle, 2 * page).unwrap();
        assert_unmapped(middle, 2 * page);
    }
    // The first page is still mapped, with its contents (the stand-in used to count the
    // repeated releases against it and free the whole block).
    // SAFETY: the first page was never released.
    assert_eq!(unsafe { first_mismatch(ptr, page, 1) }, None);
    // SAFETY: as above.
    unsafe { ptr.write(2) };
    // SAFETY: the last mapped page of the reservation, released once.
    unsafe { sys::release(ptr, page) }.unwrap();
}

#[test]
fn one_release_spans_the_pieces_of_a_split_reservation() {
    let page = sys::page_size();
    let ptr = sys::reserve(5 * page).unwrap();
    // SAFETY: the reservation is ours: pages 1 and 3 go first, which leaves three pieces,
    // then one call releases all five pages, holes included.
    unsafe {
        sys::release(ptr.add(page), page).unwrap();
        sys::release(ptr.add(3 * page), page).unwrap();
        assert_unmapped(ptr.add(page), page);
        assert_unmapped(ptr.add(3 * page), page);
        sys::commit(ptr.add(4 * page), page).unwrap();
        ptr.add(4 * page).write(9);
        sys::release(ptr, 5 * page).unwrap();
    }
}

#[test]
fn trimmed_ends_of_an_aligned_reservation_are_unmapped() {
    let page = sys::page_size();
    let align = 16 * page;
    let ptr = sys::reserve_aligned(page, align).unwrap();
    // SAFETY: the trim released everything after the first page; the first page keeps
    // the block alive.
    unsafe {
        assert_unmapped(ptr.add(page), page);
        sys::release(ptr, page).unwrap();
    }
}
