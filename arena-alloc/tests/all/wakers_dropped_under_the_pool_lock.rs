//! A waker is user code, and so is its drop: a waker may hold the last reference to a
//! task that owns a lease of the same pool. The pool must not drop a waiter's waker
//! while it holds its lock, or the lease released by that drop locks the pool again
//! from the same thread. Each scenario runs on a thread of its own, with a hang guard.

use core::pin::Pin;
use core::task::{Context, Waker};
use std::future::Future;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::task::Wake;
use std::time::Duration;

use pagekeep_arena::{AcquireFuture, ArenaPool, PoolConfig, PooledArena};

/// A waker that owns a lease, as a task's waker owns the task and its lease.
struct OwnsALease(Mutex<Option<PooledArena<'static>>>);

impl Wake for OwnsALease {
    /// The woken task runs to its end and gives its lease back.
    fn wake(self: Arc<Self>) {
        drop(self.0.lock().unwrap().take());
    }
}

/// Runs `scenario` on its own thread and reports whether it finished.
fn finishes(scenario: impl FnOnce() + Send + 'static) -> bool {
    let (done_tx, done) = channel();
    std::thread::spawn(move || {
        scenario();
        done_tx.send(()).unwrap();
    });
    // A hang guard, not a measurement.
    done.recv_timeout(Duration::from_secs(20)).is_ok()
}

/// Fails the test if the scenario deadlocked; then `held` is never released, as its
/// release would wait for the lock the stuck thread holds.
fn settle(finished: bool, held: PooledArena<'static>) {
    if !finished {
        std::mem::forget(held);
    }
    assert!(finished, "the thread deadlocked on the pool lock");
}

fn full_pool() -> (
    &'static ArenaPool,
    PooledArena<'static>,
    PooledArena<'static>,
) {
    // Made static through the pool's own registry (a root miri's leak check sees).
    let pool: &'static ArenaPool = ArenaPool::new(PoolConfig::new(2, 64 << 10))
        .unwrap()
        .into_static()
        .unwrap();
    (
        pool,
        pool.try_acquire().unwrap(),
        pool.try_acquire().unwrap(),
    )
}

/// A future waiting for an arena of `pool`, polled once with a waker that owns `owned`;
/// the pool's queue holds the waker's last reference.
fn waiting_with_a_waker_that_owns(
    pool: &'static ArenaPool,
    owned: PooledArena<'static>,
) -> AcquireFuture<'static> {
    let waker = Waker::from(Arc::new(OwnsALease(Mutex::new(Some(owned)))));
    let mut future = pool.acquire_async();
    assert!(
        Pin::new(&mut future)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    future
}

#[test]
fn dropping_a_waiting_future_drops_its_waker_outside_the_lock() {
    let (pool, owned, held) = full_pool();
    let finished = finishes(move || {
        let mut context = Context::from_waker(Waker::noop());
        let mut other = pool.acquire_async();
        assert!(Pin::new(&mut other).poll(&mut context).is_pending());
        let future = waiting_with_a_waker_that_owns(pool, owned);
        drop(future); // drops the waker, which releases the lease to `other`
        assert!(Pin::new(&mut other).poll(&mut context).is_ready());
    });
    settle(finished, held);
}

#[test]
fn polling_with_a_new_waker_drops_the_old_one_outside_the_lock() {
    let (pool, owned, held) = full_pool();
    let finished = finishes(move || {
        let mut future = waiting_with_a_waker_that_owns(pool, owned);
        // A new waker replaces it: the old one is dropped, releasing the lease.
        let mut context = Context::from_waker(Waker::noop());
        let polled = Pin::new(&mut future).poll(&mut context);
        assert!(polled.is_ready() || Pin::new(&mut future).poll(&mut context).is_ready());
    });
    settle(finished, held);
}
