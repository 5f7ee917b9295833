//! Issue 21: an async heap over a region that runs short while the capacity allows a
//! request (the region is fragmented: partly used slabs of other size classes). A
//! waiting allocation used to abort the process through `handle_alloc_error`; it now
//! waits until frees give region space back, then completes. The old code's abort is a
//! process death, so each case runs in a child process and the parent checks that it
//! ended well.

use core::future::Future;
use core::pin::pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll};
use std::collections::BTreeMap;
use std::time::Duration;

use pagekeep_mmap::Region;
use pagekeep_slab::SLAB_BYTES;
use pagekeep_slab::async_heap::{AsyncHeap, HeapBox, RegionPages};

use crate::async_support::{block_on_for, counting_waker};

const CHILD: &str = "SLAB_ALLOC_REGION_RUNS_SHORT_CHILD";

/// Runs the ignored test `name` of this file in a child process; panics with its output
/// unless it passed.
fn run_child(name: &str) {
    crate::child_process::run_ignored_test(CHILD, &format!("async_heap_region_runs_short::{name}"));
}

/// A heap of 16 MiB over a region of 20 MiB (the capacity, 2 MiB of bookkeeping and
/// 1 MiB for each of the two classes used: the rule the docs gave before), filled with
/// 64-byte blocks, of which one per 64 KiB is kept, then with 128-byte blocks until the
/// region (not the capacity) runs out. Returns the kept 64-byte blocks and the 128-byte
/// ones.
#[allow(clippy::type_complexity)]
fn fragment(
    heap: &AsyncHeap<RegionPages>,
) -> (
    Vec<HeapBox<'_, [u8; 64], RegionPages>>,
    Vec<HeapBox<'_, [u8; 128], RegionPages>>,
) {
    let capacity = heap.capacity();
    let mut small = Vec::new();
    while let Ok(block) = heap.try_alloc([1u8; 64]) {
        small.push(block);
    }
    assert!(heap.available() < 64, "stopped by the capacity");
    small.sort_by_key(|block| block.as_ptr().addr());
    let mut kept = Vec::new();
    let mut granule = usize::MAX;
    for block in small {
        let this = block.as_ptr().addr() / (64 << 10);
        if this != granule {
            granule = this;
            kept.push(block);
        }
    }
    let mut medium = Vec::new();
    while let Ok(block) = heap.try_alloc([2u8; 128]) {
        medium.push(block);
    }
    assert!(
        heap.available() > capacity / 2,
        "stopped by the region, not the capacity ({} available)",
        heap.available()
    );
    (kept, medium)
}

fn heap_over(region: usize, capacity: usize) -> (AsyncHeap<RegionPages>, RegionPages) {
    let pages =
        RegionPages::from_region(Region::reserve_committed(region, SLAB_BYTES).unwrap()).unwrap();
    (AsyncHeap::with_source(pages.clone(), capacity), pages)
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn a_waiting_allocation_waits_for_the_region_instead_of_aborting() {
    run_child("child_waits_for_the_region");
}

#[test]
#[ignore = "child process of a_waiting_allocation_waits_for_the_region_instead_of_aborting"]
fn child_waits_for_the_region() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let capacity = 16 << 20;
    let (heap, pages) = heap_over(capacity + (4 << 20), capacity);
    let (kept, medium) = fragment(&heap);
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut waiting = pin!(heap.alloc([9u8; 128]));
        // The old code aborted here.
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(heap.waiters(), 1);
        assert!(heap.try_alloc(1u8).is_err(), "FIFO: someone waits");
        // The kept blocks of the lowest slab: freeing them all empties it.
        let mut by_slab: BTreeMap<usize, Vec<_>> = BTreeMap::new();
        for block in kept {
            by_slab
                .entry(block.as_ptr().addr() / SLAB_BYTES)
                .or_default()
                .push(block);
        }
        let (_, mut first) = by_slab.pop_first().unwrap();
        assert!(first.len() > 1);
        while first.len() > 1 {
            let before = wakes.0.load(Ordering::SeqCst);
            drop(first.pop());
            // Each free while a request is starved is a source event: one wake, one
            // attempt, which fails while the slab has a live block.
            assert_eq!(wakes.0.load(Ordering::SeqCst), before + 1);
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
        }
        drop(first.pop());
        let Poll::Ready(block) = waiting.as_mut().poll(&mut cx) else {
            panic!("the emptied slab's pages did not serve the request");
        };
        assert!(pages.contains(block.as_ptr().cast()));
        assert_eq!(*block, [9u8; 128]);
        drop((block, by_slab, medium));
    }
    assert_eq!((heap.available(), heap.waiters()), (capacity, 0));
    assert!(
        block_on_for(heap.alloc([0u8; 128]), Duration::from_secs(1)).is_some(),
        "the heap stays usable"
    );
    drop(heap);
    assert_eq!(pages.free_bytes(), pages.len(), "every page came back");
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn frees_from_another_thread_reach_a_starved_request() {
    run_child("child_frees_from_another_thread");
}

