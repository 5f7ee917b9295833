//! A peak of 4000-byte blocks, freed, must go back to the page source within about a
//! second whatever the program does next: work in other size classes (decay passes
//! driven by those operations), or nothing at all (the decay thread). Before decay, the
//! class's depot (up to 2048 magazines) and empty slabs were trimmed only by the class's
//! own operations, so the memory stayed.
//!
//! The figures are the heap's own statistics (bytes of slabs held from the page source),
//! read from a thread without magazines of the heap, so the reading is not an operation.
//! The tests poll for up to 5 s: a behavioural check that stays robust on a loaded
//! machine, not a timing benchmark.

use core::alloc::{GlobalAlloc, Layout};
use std::time::{Duration, Instant};

use slab_alloc::SlabHeap;

/// Blocks in the peak: 64 MiB of 4000-byte blocks (more than the depot of the 4096-byte
/// class keeps, which is 128 MiB, would not show it).
const PEAK_BLOCKS: usize = 16 * 1024;
const PEAK_LAYOUT: Layout = match Layout::from_size_align(4000, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("bad layout"),
};
/// How long the condition may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(5);

/// Bytes of slabs the heap holds, read from a fresh thread (no magazines of the heap, so
/// reading flushes nothing and is no operation of any class).
fn bytes_held(heap: &SlabHeap) -> usize {
    std::thread::scope(|scope| {
        scope
            .spawn(|| heap.stats().small.bytes_committed)
            .join()
            .unwrap()
    })
}

/// Allocates a peak of `count` blocks (every one written) and frees it.
fn peak_and_free(heap: &SlabHeap, count: usize) {
    let blocks: Vec<*mut u8> = (0..count)
        .map(|_| {
            // SAFETY: a non-zero layout.
            let block = unsafe { heap.alloc(PEAK_LAYOUT) };
            assert!(!block.is_null());
            // SAFETY: 4000 writable bytes.
            unsafe { block.write_bytes(0xA5, PEAK_LAYOUT.size()) };
            block
        })
        .collect();
    for block in blocks {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { heap.dealloc(block, PEAK_LAYOUT) };
    }
}

/// Runs `keep_going` (what the program does after the peak: work, or wait) until the
/// heap holds at most 10% more than `before`, and fails after [`PATIENCE`]. `peak` is
/// what it held right after the frees, for the message.
fn assert_goes_back(
    heap: &SlabHeap,
    before: usize,
    peak: usize,
    what: &str,
    mut keep_going: impl FnMut(),
) {
    let start = Instant::now();
    let mut held = peak;
    while held > before + before / 10 && start.elapsed() < PATIENCE {
        keep_going();
        held = bytes_held(heap);
    }
    assert!(
        held <= before + before / 10,
        "after {:?} {what} the heap still holds {held} bytes \
         (before the peak: {before}, after the frees: {peak})",
        start.elapsed()
    );
}

/// Allocates and frees a batch of small objects in two classes far from the peak's.
fn work_in_other_classes(heap: &SlabHeap) {
    let mut blocks = Vec::with_capacity(1000);
    for (size, count) in [(64, 1000), (200, 300)] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for _ in 0..count {
            // SAFETY: non-zero layout.
            let block = unsafe { heap.alloc(layout) };
            assert!(!block.is_null());
            // SAFETY: `size` writable bytes.
            unsafe { block.write(1) };
            blocks.push(block);
        }
        for block in blocks.drain(..) {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { heap.dealloc(block, layout) };
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "64 MiB and seconds of waiting")]
fn a_freed_peak_goes_back_while_the_program_works_in_other_classes() {
    let heap = SlabHeap::new();
    // Warm: the working set of the other classes is part of the baseline.
    let warm_until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < warm_until {
        work_in_other_classes(&heap);
    }
    let before = bytes_held(&heap);
    peak_and_free(&heap, PEAK_BLOCKS);
    let peak = bytes_held(&heap);
    assert!(
        peak >= PEAK_BLOCKS * 4096 / 2,
        "the freed peak should still be held right after the frees ({peak} bytes)"
    );
    assert_goes_back(&heap, before, peak, "of work in other classes", || {
        for _ in 0..16 {
            work_in_other_classes(&heap);
        }
    });
    heap.check_invariants();
}

