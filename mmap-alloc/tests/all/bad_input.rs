//! Zero sizes, bad alignments, overflowing sizes and ranges outside a region are errors
//! that cost no system call, never panics.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::io;

use allocator_api2::alloc::Allocator;
use pagekeep_mmap::{
    Cause, Decommit, HeapPages, MmapAlloc, Operation, OsPages, PageSource, Protection, Region, sys,
};

use crate::util::without_syscalls;

fn assert_invalid<T: std::fmt::Debug>(result: pagekeep_mmap::Result<T>) {
    let error = result.expect_err("bad input must be refused");
    assert!(matches!(error.cause(), Cause::InvalidInput(_)), "{error}");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn reservations_with_bad_sizes_or_alignments_are_refused_without_a_syscall() {
    without_syscalls(|| {
        assert_invalid(sys::reserve(0));
        assert_invalid(sys::reserve(usize::MAX));
        assert_invalid(sys::reserve(usize::MAX - sys::page_size() + 2));
        assert_invalid(sys::reserve_aligned(4096, 3));
        assert_invalid(sys::reserve_aligned(4096, 0));
        assert_invalid(sys::reserve_aligned(3 << 62, 1 << 63));
        assert_invalid(sys::map_committed(0, 4096));
    });
}

#[test]
fn operations_on_unaligned_or_empty_ranges_are_refused_without_a_syscall() {
    let region = Region::reserve(4 * sys::page_size()).unwrap();
    // SAFETY: the region is ours; one byte in is inside it.
    let unaligned = unsafe { region.as_ptr().add(1) };
    let start = region.as_ptr();
    // SAFETY: every call below is refused before it reaches the OS.
    without_syscalls(|| unsafe {
        assert_invalid(sys::commit(unaligned, 4096));
        assert_invalid(sys::commit(start, 0));
        assert_invalid(sys::decommit(unaligned, 4096, Decommit::Zero));
        assert_invalid(sys::protect(unaligned, 4096, Protection::Read));
        assert_invalid(sys::release(unaligned, 4096));
        assert_invalid(sys::release(start, usize::MAX));
        assert_invalid(sys::populate(start, 0));
        assert_invalid(sys::remap(start, 4096, 0, sys::Placement::MayMove));
        assert_invalid(sys::resident_pages(unaligned, 4096));
    });
}

#[test]
fn region_parts_outside_the_region_are_refused() {
    let page = sys::page_size();
    let region = Region::reserve(4 * page).unwrap();
    for (offset, len) in [
        (0, 5 * page),
        (4 * page, page),
        (3 * page, 2 * page),
        (1, page),
        (0, 0),
    ] {
        let error = region.commit(offset, len).expect_err("outside the region");
        assert_eq!(
            error.kind(),
            io::ErrorKind::InvalidInput,
            "{offset} {len}: {error}"
        );
    }
    let error = region.commit(usize::MAX - page + 1, page).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    // The message names the call and the reason.
    let message = region.commit(0, 5 * page).unwrap_err().to_string();
    assert!(
        message.contains(Operation::Commit.call_name()) && message.contains("outside the region"),
        "{message}"
    );
    // The region still works afterwards.
    region.commit(0, 4 * page).unwrap();
}

#[test]
fn heap_pages_refuse_bad_input() {
    assert_invalid(HeapPages.reserve(0, 4096));
    assert_invalid(HeapPages.reserve(4096, 3));
    assert_invalid(HeapPages.reserve(usize::MAX, 4096));
    assert_invalid(OsPages.reserve(0, 4096));
    assert_invalid(OsPages.reserve_committed(4096, 12));
}

#[test]
fn global_alloc_returns_null_for_impossible_requests() {
    let huge = Layout::from_size_align(isize::MAX as usize - 8192, 4096).unwrap();
    let zero = Layout::from_size_align(0, 8).unwrap();
    // SAFETY: zero-sized and absurd layouts are answered with null, never UB in here.
    unsafe {
        assert!(MmapAlloc.alloc(zero).is_null());
        assert!(MmapAlloc.alloc(huge).is_null());
        assert!(MmapAlloc.alloc_zeroed(huge).is_null());
    }
    // Still usable afterwards.
    let small = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: non-zero layout; the block is freed with it.
    unsafe {
        let block = MmapAlloc.alloc(small);
        assert!(!block.is_null());
        MmapAlloc.dealloc(block, small);
    }
}

#[test]
fn allocator_returns_alloc_error_for_impossible_requests() {
    let huge = Layout::from_size_align(isize::MAX as usize - 8192, 4096).unwrap();
    assert!(MmapAlloc.allocate(huge).is_err());
    let block = MmapAlloc.allocate(Layout::new::<[u64; 4]>()).unwrap();
    // Growing past what the address space holds fails and leaves the block intact.
    // SAFETY: `block` is live with this layout.
    unsafe {
        let ptr = block.cast::<u64>();
        ptr.write(99);
        assert!(
            MmapAlloc
                .grow(block.cast(), Layout::new::<[u64; 4]>(), huge)
                .is_err()
        );
        assert_eq!(ptr.read(), 99);
        MmapAlloc.deallocate(block.cast(), Layout::new::<[u64; 4]>());
    }
}

#[test]
fn errors_convert_to_io_errors_with_context() {
    let error = sys::reserve(0).unwrap_err();
    assert_eq!(error.operation(), Operation::Reserve);
    let io: io::Error = error.into();
    assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
    let message = io.to_string();
    assert!(
        message.contains(Operation::Reserve.call_name()) && message.contains("zero length"),
        "{message}"
    );
    // A one-byte request is a whole page.
    let one: NonNull<u8> = sys::reserve(1).unwrap();
    // SAFETY: the page just reserved, released once.
    unsafe { sys::release(one, 1).unwrap() };
}
