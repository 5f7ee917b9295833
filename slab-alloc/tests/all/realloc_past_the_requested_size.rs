//! A block that moves on `realloc`/`grow`/`shrink` keeps every byte of its old usable
//! size that fits its new one: C programs fill what `malloc_usable_size` promised
//! (Redis's `zmalloc_size`), and `Allocator` callers what the returned slice spans.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use pagekeep_slab::SlabHeap;

/// Sizes in the small classes, the classes above 16 KiB, and large blocks (under miri,
/// one small class, one above a page and a large block).
fn sizes() -> &'static [usize] {
    if cfg!(miri) {
        &[1, 5000, 200_000]
    } else {
        &[1, 20, 100, 5000, 40_000, 200_000, 3 << 20]
    }
}

fn byte(index: usize) -> u8 {
    (index * 7 + 3) as u8
}

/// Writes the pattern over `len` bytes (every 61st byte and the last 64 under miri).
///
/// # Safety
/// - `block` is valid for writes of `len` bytes.
unsafe fn fill(block: NonNull<u8>, len: usize) {
    for index in crate::sampled(len) {
        // SAFETY: inside the block (caller).
        unsafe { block.add(index).write(byte(index)) };
    }
}

/// Checks the first `kept` bytes of a block that [`fill`] wrote `filled` bytes of (the
/// bytes it sampled); panics naming the first lost byte.
///
/// # Safety
/// - `block` is valid for reads of `kept` bytes.
unsafe fn check(block: NonNull<u8>, filled: usize, kept: usize, what: &str) {
    for index in crate::sampled(filled).take_while(|&index| index < kept) {
        // SAFETY: inside the block (caller).
        let read = unsafe { block.add(index).read() };
        assert_eq!(read, byte(index), "{what}: byte {index} of {kept} lost");
    }
}

#[test]
fn allocator_grow_and_shrink_keep_the_whole_slice() {
    let heap = SlabHeap::new();
    for &old_size in sizes() {
        for &new_size in sizes() {
            let old = Layout::from_size_align(old_size, 8).unwrap();
            let new = Layout::from_size_align(new_size, 8).unwrap();
            let block = heap.allocate(old).unwrap();
            let usable = block.len();
            let block = block.cast::<u8>();
            // SAFETY: the slice spans `usable` writable bytes; the block is resized with
            // the layout it was allocated with and freed once with its new layout.
            unsafe {
                fill(block, usable);
                let moved = if new_size >= old_size {
                    heap.grow(block, old, new)
                } else {
                    heap.shrink(block, old, new)
                }
                .unwrap()
                .cast::<u8>();
                let kept = usable.min(new_size);
                check(moved, usable, kept, &format!("{old_size} -> {new_size}"));
                heap.deallocate(moved, new);
            }
        }
    }
    heap.check_invariants();
}

#[test]
fn global_realloc_keeps_the_usable_size() {
    let heap = SlabHeap::new();
    for &old_size in sizes() {
        for &new_size in sizes() {
            let old = Layout::from_size_align(old_size, 8).unwrap();
            let usable = SlabHeap::<pagekeep_mmap::DefaultPages>::usable_size(old);
            // SAFETY: non-zero sizes; the block is written within its usable size,
            // reallocated with its layout and freed once with the new one.
            unsafe {
                let block = NonNull::new(heap.alloc(old)).unwrap();
                fill(block, usable);
                let moved = NonNull::new(heap.realloc(block.as_ptr(), old, new_size)).unwrap();
                // Every byte that fits the new block's usable size, as in place.
                let new_usable = SlabHeap::<pagekeep_mmap::DefaultPages>::usable_size(
                    Layout::from_size_align(new_size, 8).unwrap(),
                );
                let kept = usable.min(new_usable);
                check(moved, usable, kept, &format!("{old_size} -> {new_size}"));
                heap.dealloc(
                    moved.as_ptr(),
                    Layout::from_size_align(new_size, 8).unwrap(),
                );
            }
        }
    }
    heap.check_invariants();
}
