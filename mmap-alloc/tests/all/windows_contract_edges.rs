//! Tries to break the Windows layer where `VirtualAlloc` differs most from `mmap`: a
//! released part of a reservation (decommitted, still reserved) must act unmapped, not
//! come back on commit; decommits of ranges that mix committed, read-only, guard and
//! reserved pages must read zeros and keep each protection; many released ranges of one
//! reservation, and many reservations released in part, must all be recorded (no
//! fixed table to overflow); growth after a shrink must not reuse the released tail; an
//! aligned reservation the OS refuses must carry the OS's error. Page states are read
//! back with `VirtualQuery`.
#![cfg(all(windows, not(miri)))]

use core::ptr::NonNull;

use pagekeep_mmap::{Cause, Contents, Decommit, Placement, Protection, sys};
use windows_sys::Win32::Foundation::ERROR_INVALID_ADDRESS;
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
fn releases_of_many_separate_ranges_all_succeed_and_the_last_takes_the_reservation() {
    let page = sys::page_size();
    let pages = 40;
    let ptr = sys::map_committed(pages * page, 1 << 30).unwrap();
    // SAFETY: committed read-write.
    unsafe { fill(ptr, pages * page, 4) };
    // Every other page, so that no two released ranges merge: twenty separate ranges.
    for index in (1..pages).step_by(2) {
        // SAFETY: one page of our reservation, given up.
        unsafe { sys::release(ptr.add(index * page), page) }.unwrap_or_else(|error| {
            panic!("release of page {index}: {error}");
        });
        assert_eq!(state_at(offset(ptr, index * page)), (MEM_RESERVE, 0));
    }
    // The pages kept are as they were.
    let mut reference = vec![0u8; pages * page];
    // SAFETY: a buffer of the reservation's length.
    unsafe {
        fill(
            NonNull::new(reference.as_mut_ptr()).unwrap(),
            pages * page,
            4,
        )
    };
    for index in (0..pages).step_by(2) {
        let at = offset(ptr, index * page);
        assert_eq!(state_at(at), (MEM_COMMIT, PAGE_READWRITE), "page {index}");
        // SAFETY: a page kept, committed read-write.
        let kept = unsafe { core::slice::from_raw_parts(at.as_ptr(), page) };
        assert!(kept == &reference[index * page..][..page], "page {index}");
    }
    // The kept pages go one by one, merging the ranges; the last takes the reservation.
    for index in (0..pages).step_by(2) {
        assert_ne!(state_at(ptr).0, MEM_FREE, "gone before page {index}");
        // SAFETY: one page of our reservation, given up.
        unsafe { sys::release(ptr.add(index * page), page) }.unwrap();
    }
    assert_eq!(
        state_at(ptr).0,
        MEM_FREE,
        "the reservation went with its last part"
    );
}

#[test]
fn more_shrunk_blocks_than_a_fixed_table_held_shrink_and_free() {
    use allocator_api2::vec::Vec as ApiVec;
    use pagekeep_mmap::MmapAlloc;

    // Each shrink releases the tail of its block's reservation and keeps the rest: a
    // reservation released in part, 1,100 at once (the table used to hold 1,024, and
    // `shrink_to_fit` aborted on the next).
    let page = sys::page_size();
    let mut blocks = Vec::new();
    for index in 0..1_100usize {
        let mut block = ApiVec::<u8, MmapAlloc>::with_capacity_in(2 * page, MmapAlloc);
        block.resize(page, index as u8);
        block.shrink_to_fit();
        assert!(block.capacity() < 2 * page, "block {index} not shrunk");
        let tail = offset(NonNull::new(block.as_mut_ptr()).unwrap(), page);
        assert_eq!(state_at(tail), (MEM_RESERVE, 0), "tail of block {index}");
        blocks.push(block);
    }
    for (index, block) in blocks.iter_mut().enumerate() {
        assert!(
            block.iter().all(|&byte| byte == index as u8),
            "block {index}"
        );
        block.push(1);
    }
    drop(blocks);
}

#[cfg(feature = "syscall-counters")]
#[test]
fn an_aligned_reservation_the_os_refuses_to_commit_fails_at_once_with_its_error() {
    use pagekeep_mmap::syscall_counters;

    // Reserving 16 TiB and more works; committing it does not (the commit charge on
    // Windows, overcommit under wine): the refusal is the OS's, not a lost race for
    // the aligned address, and is returned as it came, after one try (two if another
    // test's thread took the address between the probe and the exact reservation).
    let before = syscall_counters::snapshot();
    let error = sys::map_committed(1 << 44, 1 << 20).expect_err("16 TiB committed");
    let cost = syscall_counters::snapshot().since(&before);
    assert!(
        matches!(error.cause(), Cause::Os(code) if code != 0),
        "{error}"
    );
    assert_ne!(error.address(), 0, "the aligned address tried: {error}");
    assert_ne!(
        error.raw_os_error(),
        Some(ERROR_INVALID_ADDRESS as i32),
        "a refusal, not a lost race: {error}"
    );
    assert_eq!(cost.mmap, 2 * cost.munmap, "{cost:?}");
    assert!((1..=2).contains(&cost.munmap), "{cost:?}");
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
