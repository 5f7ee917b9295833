//! What each operation costs in system calls, counted per thread.

use core::alloc::{GlobalAlloc, Layout};

use pagekeep_mmap::{Decommit, MmapAlloc, OsPages, PageSource, Region, sys, syscall_counters};

fn cost_of<T>(operation: impl FnOnce() -> T) -> (T, syscall_counters::SyscallCounts) {
    let before = syscall_counters::snapshot();
    let result = operation();
    (result, syscall_counters::snapshot().since(&before))
}

#[test]
fn a_committed_reservation_is_one_mmap_and_no_mprotect() {
    let (region, cost) = cost_of(|| Region::reserve_committed(1 << 20, 4096).unwrap());
    assert_eq!(
        (cost.mmap, cost.mprotect, cost.total()),
        (1, 0, 1),
        "{cost:?}"
    );
    let ((), cost) = cost_of(|| drop(region));
    assert_eq!((cost.munmap, cost.total()), (1, 1), "{cost:?}");
}

#[test]
fn a_page_cycle_is_four_calls() {
    let len = 64 << 10;
    let (ptr, reserve) = cost_of(|| OsPages.reserve(len, 4096).unwrap());
    // SAFETY: the reservation above, committed, decommitted and released once.
    let (_, rest) = cost_of(|| unsafe {
        OsPages.commit(ptr, len).unwrap();
        OsPages.decommit(ptr, len, Decommit::Lazy).unwrap();
        OsPages.release(ptr, len, 4096).unwrap();
    });
    assert_eq!(reserve.total(), 1);
    assert_eq!(
        (rest.mprotect, rest.madvise, rest.munmap, rest.total()),
        (1, 1, 1, 3)
    );
}

#[test]
fn decommitting_many_pages_is_one_call() {
    let len = 512 * sys::page_size();
    let region = Region::reserve_committed(len, 4096).unwrap();
    // SAFETY: nothing refers to the contents.
    let (_, cost) = cost_of(|| unsafe { region.decommit(0, len, Decommit::Zero).unwrap() });
    // Windows decommits and commits again (its decommitted pages are inaccessible).
    let calls = if cfg!(windows) { 2 } else { 1 };
    assert_eq!(cost.total(), calls, "{cost:?}");
}

#[test]
fn allocation_and_deallocation_are_one_call_each() {
    let layout = Layout::from_size_align(1 << 20, 4096).unwrap();
    // SAFETY: non-zero layout; the block is freed once with it.
    let (block, cost) = cost_of(|| unsafe { MmapAlloc.alloc(layout) });
    assert_eq!((cost.mmap, cost.total()), (1, 1));
    // SAFETY: as above.
    let ((), cost) = cost_of(|| unsafe { MmapAlloc.dealloc(block, layout) });
    assert_eq!((cost.munmap, cost.total()), (1, 1));
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn growth_is_one_mremap_and_nothing_else() {
    let layout = Layout::from_size_align(64 << 20, 4096).unwrap();
    // SAFETY: non-zero layouts; blocks used within their size and freed once.
    unsafe {
        let block = MmapAlloc.alloc(layout);
        block.write_bytes(1, 64 << 20);
        let (grown, cost) = cost_of(|| MmapAlloc.realloc(block, layout, 256 << 20));
        assert!(!grown.is_null());
        assert_eq!((cost.mremap, cost.total()), (1, 1), "{cost:?}");
        let bigger = Layout::from_size_align(256 << 20, 4096).unwrap();
        let (shrunk, cost) = cost_of(|| MmapAlloc.realloc(grown, bigger, 1 << 20));
        assert_eq!(shrunk, grown);
        assert_eq!((cost.munmap, cost.total()), (1, 1), "{cost:?}");
        MmapAlloc.dealloc(shrunk, Layout::from_size_align(1 << 20, 4096).unwrap());
    }
}
