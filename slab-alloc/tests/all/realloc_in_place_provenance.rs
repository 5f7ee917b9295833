//! `realloc` that stays in its size class returns the same address, but not the caller's
//! pointer as is: that pointer may be allowed to reach only the old size (a `Box<[T]>`
//! turned back into a `Vec` is retagged to its length), so the grown bytes must be
//! reachable through the returned one. Under miri (Stacked Borrows) a write to them
//! through the caller's provenance is undefined behaviour.

use core::alloc::{GlobalAlloc, Layout};

use pagekeep_slab::SlabHeap;

#[test]
fn growing_in_place_returns_a_pointer_to_the_whole_block() {
    let heap = SlabHeap::new();
    let layout = Layout::from_size_align(56, 8).unwrap();
    // SAFETY: a non-zero layout.
    let block = unsafe { heap.alloc(layout) };
    assert!(!block.is_null());
    // As a `Box<[u8; 56]>` would: a pointer that may reach the 56 bytes and no more.
    // SAFETY: the block is 56 writable bytes, not otherwise referenced.
    let narrowed: *mut u8 = unsafe { &mut *block.cast::<[u8; 56]>() }.as_mut_ptr();
    // SAFETY: inside the 56 bytes.
    unsafe { narrowed.write_bytes(5, 56) };
    // 60 bytes stay in the class of 56.
    assert_eq!(
        <SlabHeap>::usable_size(Layout::from_size_align(60, 8).unwrap()),
        <SlabHeap>::usable_size(layout)
    );
    // SAFETY: `narrowed` is the block, live with `layout`; 60 is a valid size.
    let grown = unsafe { heap.realloc(narrowed, layout, 60) };
    assert_eq!(grown.addr(), block.addr(), "resized in place");
    // SAFETY: the grown block holds 60 bytes, the first 56 kept.
    unsafe {
        grown.add(56).write_bytes(6, 4);
        assert!((0..56).all(|offset| grown.add(offset).read() == 5));
        assert!((56..60).all(|offset| grown.add(offset).read() == 6));
        heap.dealloc(grown, Layout::from_size_align(60, 8).unwrap());
    }
}
