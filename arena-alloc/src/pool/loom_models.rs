//! Loom models of the pool's state machine: acquiring (try, blocking, async with
//! cancellation), releasing, quarantine, the last remote free that recycles an arena,
//! and the hand-off to waiters, over two or three threads. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p pagekeep-arena --release --lib loom_models`.
//!
//! The models drive the pool's own code (the primitives are loom's through
//! `crate::sync`); a lost wake-up shows up as a deadlock, which loom reports.
//!
//! The two models of a waiter against the free that recycles the arena reported a
//! deadlock against the earlier hand-off (a flag written with a plain `store`, cleared
//! with `swap`, and a `try_lock` whose failure was argued through `SeqCst` fences). Its
//! trace was an artefact of loom's model, not a lost wake-up: the waiter's `swap(false)`
//! read the flag's initial value, yet the freeing thread's later `store(true)` was placed
//! before that swap in modification order, so the freeing thread read `false` back after
//! its own store, which C++ forbids (a read-modify-write reads the last value before it).
//! The hand-off now changes its word only by read-modify-writes, and never reasons about
//! a failed `try_lock` (see `handoff.rs`), so it is correct in loom's model as well.

use core::pin::pin;
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::task::Wake;

use loom::sync::atomic::{AtomicBool, Ordering as LoomOrdering};
use pagekeep_mmap::HeapPages;

use super::{ArenaPool, PoolConfig};

fn one_arena_pool() -> Arc<ArenaPool<HeapPages>> {
    Arc::new(ArenaPool::with_source(HeapPages, PoolConfig::new(1, 64 << 10).warm_bytes(0)).unwrap())
}

/// Leases the only arena and releases it with one routed allocation outstanding (as if
/// entered and escaped): the arena is quarantined until one remote free.
fn quarantine(pool: &ArenaPool<HeapPages>) {
    let index = pool.core.try_acquire().expect("the arena is free");
    let slot = pool.core.lease(index);
    slot.local_live.set(1);
    pool.core.release(index);
    assert_eq!(pool.stats().quarantined, 1);
}

/// The last remote free of the quarantined arena, as the router's `dealloc` does it.
fn last_remote_free(pool: &ArenaPool<HeapPages>) {
    pool.core.slots[0].remote_free(&pool.core);
}

/// Item 3 of the soundness issue: a blocking waiter and the routed free that recycles the
/// arena. The waiter must get it (a lost wake-up is a deadlock).
#[test]
fn blocking_acquire_against_the_recycling_free() {
    loom::model(|| {
        let pool = one_arena_pool();
        quarantine(&pool);
        let freer = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || last_remote_free(&pool))
        };
        let index = pool.core.acquire_until(None).expect("no deadline");
        freer.join().unwrap();
        pool.core.release(index);
        assert_eq!(pool.stats().free, 1);
    });
}

/// Records whether it was woken inside the free (on the freeing thread, while it runs),
/// and unparks the waiting thread.
struct Recorder {
    waiter: loom::thread::Thread,
    freeing: Arc<AtomicBool>,
    freer: std::sync::OnceLock<loom::thread::ThreadId>,
    woken_inside: AtomicBool,
}

impl Wake for Recorder {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.freeing.load(LoomOrdering::SeqCst)
            && self.freer.get() == Some(&loom::thread::current().id())
        {
            self.woken_inside.store(true, LoomOrdering::SeqCst);
        }
        self.waiter.unpark();
    }
}

