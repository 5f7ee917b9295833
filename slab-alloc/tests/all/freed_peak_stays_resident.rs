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

use pagekeep_slab::SlabHeap;

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
    keep_going: impl FnMut(),
) {
    if let Err(message) = goes_back(heap, before, peak, what, keep_going) {
        panic!("{message}");
    }
}

/// [`assert_goes_back`], returning the failure instead of panicking (for a caller that
/// must first let its threads go).
fn goes_back(
    heap: &SlabHeap,
    before: usize,
    peak: usize,
    what: &str,
    mut keep_going: impl FnMut(),
) -> Result<(), String> {
    let start = Instant::now();
    let mut held = peak;
    while held > before + before / 10 && start.elapsed() < PATIENCE {
        keep_going();
        held = bytes_held(heap);
    }
    if held <= before + before / 10 {
        return Ok(());
    }
    Err(format!(
        "after {:?} {what} the heap still holds {held} bytes \
         (before the peak: {before}, after the frees: {peak})",
        start.elapsed()
    ))
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

/// After the peak, the program only allocates a block and frees it by its address (as
/// C's `malloc` and `free` do, through `alloc_in_class` and `free_small_block`), again
/// and again: every operation is served by the thread's loaded magazine, no class takes
/// its lock, so only the looks at the clock that frees make from the magazines every
/// 16 384 hits drive the decay passes that give the peak back.
#[test]
#[cfg_attr(miri, ignore = "64 MiB and seconds of waiting")]
fn a_freed_peak_goes_back_while_the_program_frees_by_address_from_its_magazines_alone() {
    let heap = SlabHeap::new();
    let class = pagekeep_slab::size_class::class_up_to_1024_aligned_16(48).unwrap();
    let ping_pong = |rounds: usize| {
        for _ in 0..rounds {
            let block = heap.alloc_in_class(class).expect("a block");
            // SAFETY: a live block of this heap, freed once by its address.
            assert!(unsafe { heap.free_small_block(block) });
        }
    };
    ping_pong(100);
    let before = bytes_held(&heap);
    peak_and_free(&heap, PEAK_BLOCKS);
    let peak = bytes_held(&heap);
    assert!(
        peak >= PEAK_BLOCKS * 4096 / 2,
        "the freed peak should still be held right after the frees ({peak} bytes)"
    );
    assert_goes_back(&heap, before, peak, "of frees by address", || {
        ping_pong(100_000);
    });
    heap.check_invariants();
}

/// The peak's class stays in use, one block at a time, beside the other classes' work:
/// the class is busy at every decay pass, so only its epochs can give the peak back, and
/// their floors (kept magazines and empty slabs) must not keep it. Two threads make the
/// peak at once, so that its magazines may grow under contention, as in a C program's
/// worker threads.
#[test]
#[cfg_attr(miri, ignore = "64 MiB and seconds of waiting")]
fn a_freed_peak_goes_back_while_its_class_stays_in_use() {
    let heap = SlabHeap::new();
    let one_peak_block = || {
        // SAFETY: a non-zero layout.
        let block = unsafe { heap.alloc(PEAK_LAYOUT) };
        assert!(!block.is_null());
        // SAFETY: 4000 writable bytes; allocated just above with this layout, freed once.
        unsafe {
            block.write_bytes(0x5A, PEAK_LAYOUT.size());
            heap.dealloc(block, PEAK_LAYOUT);
        }
    };
    let warm_until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < warm_until {
        work_in_other_classes(&heap);
        one_peak_block();
    }
    let before = bytes_held(&heap);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| peak_and_free(&heap, PEAK_BLOCKS / 2));
        }
    });
    let peak = bytes_held(&heap);
    assert_goes_back(
        &heap,
        before,
        peak,
        "of work that keeps the class in use",
        || {
            for _ in 0..16 {
                work_in_other_classes(&heap);
                one_peak_block();
            }
        },
    );
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

#[cfg(feature = "reclaim-idle-threads")]
/// Block sizes of [`fill_magazines`]: four classes, none used by the main thread's work.
const MAGAZINE_SIZES: [usize; 4] = [512, 1024, 2048, 4000];
#[cfg(feature = "reclaim-idle-threads")]
/// Threads that fill their magazines and then wait.
const IDLE_THREADS: usize = 4;

#[cfg(feature = "reclaim-idle-threads")]
/// Allocates and frees 64 blocks in each of [`MAGAZINE_SIZES`]: what the thread frees
/// last stays in its magazines.
fn fill_magazines(heap: &SlabHeap) {
    for size in MAGAZINE_SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let blocks: Vec<*mut u8> = (0..64)
            .map(|_| {
                // SAFETY: non-zero layout.
                let block = unsafe { heap.alloc(layout) };
                assert!(!block.is_null());
                // SAFETY: `size` writable bytes.
                unsafe { block.write_bytes(0x5A, size) };
                block
            })
            .collect();
        for block in blocks {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { heap.dealloc(block, layout) };
        }
    }
}

#[cfg(feature = "reclaim-idle-threads")]
/// [`IDLE_THREADS`] threads fill their magazines and then wait on a barrier (blocked,
/// no operation of the heap) while `keep_going` runs; the slabs their magazines keep
/// must go back all the same. Before idle threads' magazines were reclaimed by the
/// decay pass, they stayed until the threads exited.
fn idle_threads_give_back(heap: &SlabHeap, what: &str, keep_going: impl FnMut()) {
    some_idle_threads_give_back(heap, IDLE_THREADS, what, keep_going);
}

