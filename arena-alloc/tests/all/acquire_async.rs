//! `acquire_async`: first come first served, no lost wake-ups, cancellation-safe.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use pagekeep_arena::{ArenaPool, PoolConfig};

struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    (counter.clone(), Waker::from(counter))
}

fn pool(arenas: usize) -> ArenaPool {
    ArenaPool::new(PoolConfig::new(arenas, 64 << 10)).unwrap()
}

#[test]
fn free_arena_is_ready_at_first_poll() {
    let pool = pool(1);
    let (_, waker) = waker();
    let mut future = pin!(pool.acquire_async());
    assert!(matches!(
        future.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Ready(_)
    ));
}

#[test]
fn waiters_are_served_in_arrival_order_and_woken() {
    let pool = pool(1);
    let held = pool.try_acquire().unwrap();
    let (first_count, first_waker) = waker();
    let (second_count, second_waker) = waker();
    let mut first = pin!(pool.acquire_async());
    let mut second = pin!(pool.acquire_async());
    assert!(
        first
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending()
    );
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending()
    );
    assert_eq!(pool.stats().waiting, 2);
    // A newcomer cannot jump the queue.
    drop(held);
    assert!(pool.try_acquire().is_none());
    assert_eq!(first_count.0.load(Ordering::SeqCst), 1);
    assert_eq!(second_count.0.load(Ordering::SeqCst), 0);
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending()
    );
    let Poll::Ready(lease) = first.as_mut().poll(&mut Context::from_waker(&first_waker)) else {
        panic!("the first waiter was granted the arena");
    };
    drop(lease);
    assert_eq!(second_count.0.load(Ordering::SeqCst), 1);
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_ready()
    );
}

#[test]
fn dropping_a_granted_future_passes_the_arena_on() {
    let pool = pool(1);
    let held = pool.try_acquire().unwrap();
    let (_, first_waker) = waker();
    let (second_count, second_waker) = waker();
    let mut first = Box::pin(pool.acquire_async());
    let mut second = pin!(pool.acquire_async());
    assert!(
        first
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending()
    );
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending()
    );
    drop(held); // granted to `first`...
    drop(first); // ...which is cancelled before it polls again.
    assert_eq!(second_count.0.load(Ordering::SeqCst), 1);
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_ready()
    );
}

#[test]
fn dropping_a_waiting_future_leaves_the_queue() {
    let pool = pool(1);
    let held = pool.try_acquire().unwrap();
    let (_, waker) = waker();
    let mut future = Box::pin(pool.acquire_async());
    assert!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    drop(future);
    assert_eq!(pool.stats().waiting, 0);
    drop(held);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn releases_from_other_threads_are_never_lost() {
    let pool = pool(2);
    let rounds = if cfg!(miri) { 3 } else { 300 };
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                for _ in 0..rounds {
                    let (count, waker) = waker();
                    let mut future = pin!(pool.acquire_async());
                    let lease = loop {
                        let seen = count.0.load(Ordering::SeqCst);
                        if let Poll::Ready(lease) =
                            future.as_mut().poll(&mut Context::from_waker(&waker))
                        {
                            break lease;
                        }
                        // Park until woken: a lost wake-up would hang here.
                        while count.0.load(Ordering::SeqCst) == seen {
                            std::thread::yield_now();
                        }
                    };
                    lease.alloc(1u8);
                }
            });
        }
    });
    assert_eq!(pool.stats().free, 2);
}
