//! Tries to break the Windows layer where `VirtualAlloc` differs most from `mmap`: a
//! released part of a reservation (decommitted, still reserved) must act unmapped, not
//! come back on commit; decommits of ranges that mix committed, read-only, guard and
//! reserved pages must read zeros and keep each protection; a full table of released
//! ranges must fail a release without changing the range; growth after a shrink must
//! not reuse the released tail. Page states are read back with `VirtualQuery`.
#![cfg(all(windows, not(miri)))]

use core::ptr::NonNull;

use pagekeep_mmap::{Cause, Contents, Decommit, Placement, Protection, sys};
use windows_sys::Win32::Foundation::{ERROR_INVALID_ADDRESS, ERROR_NOT_ENOUGH_MEMORY};
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_FREE, MEM_RESERVE, PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE,
};

use crate::util::{fill, first_mismatch, page_state};

/// `(state, protection of committed pages or 0)` of the page at `ptr`.
fn state_at(ptr: NonNull<u8>) -> (u32, u32) {
    let (state, protect, _base) = page_state(ptr);
    (state, protect)
}

/// `ptr` moved on by `bytes` (address arithmetic only).
fn offset(ptr: NonNull<u8>, bytes: usize) -> NonNull<u8> {
    NonNull::new(ptr.as_ptr().wrapping_add(bytes)).unwrap()
}

fn assert_unmapped<T: core::fmt::Debug>(what: &str, result: pagekeep_mmap::Result<T>) {
    let error = result.expect_err(what);
    assert_eq!(
        error.raw_os_error(),
        Some(ERROR_INVALID_ADDRESS as i32),
        "{what}: {error}"
    );
}

#[test]
fn a_released_part_stays_released_whatever_is_asked_of_it() {
    let page = sys::page_size();
    // Far from the small reservations other tests make (see `windows_pages`).
    let ptr = sys::map_committed(6 * page, 1 << 30).unwrap();
    // SAFETY: six committed pages, ours.
    unsafe { fill(ptr, 6 * page, 9) };
    // SAFETY: pages 2 and 3 are given up.
    let released = unsafe { ptr.add(2 * page) };
    // SAFETY: our reservation; the two pages are not used again.
    unsafe { sys::release(released, 2 * page) }.unwrap();
    assert_eq!(state_at(released), (MEM_RESERVE, 0));

    // SAFETY: the calls break the precondition (a range the caller has reserved) only
    // in the released part, which the layer must refuse without committing it again.
    unsafe {
        assert_unmapped("commit", sys::commit(released, page));
        assert_unmapped(
            "protect read",
            sys::protect(released, page, Protection::Read),
        );
        assert_unmapped(
            "protect none",
            sys::protect(released, 2 * page, Protection::None),
        );
        assert_unmapped("populate", sys::populate(released, page));
        for mode in [Decommit::Zero, Decommit::Lazy] {
            assert_unmapped("decommit", sys::decommit(released, 2 * page, mode));
        }
        // A range from a live page into the released part: refused too.
        assert_unmapped("commit across", sys::commit(ptr.add(page), 2 * page));
    }
    assert_eq!(state_at(released), (MEM_RESERVE, 0), "not committed again");
    assert_eq!(state_at(offset(released, page)), (MEM_RESERVE, 0));

    // A decommit across the whole reservation still gives back the live pages' memory
    // (as `madvise` does around a hole) before it reports the hole.
    // SAFETY: the live pages' contents are not needed any more.
    let zeroed = unsafe { sys::decommit(ptr, 6 * page, Decommit::Zero) };
    assert_unmapped("decommit around the hole", zeroed);
    // SAFETY: pages 0, 1, 4 and 5 are still committed read-write, and were zeroed.
    unsafe {
        assert!((0..2 * page).all(|offset| ptr.add(offset).read() == 0));
        assert!((4 * page..6 * page).all(|offset| ptr.add(offset).read() == 0));
    }

    // The rest goes, and the reservation with it.
    // SAFETY: the remaining pages, not used again.
    unsafe {
        sys::release(ptr, 2 * page).unwrap();
        sys::release(ptr.add(4 * page), 2 * page).unwrap();
    }
    assert_eq!(state_at(ptr).0, MEM_FREE);
}

#[test]
fn zeroing_decommit_of_mixed_pages_reads_zeros_and_keeps_each_protection() {
    let page = sys::page_size();
    let region = pagekeep_mmap::Region::reserve(6 * page).unwrap();
    let ptr = region.as_ptr();
    region.commit(0, 2 * page).unwrap();
    region.commit(3 * page, 3 * page).unwrap();
    // SAFETY: pages 0, 1 and 3..6 are committed read-write.
    unsafe {
        fill(ptr, 2 * page, 1);
        fill(ptr.add(3 * page), 3 * page, 2);
        // Page 1 read-only, page 3 a guard page, page 2 only reserved.
        region.protect(page, page, Protection::Read).unwrap();
        region.protect(3 * page, page, Protection::None).unwrap();
    }
    // SAFETY: nothing relies on the contents.
    let contents = unsafe { region.decommit(0, 6 * page, Decommit::Zero) }.unwrap();
    assert_eq!(contents, Contents::Zeroed);
    let expected = [
        (MEM_COMMIT, PAGE_READWRITE),
        (MEM_COMMIT, PAGE_READONLY),
        (MEM_RESERVE, 0),
        (MEM_COMMIT, PAGE_NOACCESS),
        (MEM_COMMIT, PAGE_READWRITE),
        (MEM_COMMIT, PAGE_READWRITE),
    ];
    for (index, state) in expected.into_iter().enumerate() {
        assert_eq!(state_at(offset(ptr, index * page)), state, "page {index}");
    }
    assert_eq!(region.resident_pages(0, 6 * page).unwrap(), 0);
    for index in [0, 1, 4, 5] {
        // SAFETY: a readable page of the region.
        let all_zero =
            (0..page).all(|offset| unsafe { ptr.add(index * page + offset).read() } == 0);
        assert!(all_zero, "page {index} reads zeros");
    }
}