#[cfg(feature = "reclaim-idle-threads")]
/// [`idle_threads_give_back`] with `threads` threads.
fn some_idle_threads_give_back(
    heap: &SlabHeap,
    threads: usize,
    what: &str,
    keep_going: impl FnMut(),
) {
    let before = bytes_held(heap);
    let ready = std::sync::Barrier::new(threads + 1);
    let finish = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                fill_magazines(heap);
                ready.wait();
                // Idle: blocked until the main thread is done.
                finish.wait();
                // Then the thread uses its magazines again: they must still work.
                fill_magazines(heap);
            });
        }
        ready.wait();
        let held = bytes_held(heap);
        let outcome = if held > before + before / 10 {
            goes_back(heap, before, held, what, keep_going)
        } else {
            Err(format!(
                "the threads' magazines should keep slabs ({held} bytes, {before} before)"
            ))
        };
        // Let the threads go before failing, or the scope would wait for them forever.
        finish.wait();
        outcome
    })
    .unwrap_or_else(|message| panic!("{message}"));
    heap.check_invariants();
}

#[cfg(feature = "reclaim-idle-threads")]
#[test]
#[cfg_attr(miri, ignore = "seconds of waiting")]
fn the_magazines_of_idle_threads_go_back_while_the_program_works() {
    let heap = SlabHeap::new();
    let warm_until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < warm_until {
        work_one_block_at_a_time(&heap);
    }
    idle_threads_give_back(&heap, "of allocate/free pairs", || {
        for _ in 0..16 {
            work_one_block_at_a_time(&heap);
        }
    });
}

#[cfg(feature = "reclaim-idle-threads")]
#[test]
#[cfg_attr(miri, ignore = "seconds of waiting")]
fn the_magazines_of_idle_threads_go_back_with_no_activity_under_the_decay_thread() {
    let heap: &'static SlabHeap = Box::leak(Box::new(SlabHeap::new()));
    heap.start_decay_thread().unwrap();
    let small = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: non-zero layout; freed at the end.
    let kept = unsafe { heap.alloc(small) };
    assert!(!kept.is_null());
    idle_threads_give_back(heap, "without activity", || {
        std::thread::sleep(Duration::from_millis(50));
    });
    // SAFETY: allocated above with this layout, freed once.
    unsafe { heap.dealloc(kept, small) };
}

#[cfg(feature = "reclaim-idle-threads")]
#[test]
#[cfg_attr(miri, ignore = "threads that block on barriers for seconds")]
fn trim_takes_back_the_magazines_of_other_threads_at_once() {
    let heap = SlabHeap::new();
    work_one_block_at_a_time(&heap);
    // No decay pass runs here (nothing operates on the heap while the threads wait):
    // the first trim alone must give the memory back.
    let mut trims = 0;
    idle_threads_give_back(&heap, "of trims", || {
        trims += 1;
        heap.trim();
    });
    assert_eq!(trims, 1, "one trim should have been enough");
}

#[cfg(feature = "reclaim-idle-threads")]
#[test]
#[cfg_attr(miri, ignore = "seventy threads blocked on barriers")]
fn one_trim_takes_back_every_magazine_whatever_their_count() {
    // 69 threads keep two magazines each of 1000-byte blocks and the newest thread one:
    // 139 magazines, more than a round takes (128), and the first round, which starts
    // at the newest thread, cannot end exactly full. Trim used to stop after such a round.
    const PAIRS: usize = 69;
    let heap = SlabHeap::new();
    work_one_block_at_a_time(&heap);
    let before = bytes_held(&heap);
    let layout = Layout::from_size_align(1000, 8).unwrap();
    let churn = |count: usize| {
        let blocks: Vec<*mut u8> = (0..count)
            // SAFETY: non-zero layout.
            .map(|_| unsafe { heap.alloc(layout) })
            .collect();
        for block in blocks {
            assert!(!block.is_null());
            // SAFETY: allocated above with this layout, freed once.
            unsafe { heap.dealloc(block, layout) };
        }
    };
    let pairs_ready = std::sync::Barrier::new(PAIRS + 1);
    let finish = std::sync::Barrier::new(PAIRS + 2);
    let outcome = std::thread::scope(|scope| {
        for _ in 0..PAIRS {
            scope.spawn(|| {
                // Far more than a magazine holds: the last two stay with the thread.
                churn(512);
                pairs_ready.wait();
                finish.wait();
            });
        }
        pairs_ready.wait();
        let (one_ready, go) = std::sync::mpsc::channel();
        let (finish, churn) = (&finish, &churn);
        scope.spawn(move || {
            churn(2);
            one_ready.send(()).unwrap();
            finish.wait();
        });
        go.recv().unwrap();
        let held = bytes_held(&heap);
        heap.trim();
        let after = bytes_held(&heap);
        finish.wait();
        (held, after)
    });
    let (held, after) = outcome;
    assert!(
        held > before + before / 10,
        "the magazines should keep slabs ({held} bytes)"
    );
    assert!(
        after <= before + before / 10,
        "one trim left {after} bytes (before the threads: {before}, with their magazines: {held})"
    );
}
