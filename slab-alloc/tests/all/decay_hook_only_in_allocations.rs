//! A decay hook (`SlabHeap::on_decay_pass`) may start a thread, as the C ABI's does under
//! `SLAB_DECAY_THREAD=1`. A C runtime frees from inside its own locked sections (glibc's
//! `pthread_join` frees a finished thread's TLS holding the lock `pthread_create` takes),
//! so the hook must never run inside a free: a pass that a free runs leaves the hook to
//! the next allocation. Tries it with a pass due during a run of frees alone, of large
//! blocks, whose every operation reads the heap's decay clock.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use pagekeep_slab::{DECAY_INTERVAL, SlabHeap};

/// Hook calls, and those made while this test's thread was inside a free.
static CALLS: AtomicUsize = AtomicUsize::new(0);
static CALLS_IN_A_FREE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IN_A_FREE: Cell<bool> = const { Cell::new(false) };
}

fn record_call() {
    CALLS.fetch_add(1, Ordering::Relaxed);
    if IN_A_FREE.with(Cell::get) {
        CALLS_IN_A_FREE.fetch_add(1, Ordering::Relaxed);
    }
}

/// Large blocks (above the size classes): each allocation and free reads the clock.
const BLOCKS: usize = 8;
const BLOCK_BYTES: usize = 200_000;

fn allocate_all(heap: &SlabHeap, layout: Layout) -> Vec<*mut u8> {
    (0..BLOCKS)
        .map(|_| {
            // SAFETY: a non-zero size.
            let block = unsafe { heap.alloc(layout) };
            assert!(!block.is_null());
            block
        })
        .collect()
}

#[test]
fn a_pass_due_in_a_free_leaves_the_hook_to_the_next_allocation() {
    // A heap of the test's own, not a static: its classes' cache ids go back when it is
    // dropped (under miri the crate has 64, and other tests of this binary need them).
    let heap = SlabHeap::new().on_decay_pass(record_call);
    let layout = Layout::from_size_align(BLOCK_BYTES, 8).unwrap();
    let blocks = allocate_all(&heap, layout);
    // Passes of a hooked heap start at its first clock reading: the allocations ran one.
    assert!(
        CALLS.load(Ordering::Relaxed) >= 1,
        "no hook call in the first allocations"
    );

    thread::sleep(DECAY_INTERVAL * 2);
    // A pass is due now, and the first free runs it.
    IN_A_FREE.with(|in_a_free| in_a_free.set(true));
    for block in blocks {
        // SAFETY: allocated above with `layout`, freed once.
        unsafe { heap.dealloc(block, layout) };
    }
    IN_A_FREE.with(|in_a_free| in_a_free.set(false));
    assert_eq!(
        CALLS_IN_A_FREE.load(Ordering::Relaxed),
        0,
        "the hook ran inside a free"
    );

    let before = CALLS.load(Ordering::Relaxed);
    let blocks = allocate_all(&heap, layout);
    assert!(
        CALLS.load(Ordering::Relaxed) > before,
        "the pass the frees ran left no hook call to the allocations after them"
    );
    for block in blocks {
        // SAFETY: as above.
        unsafe { heap.dealloc(block, layout) };
    }
}
