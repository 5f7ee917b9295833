//! An async heap over a caller-supplied region: every byte it hands out lies in the
//! region, and the region's pages come back when the heap is dropped.

use core::alloc::Layout;

use pagekeep_mmap::{Cause, PageSource, Region};
use pagekeep_slab::async_heap::{AsyncHeap, HeapBox, RegionPages};

use crate::async_support::block_on;

#[test]
fn every_block_lies_in_the_region_and_the_capacity_holds() {
    let region = Region::reserve_committed(8 << 20, 1 << 21).unwrap();
    let pages = RegionPages::from_region(region).unwrap();
    // Scaled down under miri (an allocation costs milliseconds there).
    let capacity = if cfg!(miri) { 16 * 1024 } else { 1 << 20 };
    let heap = AsyncHeap::with_source(pages.clone(), capacity);
    let mut small: Vec<HeapBox<'_, [u64; 8], RegionPages>> = Vec::new();
    while let Ok(boxed) = heap.try_alloc([7u64; 8]) {
        assert!(pages.contains(boxed.as_ptr().cast()));
        small.push(boxed);
    }
    // Stopped by the capacity, not by the region.
    assert_eq!(small.len(), capacity / 64);
    assert_eq!(heap.available(), 0);
    small.truncate(small.len() / 2);
    let large_layout = Layout::from_size_align(capacity / 2, 4096).unwrap();
    let large = block_on(heap.alloc_layout(large_layout));
    assert!(pages.contains(large.as_ptr().as_ptr()));
    drop((small, large));
    assert_eq!(heap.available(), capacity);
    drop(heap);
    assert_eq!(
        pages.free_bytes(),
        pages.len(),
        "the heap gave every page back"
    );
}

#[test]
fn a_static_buffer_works_as_a_region() {
    // Leaked for the `'static`, and taken back at the end (miri reports leaks).
    let raw = Box::into_raw(vec![0xAAu8; 4 << 20].into_boxed_slice());
    // SAFETY: the leaked box, unique until it is taken back below.
    let buffer: &'static mut [u8] = unsafe { &mut *raw };
    let pages = RegionPages::from_static(buffer);
    let heap = AsyncHeap::with_source(pages.clone(), 64 * 1024);
    let copy = block_on(heap.alloc_slice_copy(b"bounded"));
    assert_eq!(&*copy, b"bounded");
    assert!(pages.contains(copy.as_ptr()));
    drop(copy);
    drop(heap);
    drop(pages);
    // SAFETY: every user of the buffer (the heap, the source and its clones) is gone.
    drop(unsafe { Box::from_raw(raw) });
}

#[test]
fn region_pages_run_out_then_coalesce() {
    let pages =
        RegionPages::from_region(Region::reserve_committed(1 << 20, 4096).unwrap()).unwrap();
    let page = pages.page_size();
    let mut taken = Vec::new();
    loop {
        match pages.reserve_committed(3 * page, page) {
            Ok(ptr) => {
                // SAFETY: committed, three pages; zeroed when reserved.
                assert_eq!(unsafe { ptr.read() }, 0);
                // SAFETY: as above.
                unsafe { ptr.write_bytes(1, 3 * page) };
                taken.push(ptr);
            }
            Err(error) => {
                assert_eq!(error.cause(), Cause::Os(libc::ENOMEM));
                break;
            }
        }
    }
    assert!(pages.free_bytes() < 3 * page);
    // Released out of order: the extents merge back into one.
    let (odd, even): (Vec<_>, Vec<_>) = taken.iter().enumerate().partition(|(i, _)| i % 2 == 1);
    for (_, ptr) in odd.into_iter().chain(even) {
        // SAFETY: each reservation made above, released once.
        unsafe { pages.release(*ptr, 3 * page, page).unwrap() };
    }
    assert_eq!(pages.free_bytes(), pages.len());
    let whole = pages.reserve_committed(pages.len(), page).unwrap();
    // SAFETY: reused pages come back zeroed.
    assert_eq!(unsafe { whole.read() }, 0);
    // SAFETY: the reservation just made, released once.
    unsafe { pages.release(whole, pages.len(), page).unwrap() };
}

#[test]
fn a_region_reserved_without_access_is_committed_before_use() {
    // Found by a review: a region reserved without access (safe `Region::reserve`) made
    // the first allocation fault.
    let region = Region::reserve(4 << 20).unwrap();
    let heap = AsyncHeap::with_source(RegionPages::from_region(region).unwrap(), 1 << 20);
    let value = heap.try_alloc(7u64).unwrap();
    assert_eq!(*value, 7);
}

#[test]
fn a_region_sized_by_the_documented_rule_serves_the_whole_capacity() {
    // The capacity, 2 MiB of bookkeeping and 1 MiB for the one size class used. Under
    // miri, where the 2048 blocks of 16 KiB cost minutes, 2 KiB: 256 blocks of 8 bytes,
    // still four full magazines of the class, which the region must serve whole all the
    // same.
    let capacity = if cfg!(miri) { 2 * 1024 } else { 64 * 1024 };
    let region = Region::reserve_committed(capacity + (3 << 20), 4096).unwrap();
    let heap = AsyncHeap::with_source(RegionPages::from_region(region).unwrap(), capacity);
    let mut held = Vec::new();
    while let Ok(boxed) = heap.try_alloc(1u64) {
        held.push(boxed);
    }
    assert_eq!(heap.available(), 0, "the capacity was served whole");
}

#[test]
#[cfg_attr(miri, ignore = "8 MiB region")]
fn large_blocks_aligned_beyond_a_page_are_charged_their_padding() {
    // Found by a review: 256 KiB blocks aligned to 2 MiB were charged 256 KiB each, so a
    // region ran out (and a waiting allocation aborted) while the capacity allowed more.
    let region = Region::reserve_committed(8 << 20, 4096).unwrap();
    let heap = AsyncHeap::with_source(RegionPages::from_region(region).unwrap(), 5 << 20);
    let layout = Layout::from_size_align(256 << 10, 2 << 20).unwrap();
    let charge = heap.charge(layout).unwrap();
    assert!(charge >= (256 << 10) + (2 << 20) - 4096, "charged {charge}");
    let mut held = Vec::new();
    while let Ok(block) = heap.try_alloc_layout(layout) {
        assert!(block.as_ptr().addr().get().is_multiple_of(2 << 20));
        held.push(block);
    }
    // The capacity ran out, not the region.
    assert_eq!(held.len(), 2);
    assert!(heap.available() < charge);
}
