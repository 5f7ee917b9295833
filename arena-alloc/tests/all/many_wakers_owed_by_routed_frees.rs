//! More async waiters granted an arena inside the allocator than the pool's servant
//! collects in one round (it keeps four wakers at a time): every one of them must still
//! be woken outside the pool's lock, with a panicking waker contained, as the servant
//! promises for one waiter (`waiters_and_routed_frees`).

use core::alloc::{GlobalAlloc, Layout};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::alloc::System;
use std::future::Future;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Wake;
use std::time::Duration;

use pagekeep_arena::{AcquireFuture, ArenaPool, ArenaRouter, PoolConfig};

static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

const BLOCK: Layout = Layout::new::<[u64; 4]>();

/// A block allocated through the router, owned by the test.
struct Escaped(*mut u8);

/// Wakes the test when called, then waits until the test lets it return: holds the
/// servant thread while the test makes more grants.
struct Holding {
    entered: Mutex<Sender<()>>,
    leave: Mutex<Receiver<()>>,
}

impl Wake for Holding {
    fn wake(self: Arc<Self>) {
        self.entered.lock().unwrap().send(()).unwrap();
        self.leave.lock().unwrap().recv().unwrap();
    }
}

/// Records that it was woken.
#[derive(Default)]
struct Recorder {
    woken: Mutex<bool>,
    changed: Condvar,
}

impl Wake for Recorder {
    fn wake(self: Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

impl Recorder {
    fn was_woken(&self) -> bool {
        // A hang guard, not a measurement: the wake-up comes from the servant thread.
        let woken = self.woken.lock().unwrap();
        let (woken, _) = self
            .changed
            .wait_timeout_while(woken, Duration::from_secs(20), |woken| !*woken)
            .unwrap();
        *woken
    }
}

/// A waker that records that it was called, then panics.
#[derive(Default)]
struct Panicking {
    called: Recorder,
}

impl Wake for Panicking {
    fn wake(self: Arc<Self>) {
        *self.called.woken.lock().unwrap() = true;
        self.called.changed.notify_all();
        panic!("a waker that panics");
    }
}

fn pending(future: &mut AcquireFuture<'static>, waker: &Waker) {
    let polled = Pin::new(future).poll(&mut Context::from_waker(waker));
    assert!(polled.is_pending(), "every arena is quarantined");
}

#[test]
fn five_async_waiters_granted_inside_the_allocator_are_all_woken() {
    const ARENAS: usize = 6;
    let pool: &'static ArenaPool = ArenaPool::new(PoolConfig::new(ARENAS, 64 << 10))
        .unwrap()
        .into_static()
        .unwrap();
    // Every arena quarantined by one escaped block.
    let escaped: Vec<Escaped> = (0..ARENAS)
        .map(|_| {
            let lease = pool.try_acquire().expect("a free arena");
            // SAFETY: a non-zero layout; the block is freed below.
            let block = lease.run(|| unsafe { ROUTER.alloc(BLOCK) });
            assert!(!block.is_null());
            Escaped(block)
        })
        .collect();
    assert_eq!(pool.stats().quarantined, ARENAS);

    let (entered_tx, entered_rx) = channel();
    let (leave_tx, leave_rx) = channel();
    let holding = Waker::from(Arc::new(Holding {
        entered: Mutex::new(entered_tx),
        leave: Mutex::new(leave_rx),
    }));
    let recorders: Vec<Arc<Recorder>> = (0..4).map(|_| Arc::default()).collect();
    let mut first = pool.acquire_async();
    pending(&mut first, &holding);
    let mut others: Vec<AcquireFuture<'static>> = (0..5).map(|_| pool.acquire_async()).collect();
    for (future, recorder) in others.iter_mut().zip(&recorders) {
        pending(future, &Waker::from(Arc::clone(recorder)));
    }
    let panicking = Arc::new(Panicking::default());
    pending(&mut others[4], &Waker::from(Arc::clone(&panicking)));

    let mut escaped = escaped.into_iter();
    let free = |block: Escaped| {
        // SAFETY: allocated through the router with `BLOCK`, freed once.
        unsafe { ROUTER.dealloc(block.0, BLOCK) };
    };
    // The first grant: the servant calls the holding waker and waits in it.
    free(escaped.next().unwrap());
    entered_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the servant woke the first waiter");
    // Five more grants inside the allocator while the servant is busy: five owed wakers.
    for block in escaped.by_ref().take(5) {
        free(block);
    }
    leave_tx.send(()).unwrap();

    for (number, recorder) in recorders.iter().enumerate() {
        assert!(
            recorder.was_woken(),
            "waiter {} was never woken",
            number + 1
        );
    }
    // The fifth, panicking, waker is the servant's too (its panic contained there); once
    // it has been called, polling the futures below calls no waker.
    assert!(panicking.called.was_woken(), "waiter 5 was never woken");
    for future in others.iter_mut().chain([&mut first]) {
        let noop = Waker::noop();
        let Poll::Ready(lease) = Pin::new(future).poll(&mut Context::from_waker(noop)) else {
            panic!("a waiter was not granted an arena");
        };
        drop(lease);
    }
    drop(others);
    assert_eq!(pool.stats().free, ARENAS);
}