#[test]
#[cfg_attr(miri, ignore = "64 MiB and seconds of waiting")]
fn a_freed_peak_goes_back_with_no_activity_at_all_under_the_decay_thread() {
    let heap: &'static SlabHeap = Box::leak(Box::new(SlabHeap::new()));
    heap.start_decay_thread().unwrap();
    // One small block on this thread, so the heap is built and holds something.
    let small = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: non-zero layout; freed at the end.
    let kept = unsafe { heap.alloc(small) };
    assert!(!kept.is_null());
    let before = bytes_held(heap);
    // The peak on a thread that exits (its magazines go back to the depots); this thread
    // then makes no operation of the heap at all.
    std::thread::spawn(move || peak_and_free(heap, PEAK_BLOCKS))
        .join()
        .unwrap();
    let peak = bytes_held(heap);
    assert_goes_back(heap, before, peak, "without activity", || {
        std::thread::sleep(Duration::from_millis(50));
    });
    // SAFETY: allocated above with this layout, freed once.
    unsafe { heap.dealloc(kept, small) };
}

/// Allocates and frees one block at a time in two small classes: work that the thread's
/// magazines serve without ever taking a lock, after the first pair of each class.
fn work_one_block_at_a_time(heap: &SlabHeap) {
    for size in [64, 200] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        for _ in 0..1000 {
            // SAFETY: non-zero layout.
            let block = unsafe { heap.alloc(layout) };
            assert!(!block.is_null());
            // SAFETY: `size` writable bytes.
            unsafe { block.write(1) };
            // SAFETY: allocated just above with this layout, freed once.
            unsafe { heap.dealloc(block, layout) };
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "seconds of waiting")]
fn a_freed_peak_goes_back_while_the_program_works_one_block_at_a_time() {
    let heap = SlabHeap::new();
    let warm_until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < warm_until {
        work_one_block_at_a_time(&heap);
    }
    let before = bytes_held(&heap);
    // The peak on threads that exit, as a worker pool does.
    std::thread::scope(|scope| {
        scope.spawn(|| peak_and_free(&heap, PEAK_BLOCKS));
    });
    let peak = bytes_held(&heap);
    assert_goes_back(&heap, before, peak, "of allocate/free pairs", || {
        for _ in 0..16 {
            work_one_block_at_a_time(&heap);
        }
    });
}

/// The decay thread of [`EARLY_PEAK_HEAP`], started from its decay hook as the C ABI
/// does under `SLAB_DECAY_THREAD=1`.
fn start_early_peak_decay_thread() {
    let _ = EARLY_PEAK_HEAP.start_decay_thread();
}

static EARLY_PEAK_HEAP: SlabHeap = SlabHeap::new().on_decay_pass(start_early_peak_decay_thread);

#[test]
#[cfg_attr(miri, ignore = "64 MiB and seconds of waiting")]
fn a_peak_freed_before_the_first_decay_interval_goes_back_under_a_hook_started_thread() {
    let heap = &EARLY_PEAK_HEAP;
    let small = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: non-zero layout; freed at the end.
    let kept = unsafe { heap.alloc(small) };
    assert!(!kept.is_null());
    let before = bytes_held(heap);
    // The whole peak takes far less than `DECAY_INTERVAL` (250 ms) on a quiet machine,
    // on a thread that exits; nothing operates on the heap afterwards. The first decay
    // pass, and so the hook, used to be due only 250 ms after the heap was built.
    std::thread::spawn(|| peak_and_free(&EARLY_PEAK_HEAP, PEAK_BLOCKS / 4))
        .join()
        .unwrap();
    let peak = bytes_held(heap);
    assert_goes_back(heap, before, peak, "without activity", || {
        std::thread::sleep(Duration::from_millis(50));
    });
    // SAFETY: allocated above with this layout, freed once.
    unsafe { heap.dealloc(kept, small) };
}
