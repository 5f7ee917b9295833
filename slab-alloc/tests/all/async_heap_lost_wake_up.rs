//! A free landing while a waiter looks at the available bytes and registers (the window
//! where the seed's design lost the wake-up) must still wake it.

use std::sync::Barrier;
use std::time::Duration;

use pagekeep_slab::async_heap::AsyncHeap;

use crate::async_support::block_on_for;

/// Thousands of races between a waiter's first poll and the free that makes room: each
/// waiter must finish (a lost wake-up leaves it parked until the deadline).
#[test]
fn free_racing_the_registration_wakes_the_waiter() {
    let rounds = if cfg!(miri) { 5 } else { 5_000 };
    let heap = AsyncHeap::new(64);
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel();
        scope.spawn(|| {
            for held in receiver {
                barrier.wait();
                drop(held);
            }
        });
        for round in 0..rounds {
            let held = heap
                .try_alloc([0u8; 64])
                .expect("the last round gave its bytes back");
            sender.send(held).unwrap();
            barrier.wait();
            // The free runs now, before, during or after this first poll.
            let value = block_on_for(heap.alloc([1u8; 64]), Duration::from_secs(10))
                .unwrap_or_else(|| panic!("round {round}: the waiter was never woken"));
            drop(value);
        }
        drop(sender);
    });
    assert_eq!(heap.available(), 64);
    assert_eq!(heap.waiters(), 0);
}

/// Many threads allocate and free blocks of mixed sizes in a heap far too small for all
/// of them: every request is eventually served, and the bytes add up afterwards.
#[test]
fn contended_waiters_all_finish() {
    let per_thread = if cfg!(miri) { 10 } else { 2_000 };
    let heap = AsyncHeap::new(4096);
    std::thread::scope(|scope| {
        for thread in 0..4usize {
            let heap = &heap;
            scope.spawn(move || {
                for i in 0..per_thread {
                    let size = [16, 1000, 3000][(i + thread) % 3];
                    let layout = core::alloc::Layout::from_size_align(size, 8).unwrap();
                    let block = block_on_for(heap.alloc_layout(layout), Duration::from_secs(30))
                        .expect("a waiter hung");
                    std::thread::yield_now();
                    drop(block);
                }
            });
        }
    });
    assert_eq!(heap.available(), 4096);
    assert_eq!(heap.waiters(), 0);
}
