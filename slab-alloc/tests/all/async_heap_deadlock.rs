//! The deadlock a bounded heap makes possible: every task holds memory and waits for
//! more that only another waiting task could free. Detected here by a round-robin
//! executor that sees a whole round pass with no task finishing and no wake-up; then
//! avoided by asking for everything at once.

use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll};

use pagekeep_slab::async_heap::AsyncHeap;

use crate::async_support::counting_waker;

/// Runs `tasks` round-robin; `Err(unfinished)` when a round makes no progress (no task
/// finishes and no waker fires): nothing outside them can free memory, so none ever will.
fn run_or_detect_deadlock(
    mut tasks: Vec<Pin<Box<dyn Future<Output = ()> + '_>>>,
) -> Result<(), usize> {
    let (waker, wakes) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        let wakes_before = wakes.0.load(Ordering::SeqCst);
        let before = tasks.len();
        tasks.retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
        if tasks.is_empty() {
            return Ok(());
        }
        if tasks.len() == before && wakes.0.load(Ordering::SeqCst) == wakes_before {
            return Err(tasks.len());
        }
    }
}

/// Waits for a poll (so the other task runs in between).
async fn yield_once() {
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[test]
fn two_tasks_each_holding_half_and_asking_for_more_deadlock() {
    let heap = AsyncHeap::new(1024);
    let task = || async {
        let first = heap.alloc([0u8; 512]).await;
        yield_once().await;
        // Needs 512 more: only the other task's first block could make room.
        let second = heap.alloc([0u8; 512]).await;
        drop((first, second));
    };
    let tasks: Vec<Pin<Box<dyn Future<Output = ()>>>> = vec![Box::pin(task()), Box::pin(task())];
    assert_eq!(run_or_detect_deadlock(tasks), Err(2));
    // The tasks are gone (their futures dropped): cancellation gave everything back.
    assert_eq!(heap.available(), 1024);
    assert_eq!(heap.waiters(), 0);
}

#[test]
fn asking_for_everything_at_once_avoids_the_deadlock() {
    let heap = AsyncHeap::new(1024);
    let task = || async {
        let both = heap.alloc([[0u8; 512]; 2]).await;
        yield_once().await;
        drop(both);
    };
    let tasks: Vec<Pin<Box<dyn Future<Output = ()>>>> = vec![Box::pin(task()), Box::pin(task())];
    assert_eq!(run_or_detect_deadlock(tasks), Ok(()));
    assert_eq!(heap.available(), 1024);
}

/// The module docs' example of the advice: a 4 MiB capacity shared by 8 threads using
/// three size classes, each thread holding at most 256 KiB while it waits for a block of
/// at most 8 KiB, over a region sized by the rule (2 MiB, and per class 1.07 × the
/// capacity, 2 slabs and 2 magazines of up to 256 KiB per thread). The threads move from
/// class to class while holding blocks of the previous one, which is what strands region
/// in partly used slabs. Every request completes: a hang past the deadline is a deadlock.
#[test]
#[cfg_attr(miri, ignore = "8 threads, thousands of blocks, a deadline")]
fn following_the_advice_with_a_region_by_the_rule_does_not_deadlock() {
    use core::alloc::Layout;
    use pagekeep_mmap::Region;
    use pagekeep_slab::SLAB_BYTES;
    use pagekeep_slab::async_heap::RegionPages;
    use std::time::Duration;

    const THREADS: usize = 8;
    const CLASSES: [usize; 3] = [64, 1024, 8192];
    const HELD: usize = 256 << 10;
    let capacity = 4 << 20;
    let per_class = capacity * 107 / 100 + 2 * SLAB_BYTES + THREADS * 2 * (256 << 10);
    let region = ((2 << 20) + CLASSES.len() * per_class).next_multiple_of(SLAB_BYTES);
    let pages =
        RegionPages::from_region(Region::reserve_committed(region, SLAB_BYTES).unwrap()).unwrap();
    let heap = AsyncHeap::with_source(pages, capacity);
    assert!(
        THREADS * HELD + CLASSES[2] <= capacity,
        "the capacity advice holds"
    );
    let heap = &heap;
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                let mut held = std::collections::VecDeque::new();
                let mut held_bytes = 0;
                for step in 0..3000 {
                    let size = CLASSES[(step / 250 + thread) % CLASSES.len()];
                    while held_bytes + size > HELD {
                        let block: pagekeep_slab::async_heap::HeapBlock<'_, RegionPages> =
                            held.pop_front().unwrap();
                        held_bytes -= block.layout().size();
                    }
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    let block = crate::async_support::block_on_for(
                        heap.alloc_layout(layout),
                        Duration::from_secs(30),
                    )
                    .unwrap_or_else(|| {
                        panic!(
                            "thread {thread} step {step}: deadlocked ({} available, {} waiters)",
                            heap.available(),
                            heap.waiters()
                        )
                    });
                    held_bytes += size;
                    held.push_back(block);
                }
            });
        }
    });
    assert_eq!((heap.available(), heap.waiters()), (capacity, 0));
}
