//! The page layer never allocates through the global allocator, so that an allocator
//! built on it (`MmapAlloc`, or the large blocks of a slab heap) can *be* the global
//! allocator. Under miri this matters most: the OS stand-in takes its blocks and its
//! bookkeeping from `System` (it used `std::alloc`, so `MmapAlloc` behind
//! `#[global_allocator]` recursed into itself). This binary's global allocator counts
//! the allocations of each thread and forwards them to `System`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use std::alloc::System;

use pagekeep_mmap::{Decommit, MmapAlloc, sys};

struct Counting;

std::thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System`; counting touches only a thread-local `Cell`
// without a destructor, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: forwarded from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn pages_and_large_blocks_never_use_the_global_allocator() {
    let page = sys::page_size();
    let before = allocations();
    let reserved = sys::reserve_aligned(4 * page, 4 * page).unwrap();
    let committed = sys::map_committed(2 * page, page).unwrap();
    let layout = Layout::from_size_align(3 * page, 8).unwrap();
    // SAFETY: every range below is one of the reservations just made, owned here.
    unsafe {
        sys::commit(reserved, 2 * page).unwrap();
        reserved.write(1);
        sys::decommit(reserved, 2 * page, Decommit::Zero).unwrap();
        sys::release(reserved.add(page), page).unwrap();
        sys::release(reserved, 4 * page).unwrap();
        sys::release(committed, 2 * page).unwrap();
        let block = MmapAlloc.alloc(layout);
        assert!(!block.is_null());
        let grown = MmapAlloc.realloc(block, layout, 5 * page);
        assert!(!grown.is_null());
        MmapAlloc.dealloc(grown, Layout::from_size_align(5 * page, 8).unwrap());
    }
    assert_eq!(
        allocations(),
        before,
        "the page layer allocated from the global allocator"
    );
}
