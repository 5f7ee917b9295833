//! At the limit, shrinking a large block of `MmapAlloc` in place must not fail: glibc's
//! `realloc` keeps an `mmap`ed block whose tail it cannot give back, and Rust's
//! collections abort (`handle_alloc_error`) when a shrink returns null. When the block
//! shares its mapping with the next block (the kernel merges adjacent anonymous
//! mappings), the tail is the middle of a mapping and Linux refuses to unmap it at the
//! limit (`ENOMEM`); `MmapAlloc` then gives the tail's memory back
//! (`release_or_decommit`), the range waits to be released, and the shrink succeeds.

use core::alloc::{GlobalAlloc, Layout};

use pagekeep_mmap::{MmapAlloc, sys};

use crate::at_the_limit::{Filler, limit, mapping_of};

pub fn a_shrink_in_place_at_the_limit_returns_the_block() {
    let page = sys::page_size();
    let limit = limit();
    let layout = Layout::from_size_align(4 * page, page).expect("a layout");
    // Two blocks one after the other: the kernel places the second right below the
    // first and merges them into one mapping, so the lower one's tail is a middle.
    // SAFETY: a non-zero-sized layout.
    let (upper, lower) = unsafe { (MmapAlloc.alloc(layout), MmapAlloc.alloc(layout)) };
    assert!(!upper.is_null() && !lower.is_null());
    let lower_address = lower.addr();
    let (_, lower_mapping_end) = mapping_of(lower_address).expect("mapped");
    assert!(
        lower_mapping_end > lower_address + 4 * page,
        "the lower block shares its mapping with its neighbour"
    );
    // SAFETY: inside the lower block, ours.
    unsafe { lower.write(7) };

    let filler = Filler::fill(limit);
    // SAFETY: a live block of `MmapAlloc` with `layout`, shrunk to one page.
    let shrunk = unsafe { MmapAlloc.realloc(lower, layout, page) };
    // Asserts only with room again: a panic at the limit cannot allocate its message.
    drop(filler);
    println!(
        "mapping_limit: shrink: shrinking a block whose tail is the middle of \
         a mapping at the limit ({limit}) returned {}",
        if shrunk.is_null() {
            "null"
        } else {
            "the block"
        }
    );
    let (block, size) = if shrunk.is_null() {
        (lower, 4 * page)
    } else {
        (shrunk, page)
    };
    // SAFETY: the block, live with `size` bytes, still holds what was written.
    unsafe {
        assert_eq!(block.read(), 7);
        MmapAlloc.dealloc(
            block,
            Layout::from_size_align(size, page).expect("a layout"),
        );
        MmapAlloc.dealloc(upper, layout);
    }
    assert!(
        !shrunk.is_null(),
        "a shrink in place at the mapping-count limit must not fail"
    );
}
