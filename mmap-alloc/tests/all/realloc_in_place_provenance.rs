//! A block grown within its pages keeps its address, and the pointer returned reaches
//! the grown bytes even when the caller's pointer could reach only the old size (a
//! `Box<[T]>` turned back into a `Vec` is retagged to its length). Under miri (Stacked
//! Borrows) a write to the grown bytes through the caller's provenance is undefined.

use core::alloc::{GlobalAlloc, Layout};

use pagekeep_mmap::MmapAlloc;

#[test]
fn growing_within_the_pages_returns_a_pointer_to_the_whole_block() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: a non-zero layout.
    let block = unsafe { MmapAlloc.alloc(layout) };
    assert!(!block.is_null());
    // As a `Box<[u8; 100]>` would: a pointer that may reach the 100 bytes and no more.
    // SAFETY: the block is 100 writable bytes, not otherwise referenced.
    let narrowed: *mut u8 = unsafe { &mut *block.cast::<[u8; 100]>() }.as_mut_ptr();
    // SAFETY: inside the 100 bytes.
    unsafe { narrowed.write_bytes(5, 100) };
    // SAFETY: `narrowed` is the block, live with `layout`; 200 bytes fit its page.
    let grown = unsafe { MmapAlloc.realloc(narrowed, layout, 200) };
    assert_eq!(grown.addr(), block.addr(), "resized in place");
    // SAFETY: the grown block holds 200 bytes, the first 100 kept.
    unsafe {
        grown.add(100).write_bytes(6, 100);
        assert!((0..100).all(|offset| grown.add(offset).read() == 5));
        assert!((100..200).all(|offset| grown.add(offset).read() == 6));
        MmapAlloc.dealloc(grown, Layout::from_size_align(200, 8).unwrap());
    }
}