#[test]
fn lazy_decommit_reads_old_bytes_or_zeros_as_it_reported() {
    let page = sys::page_size();
    let region = pagekeep_mmap::Region::reserve_committed(8 * page, page).unwrap();
    let ptr = region.as_ptr();
    // SAFETY: committed read-write.
    unsafe { fill(ptr, 8 * page, 5) };
    // SAFETY: nothing relies on the contents.
    let contents = unsafe { region.decommit(0, 8 * page, Decommit::Lazy) }.unwrap();
    let mut reference = vec![0u8; 8 * page];
    // SAFETY: a fresh buffer of the same length, filled with the same pattern.
    unsafe { fill(NonNull::new(reference.as_mut_ptr()).unwrap(), 8 * page, 5) };
    for (offset, old) in reference.iter().enumerate() {
        // SAFETY: still committed and readable.
        let now = unsafe { ptr.add(offset).read() };
        match contents {
            Contents::Zeroed => assert_eq!(now, 0, "byte {offset}"),
            Contents::Unspecified => assert!(now == *old || now == 0, "byte {offset}"),
        }
    }
    // Still writable.
    // SAFETY: committed read-write.
    unsafe { ptr.add(8 * page - 1).write(1) };
}

#[test]
fn a_release_past_the_table_of_ranges_fails_and_changes_nothing() {
    let page = sys::page_size();
    let pages = 20;
    let ptr = sys::map_committed(pages * page, 1 << 30).unwrap();
    // SAFETY: committed read-write.
    unsafe { fill(ptr, pages * page, 4) };
    // Every other page, so that no two released ranges merge: eight fit the table.
    let mut refused = None;
    for index in (1..pages).step_by(2) {
        // SAFETY: one page of our reservation, given up.
        match unsafe { sys::release(ptr.add(index * page), page) } {
            Ok(()) => assert_eq!(state_at(offset(ptr, index * page)).0, MEM_RESERVE),
            Err(error) => {
                assert_eq!(
                    error.raw_os_error(),
                    Some(ERROR_NOT_ENOUGH_MEMORY as i32),
                    "{error}"
                );
                refused = Some(index);
                break;
            }
        }
    }
    let refused = refused.expect("the table of released ranges is bounded");
    assert_eq!(refused, 17, "eight ranges fit, the ninth is refused");
    // The refused page is as it was: committed with its bytes.
    let at = offset(ptr, refused * page);
    assert_eq!(state_at(at), (MEM_COMMIT, PAGE_READWRITE));
    // The pattern depends on the offset: compare against a copy filled alike.
    let mut reference = vec![0u8; pages * page];
    // SAFETY: a buffer of the reservation's length.
    unsafe {
        fill(
            NonNull::new(reference.as_mut_ptr()).unwrap(),
            pages * page,
            4,
        )
    };
    for byte in 0..page {
        // SAFETY: the refused page is still committed read-write.
        let now = unsafe { at.add(byte).read() };
        assert_eq!(now, reference[refused * page + byte], "byte {byte}");
    }
    // The whole reservation goes at once, table entry and all.
    // SAFETY: the reservation, not used again.
    unsafe { sys::release(ptr, pages * page) }.unwrap();
    assert_eq!(state_at(ptr).0, MEM_FREE);
}

#[test]
fn growth_after_a_shrink_never_reuses_the_released_tail() {
    let granularity = 64 << 10;
    let ptr = sys::map_committed(2 * granularity, granularity).unwrap();
    // SAFETY: committed read-write.
    unsafe { fill(ptr, 2 * granularity, 6) };
    // SAFETY: shrink to the first half; the tail is released.
    let shrunk = unsafe { sys::remap(ptr, 2 * granularity, granularity, Placement::MayMove) };
    assert_eq!(shrunk.unwrap(), ptr);
    // The end of the shrunk block is on the granularity, but its tail is still reserved
    // (released in part): growth in place is impossible, and the layer says so.
    // SAFETY: the first half is the caller's whole mapping now.
    let grown = unsafe { sys::remap(ptr, granularity, 2 * granularity, Placement::MayMove) };
    match grown {
        Err(error) => assert!(matches!(error.cause(), Cause::Unsupported(_)), "{error}"),
        Ok(grown) => panic!("grew into the released tail at {grown:p}"),
    }
    // SAFETY: the first half is unchanged.
    assert_eq!(unsafe { first_mismatch(ptr, granularity, 6) }, None);
    assert_eq!(state_at(offset(ptr, granularity)), (MEM_RESERVE, 0));
    // SAFETY: the block, not used again.
    unsafe { sys::release(ptr, granularity) }.unwrap();
    assert_eq!(
        state_at(ptr).0,
        MEM_FREE,
        "the reservation went with its last part"
    );
}