/// Item 4: an async waiter and the routed free that recycles the arena, in a registered
/// pool (so with the servant thread). The waiter is woken, and never from inside the
/// free.
#[test]
fn async_acquire_against_the_recycling_free_wakes_outside_it() {
    loom::model(|| {
        let pool = one_arena_pool();
        pool.core
            .registered
            .store(true, core::sync::atomic::Ordering::Release);
        quarantine(&pool);
        let freeing = Arc::new(AtomicBool::new(false));
        let recorder = Arc::new(Recorder {
            waiter: loom::thread::current(),
            freeing: Arc::clone(&freeing),
            freer: std::sync::OnceLock::new(),
            woken_inside: AtomicBool::new(false),
        });
        let freer = {
            let pool = Arc::clone(&pool);
            let recorder = Arc::clone(&recorder);
            loom::thread::spawn(move || {
                let _ = recorder.freer.set(loom::thread::current().id());
                recorder.freeing.store(true, LoomOrdering::SeqCst);
                last_remote_free(&pool);
                recorder.freeing.store(false, LoomOrdering::SeqCst);
            })
        };
        let waker = Waker::from(Arc::clone(&recorder));
        let mut cx = Context::from_waker(&waker);
        let mut acquire = pin!(pool.acquire_async());
        let lease = loop {
            match acquire.as_mut().poll(&mut cx) {
                Poll::Ready(lease) => break lease,
                Poll::Pending => loom::thread::park(),
            }
        };
        freer.join().unwrap();
        assert!(!recorder.woken_inside.load(LoomOrdering::SeqCst));
        drop(lease);
        assert_eq!(pool.stats().free, 1);
        // The servant borrows the pool as if it were registered (`'static`): wait for it
        // to stop before the pool goes.
        while pool.core.queue.lock().unwrap().has_servant() {
            loom::thread::yield_now();
        }
    });
}

/// Cancellation: an async waiter that gives up while a release grants it the arena
/// passes the arena on: it ends up free, not lost.
#[test]
fn cancelled_async_acquire_against_a_release_loses_nothing() {
    loom::model(|| {
        let pool = one_arena_pool();
        let index = pool.core.try_acquire().expect("the arena is free");
        let _ = pool.core.lease(index);
        let releaser = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || pool.core.release(index))
        };
        {
            let mut acquire = pin!(pool.acquire_async());
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(lease) = acquire.as_mut().poll(&mut cx) {
                drop(lease);
            }
            // Dropped here: gives up its place, passing on a grant.
        }
        releaser.join().unwrap();
        assert_eq!(pool.stats().free, 1);
        assert!(pool.try_acquire().is_some());
    });
}

/// Two blocking waiters for one arena released by a third thread: both are served, in
/// turn, and the arena ends up free.
#[test]
fn two_blocking_waiters_and_a_release() {
    loom::model(|| {
        let pool = one_arena_pool();
        let index = pool.core.try_acquire().expect("the arena is free");
        let _ = pool.core.lease(index);
        let waiter = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || {
                let index = pool.core.acquire_until(None).expect("no deadline");
                pool.core.release(index);
            })
        };
        let releaser = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || pool.core.release(index))
        };
        let mine = pool.core.acquire_until(None).expect("no deadline");
        pool.core.release(mine);
        waiter.join().unwrap();
        releaser.join().unwrap();
        assert_eq!(pool.stats().free, 1);
    });
}

/// The hand-off word with a holder that is not a waiter: a blocking waiter wants both
/// arenas of a pool, one coming back from a release (which takes the lock, counted) and
/// the other from the recycling free (which finds that holder counted, or nobody). The
/// waiter gets both, and both end up free.
#[test]
fn blocking_waiter_against_a_release_and_the_recycling_free() {
    loom::model(|| {
        let pool = Arc::new(
            ArenaPool::with_source(HeapPages, PoolConfig::new(2, 64 << 10).warm_bytes(0)).unwrap(),
        );
        // Arena 0 quarantined (one routed allocation out), arena 1 leased.
        let quarantined = pool.core.try_acquire().expect("two arenas are free");
        pool.core.lease(quarantined).local_live.set(1);
        let leased = pool.core.try_acquire().expect("one arena is free");
        let _ = pool.core.lease(leased);
        pool.core.release(quarantined);
        let releaser = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || pool.core.release(leased))
        };
        let freer = {
            let pool = Arc::clone(&pool);
            loom::thread::spawn(move || {
                pool.core.slots[quarantined as usize].remote_free(&pool.core);
            })
        };
        let first = pool.core.acquire_until(None).expect("no deadline");
        let second = pool.core.acquire_until(None).expect("no deadline");
        assert_ne!(first, second);
        releaser.join().unwrap();
        freer.join().unwrap();
        pool.core.release(first);
        pool.core.release(second);
        assert_eq!(pool.stats().free, 2);
    });
}
