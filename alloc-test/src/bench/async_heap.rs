//! The async heap's wake-up latency: the time from a free in one thread to the return of
//! the poll that hands the waiter, parked in another thread, its block. `reproduce`
//! reports its quantiles; the criterion bench (`benches/async_heap.rs`) its mean.

use core::future::Future;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use std::hint::black_box;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::task::Wake;
use std::thread;
use std::time::{Duration, Instant};

use pagekeep_slab::async_heap::AsyncHeap;

/// A waker that unparks a thread.
struct Unparker(thread::Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// `hand_offs` free-to-wake times, one per hand-off. The heap has room for one 1 KiB
/// block (and for small ones): one thread holds the block, the other asks for one and
/// parks; once it is queued, the first frees its block. With
/// `with_a_third_allocating`, a third thread allocates and frees 8-byte blocks of the
/// same heap all along (contention on the heap's shared word).
pub fn free_to_wake(hand_offs: usize, with_a_third_allocating: bool) -> Vec<Duration> {
    // Room for the 1 KiB block one of the pair holds and for the third thread's small
    // blocks, not for two 1 KiB blocks: the waiter waits for the free.
    let heap = AsyncHeap::new(1024 + 64);
    let barrier = Barrier::new(2);
    let stop = AtomicBool::new(false);
    let (sender, receiver) = mpsc::channel::<Instant>();
    thread::scope(|scope| {
        let (heap, barrier, stop) = (&heap, &barrier, &stop);
        if with_a_third_allocating {
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(small) = heap.try_alloc(0u64) {
                        drop(black_box(small));
                    }
                    thread::yield_now();
                }
            });
        }
        let waiter = scope.spawn(move || {
            let waker = Waker::from(Arc::new(Unparker(thread::current())));
            let mut times = Vec::with_capacity(hand_offs);
            for _ in 0..hand_offs {
                barrier.wait();
                let mut future = core::pin::pin!(heap.alloc([0u8; 1024]));
                let block = loop {
                    if let Poll::Ready(block) =
                        future.as_mut().poll(&mut Context::from_waker(&waker))
                    {
                        break block;
                    }
                    thread::park();
                };
                let woken = Instant::now();
                let freed = receiver.recv().expect("the freeing thread sent its time");
                times.push(woken.saturating_duration_since(freed));
                drop(block);
                barrier.wait();
            }
            times
        });
        for _ in 0..hand_offs {
            let held = heap
                .try_alloc([0u8; 1024])
                .unwrap_or_else(|_| panic!("room for the held block"));
            barrier.wait();
            while heap.waiters() == 0 {
                core::hint::spin_loop();
            }
            let freed = Instant::now();
            drop(held);
            sender.send(freed).expect("the waiter is there");
            barrier.wait();
        }
        let times = waiter.join().expect("the waiter finished");
        stop.store(true, Ordering::Relaxed);
        times
    })
}
