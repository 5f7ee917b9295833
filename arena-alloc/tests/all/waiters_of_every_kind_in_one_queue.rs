//! Blocking, timed and async waiters in one queue: served first come, first served; one
//! that gives up (a timeout, a dropped future) leaves its place without taking an arena
//! with it, and nothing is lost.

use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::future::Future;
use std::sync::mpsc::channel;
use std::time::Duration;

use pagekeep_arena::{ArenaPool, PoolConfig};

fn wait_for_waiters(pool: &ArenaPool, waiting: usize) {
    while pool.stats().waiting != waiting {
        std::thread::yield_now();
    }
}

#[test]
fn two_blocking_waiters_and_an_async_one_are_served_in_order() {
    let pool = &ArenaPool::new(PoolConfig::new(2, 64 << 10)).unwrap();
    let held = [pool.try_acquire().unwrap(), pool.try_acquire().unwrap()];
    let mut context = Context::from_waker(Waker::noop());
    std::thread::scope(|scope| {
        let (served_tx, served) = channel();
        let (release_tx, release) = channel::<()>();
        let first_tx = served_tx.clone();
        let first = scope.spawn(move || {
            let lease = pool.acquire();
            first_tx.send("first").unwrap();
            release.recv().unwrap();
            drop(lease);
        });
        wait_for_waiters(pool, 1);
        let second = scope.spawn(move || {
            let lease = pool.acquire();
            served_tx.send("second").unwrap();
            lease.index()
        });
        wait_for_waiters(pool, 2);
        let mut third = pool.acquire_async();
        assert!(Pin::new(&mut third).poll(&mut context).is_pending());
        assert_eq!(pool.stats().waiting, 3);
        let [one, two] = held;
        drop(one);
        assert_eq!(served.recv().unwrap(), "first");
        drop(two);
        assert_eq!(served.recv().unwrap(), "second");
        let second_index = second.join().unwrap();
        // The second waiter's lease came back: the async waiter is granted it.
        let Poll::Ready(lease) = Pin::new(&mut third).poll(&mut context) else {
            panic!("the async waiter was not served");
        };
        assert_eq!(lease.index(), second_index);
        release_tx.send(()).unwrap();
        first.join().unwrap();
        drop(lease);
    });
    let stats = pool.stats();
    assert_eq!((stats.free, stats.waiting), (2, 0));
}

#[test]
fn a_waiter_that_gives_up_in_the_middle_of_the_queue_takes_nothing() {
    let pool = ArenaPool::new(PoolConfig::new(1, 64 << 10)).unwrap();
    let held = pool.try_acquire().unwrap();
    let mut context = Context::from_waker(Waker::noop());
    let mut first = pool.acquire_async();
    assert!(Pin::new(&mut first).poll(&mut context).is_pending());
    // A timed waiter behind it gives up while the arena is still held.
    assert!(pool.acquire_timeout(Duration::from_millis(1)).is_none());
    let mut last = pool.acquire_async();
    assert!(Pin::new(&mut last).poll(&mut context).is_pending());
    assert_eq!(pool.stats().waiting, 2);
    drop(held);
    // Granted to the first waiter, which is dropped before it is polled: the arena goes
    // to the next one, not back to the stack nor lost.
    drop(first);
    assert_eq!(pool.stats().waiting, 1);
    assert!(pool.try_acquire().is_none(), "the last waiter comes first");
    let Poll::Ready(lease) = Pin::new(&mut last).poll(&mut context) else {
        panic!("the arena given up was not passed on");
    };
    drop(lease);
    let stats = pool.stats();
    assert_eq!((stats.free, stats.waiting), (1, 0));
}