#[test]
#[ignore = "child process of frees_from_another_thread_reach_a_starved_request"]
fn child_frees_from_another_thread() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let capacity = 16 << 20;
    let (heap, pages) = heap_over(capacity + (4 << 20), capacity);
    let (kept, medium) = fragment(&heap);
    // The kept blocks of the lowest slab move to a thread that frees them, then stays
    // alive and idle: its frees must bypass its magazines (where nothing would take
    // them back), or the slab never empties and the request waits for good.
    let mut by_slab: BTreeMap<usize, Vec<_>> = BTreeMap::new();
    for block in kept {
        by_slab
            .entry(block.as_ptr().addr() / SLAB_BYTES)
            .or_default()
            .push(block);
    }
    let (_, first) = by_slab.pop_first().unwrap();
    let (done, idle) = std::sync::mpsc::channel::<()>();
    let heap = &heap;
    // Starved before the first free, so that every one of them bypasses the magazines.
    let mut waiting = pin!(heap.alloc([9u8; 128]));
    let noop = core::task::Waker::noop();
    assert!(
        waiting
            .as_mut()
            .poll(&mut Context::from_waker(noop))
            .is_pending()
    );
    let block = std::thread::scope(|scope| {
        scope.spawn(move || {
            for block in first {
                drop(block);
                std::thread::yield_now();
            }
            idle.recv().ok();
        });
        let block = block_on_for(waiting.as_mut(), Duration::from_secs(10));
        drop(done);
        block
    });
    let block = block.expect("the starved request was never served");
    assert!(pages.contains(block.as_ptr().cast()));
    drop((block, medium, by_slab));
    assert_eq!((heap.available(), heap.waiters()), (capacity, 0));
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn many_tasks_shifting_between_classes_complete() {
    run_child("child_many_tasks_shifting_between_classes");
}

/// Yields once to the executor.
async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(|_| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            Poll::Pending
        }
    })
    .await
}

/// One task: in each phase it allocates its share of the capacity in one size class
/// (yielding between blocks, so that the tasks' blocks share slabs), keeps one block in
/// 16 until its next phase's blocks are allocated, and frees the rest. Its class moves
/// on every phase.
async fn shifting_task(heap: &AsyncHeap<RegionPages>, task: usize, share: usize) {
    const SIZES: [usize; 6] = [64, 128, 256, 512, 1024, 2048];
    let mut kept: Vec<pagekeep_slab::async_heap::HeapBlock<'_, RegionPages>> = Vec::new();
    for phase in 0..12 {
        let size = SIZES[(task + phase) % SIZES.len()];
        let layout = core::alloc::Layout::from_size_align(size, 8).unwrap();
        let mut blocks = Vec::new();
        for _ in 0..share / size {
            let block = heap.alloc_layout(layout).await;
            // SAFETY: `size` bytes of a live block.
            unsafe { block.as_ptr().write_bytes(task as u8, size) };
            blocks.push(block);
            yield_now().await;
        }
        kept.clear();
        for (index, block) in blocks.into_iter().enumerate() {
            if index % 16 == 0 {
                kept.push(block);
            }
        }
    }
}

#[test]
#[ignore = "child process of many_tasks_shifting_between_classes_complete"]
fn child_many_tasks_shifting_between_classes() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    const TASKS: usize = 16;
    let capacity = 4 << 20;
    // The capacity and 6 MiB (the rule the docs gave before asked for 8 MiB with six
    // classes; with it the region happened not to run short).
    let (heap, pages) = heap_over(capacity + (6 << 20), capacity);
    // A share and its kept sixteenth, for every task, fit in the capacity: no task waits
    // for bytes only another waiting task holds. The live bytes stay below the capacity.
    let share = capacity / (TASKS + 1);
    let mut tasks: Vec<_> = (0..TASKS)
        .map(|task| Some(Box::pin(shifting_task(&heap, task, share))))
        .collect();
    let waker = core::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut left = TASKS;
    let mut rounds = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut starved_rounds = 0u64;
    while left != 0 {
        rounds += 1;
        assert!(std::time::Instant::now() < deadline, "the tasks hung");
        for slot in &mut tasks {
            if let Some(task) = slot
                && task.as_mut().poll(&mut cx).is_ready()
            {
                *slot = None;
                left -= 1;
            }
        }
        // Someone waits while the capacity has room for a block: a starved request.
        if heap.waiters() != 0 && heap.available() >= 2048 {
            starved_rounds += 1;
        }
    }
    println!("{rounds} rounds, {starved_rounds} with a starved request");
    assert!(starved_rounds > 0, "the region never ran short");
    drop(tasks);
    assert_eq!((heap.available(), heap.waiters()), (capacity, 0));
    drop(heap);
    assert_eq!(pages.free_bytes(), pages.len());
}
