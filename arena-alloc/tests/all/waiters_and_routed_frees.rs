//! A free on the routing path that settles a quarantined arena hands it to the waiters
//! without losing a wake-up, and without calling a waker inside the allocator: blocking
//! waiters are unparked, async waiters are woken by the pool's servant thread.

use core::alloc::{GlobalAlloc, Layout};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::alloc::System;
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::task::Wake;
use std::time::Duration;

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};

static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

thread_local! {
    /// Set by the test around its call of the allocator.
    static IN_ALLOCATOR: Cell<bool> = const { Cell::new(false) };
}

fn static_pool() -> &'static ArenaPool {
    ArenaPool::new(PoolConfig::new(1, 64 << 10).warm_bytes(4096))
        .unwrap()
        .into_static()
        .unwrap()
}

/// A block allocated through the router, owned by the test.
struct Escaped(*mut u8);
// SAFETY: the block is plain bytes handed over whole to the other thread.
unsafe impl Send for Escaped {}

const BLOCK: Layout = Layout::new::<[u64; 4]>();

/// Leases the only arena, lets one block escape it and releases it: quarantined.
fn quarantine(pool: &'static ArenaPool) -> Escaped {
    let lease = pool.try_acquire().expect("the arena is free");
    // SAFETY: a non-zero layout; the caller frees the block.
    let escaped = lease.run(|| unsafe { ROUTER.alloc(BLOCK) });
    assert!(!escaped.is_null());
    drop(lease);
    assert_eq!(pool.stats().quarantined, 1);
    Escaped(escaped)
}

/// Records a wake-up, and whether it came from inside the allocator.
#[derive(Default)]
struct Recorder {
    woken: Mutex<bool>,
    changed: Condvar,
    inside_allocator: AtomicBool,
}

impl Wake for Recorder {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if IN_ALLOCATOR.get() {
            self.inside_allocator.store(true, Ordering::SeqCst);
        }
        *self.woken.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

#[test]
fn an_async_waiter_is_woken_outside_the_allocator() {
    let pool = static_pool();
    let escaped = quarantine(pool);
    let recorder = Arc::new(Recorder::default());
    let waker = Waker::from(Arc::clone(&recorder));
    let mut cx = Context::from_waker(&waker);
    let mut acquire = pool.acquire_async();
    assert!(Pin::new(&mut acquire).poll(&mut cx).is_pending());
    IN_ALLOCATOR.set(true);
    // SAFETY: the block was allocated through the router with `BLOCK` and is freed once.
    unsafe { ROUTER.dealloc(escaped.0, BLOCK) };
    IN_ALLOCATOR.set(false);
    // A hang guard, not a measurement: the wake-up comes from the servant thread.
    let woken = recorder.woken.lock().unwrap();
    let (woken, _) = recorder
        .changed
        .wait_timeout_while(woken, Duration::from_secs(60), |woken| !*woken)
        .unwrap();
    assert!(*woken, "the async waiter was never woken");
    drop(woken);
    assert!(
        !recorder.inside_allocator.load(Ordering::SeqCst),
        "a waker ran inside GlobalAlloc::dealloc"
    );
    let Poll::Ready(lease) = Pin::new(&mut acquire).poll(&mut cx) else {
        panic!("woken without an arena");
    };
    assert_eq!(lease.index(), 0);
}

/// A waker that panics: called inside the allocator it would unwind out of `dealloc`.
struct Panicking;

impl Wake for Panicking {
    fn wake(self: Arc<Self>) {
        panic!("a waker that panics");
    }
}

#[test]
fn a_panicking_waker_does_not_unwind_out_of_the_allocator() {
    let pool = static_pool();
    let escaped = quarantine(pool);
    let waker = Waker::from(Arc::new(Panicking));
    let mut cx = Context::from_waker(&waker);
    let mut acquire = pool.acquire_async();
    assert!(Pin::new(&mut acquire).poll(&mut cx).is_pending());
    // SAFETY: as above.
    unsafe { ROUTER.dealloc(escaped.0, BLOCK) };
    // The arena is granted to the future whatever its waker did.
    let recorder = Arc::new(Recorder::default());
    let waker = Waker::from(recorder);
    let Poll::Ready(lease) = Pin::new(&mut acquire).poll(&mut Context::from_waker(&waker)) else {
        panic!("the arena was not granted");
    };
    drop(lease);
    assert_eq!(pool.stats().free, 1);
}

const ROUNDS: usize = if cfg!(miri) { 8 } else { 20_000 };

#[test]
fn a_blocking_waiter_never_sleeps_while_a_routed_free_returns_the_arena() {
    let pool = static_pool();
    let start = Barrier::new(2);
    let (handing, taking) = std::sync::mpsc::channel::<Escaped>();
    std::thread::scope(|scope| {
        let start = &start;
        scope.spawn(move || {
            for _ in 0..ROUNDS {
                let escaped = taking.recv().unwrap();
                start.wait();
                // SAFETY: as above; freed on a thread outside the arena: the routing
                // path settles the quarantine and recycles the arena.
                unsafe { ROUTER.dealloc(escaped.0, BLOCK) };
            }
        });
        for round in 0..ROUNDS {
            handing.send(quarantine(pool)).unwrap();
            start.wait();
            // A hang guard, not a measurement: a lost wake-up would sleep for ever.
            let lease = pool.acquire_timeout(Duration::from_secs(60));
            assert!(
                lease.is_some(),
                "round {round}: asleep with {:?}",
                pool.stats()
            );
        }
    });
}
