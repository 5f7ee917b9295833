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
