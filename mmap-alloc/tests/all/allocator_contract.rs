//! `MmapAlloc` keeps the `allocator_api2::Allocator` contract: zero sizes, usable sizes,
//! zeroed growth, alignment changes.

use core::alloc::Layout;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as ApiVec;
use pagekeep_mmap::{MmapAlloc, sys};

#[test]
fn zero_sized_blocks_are_dangling_and_aligned() {
    for align in [1, 8, 4096, 1 << 16] {
        let layout = Layout::from_size_align(0, align).unwrap();
        let block = MmapAlloc.allocate(layout).unwrap();
        assert_eq!(block.len(), 0);
        assert_eq!(block.cast::<u8>().addr().get() % align, 0);
        // SAFETY: a zero-sized block of this allocator.
        unsafe { MmapAlloc.deallocate(block.cast(), layout) };
    }
}

#[test]
fn usable_size_is_whole_pages() {
    let layout = Layout::from_size_align(10, 1).unwrap();
    let block = MmapAlloc.allocate(layout).unwrap();
    assert_eq!(block.len(), sys::page_size());
    assert_eq!(MmapAlloc::usable_size(10), Some(sys::page_size()));
    // SAFETY: the whole usable size is writable; freed once with its layout.
    unsafe {
        block.cast::<u8>().write_bytes(1, block.len());
        MmapAlloc.deallocate(block.cast(), layout);
    }
}

#[test]
fn grow_zeroed_clears_bytes_left_by_an_earlier_shrink() {
    let page = sys::page_size();
    let big = Layout::from_size_align(page, 8).unwrap();
    let small = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: each call passes a live block with the layout it has at that point.
    unsafe {
        let block = MmapAlloc.allocate(big).unwrap().cast::<u8>();
        block.write_bytes(0xFF, page);
        let shrunk = MmapAlloc.shrink(block, big, small).unwrap().cast::<u8>();
        let grown = MmapAlloc
            .grow_zeroed(shrunk, small, big)
            .unwrap()
            .cast::<u8>();
        assert_eq!(grown.read(), 0xFF, "the kept prefix survives");
        assert!(
            (16..page).all(|offset| grown.add(offset).read() == 0),
            "the rest is zero"
        );
        MmapAlloc.deallocate(grown, big);
    }
}

#[test]
fn changing_to_a_stricter_alignment_moves_the_block_when_needed() {
    let page = sys::page_size();
    let loose = Layout::from_size_align(3 * page, page).unwrap();
    let strict = Layout::from_size_align(4 * page, 1 << 20).unwrap();
    let strict_small = Layout::from_size_align(page, 1 << 20).unwrap();
    // SAFETY: each call passes a live block with its current layout.
    unsafe {
        let block = MmapAlloc.allocate(loose).unwrap().cast::<u8>();
        block.write_bytes(0x42, 3 * page);
        let grown = MmapAlloc.grow(block, loose, strict).unwrap().cast::<u8>();
        assert_eq!(grown.addr().get() % (1 << 20), 0);
        assert_eq!(grown.add(3 * page - 1).read(), 0x42);
        let shrunk = MmapAlloc
            .shrink(grown, strict, strict_small)
            .unwrap()
            .cast::<u8>();
        assert_eq!(shrunk.read(), 0x42);
        MmapAlloc.deallocate(shrunk, strict_small);
    }
}

#[test]
fn a_vector_in_mmap_alloc_grows_and_keeps_its_elements() {
    let count = if cfg!(miri) { 5_000 } else { 1 << 20 };
    let mut numbers = ApiVec::new_in(MmapAlloc);
    for number in 0..count as u64 {
        numbers.push(number);
    }
    assert!(
        numbers
            .iter()
            .enumerate()
            .all(|(index, &number)| index as u64 == number)
    );
}
