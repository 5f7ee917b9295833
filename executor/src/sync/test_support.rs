//! A waker that counts its wake-ups, and a one-poll helper: enough to drive the
//! primitives by hand in tests (under miri too), with no runtime or threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};

/// Counts the wake-ups of the wakers made from it.
#[derive(Debug, Default)]
pub(crate) struct CountingWaker {
    wakes: AtomicUsize,
}

impl CountingWaker {
    /// A waker and the counter of its wake-ups.
    pub(crate) fn new() -> (Waker, Arc<CountingWaker>) {
        let counter = Arc::new(CountingWaker::default());
        (Waker::from(Arc::clone(&counter)), counter)
    }

    /// Wake-ups so far.
    pub(crate) fn get(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `future` once with `waker`.
pub(crate) fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// Counts the drops of values of one test (each test its own counter: tests run in
/// parallel).
#[derive(Debug)]
pub(crate) struct DropCounter(pub(crate) Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `body` with a waker whose clone first runs `hook` (a call that takes the lock of
/// the primitive under test, say: it deadlocks if the clone is made with that lock held)
/// and then panics, as a foreign executor's waker may. Waking or dropping it does
/// nothing. The waker is only lent to `body`, and its clone never returns, so no copy
/// outlives `hook`.
pub(crate) fn with_clone_hook(hook: &(dyn Fn() + Sync), body: impl FnOnce(&Waker)) {
    fn clone(data: *const ()) -> RawWaker {
        // SAFETY: `data` is the `&&(dyn Fn() + Sync)` made below, alive for as long as
        // the waker is (the waker is dropped before `with_clone_hook` returns, and this
        // function never makes a copy of it).
        let hook = unsafe { &*data.cast::<&(dyn Fn() + Sync)>() };
        hook();
        panic!("a waker's clone panics on purpose");
    }
    fn ignore(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, ignore, ignore, ignore);
    let hook_ref: &(dyn Fn() + Sync) = hook;
    let data = std::ptr::from_ref(&hook_ref).cast::<()>();
    // SAFETY: `clone` reads `data` as the `&(dyn Fn() + Sync)` it points to, which
    // outlives the waker (dropped at the end of this function, `body` only borrowing
    // it); the other functions ignore it. The functions are thread-safe (`Sync` hook).
    let waker = unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) };
    body(&waker);
}

/// Panics when woken.
#[derive(Debug)]
pub(crate) struct PanicsOnWake;

impl PanicsOnWake {
    pub(crate) fn waker() -> Waker {
        Waker::from(Arc::new(PanicsOnWake))
    }
}

impl Wake for PanicsOnWake {
    fn wake(self: Arc<Self>) {
        panic!("a waker panics on purpose when woken");
    }
}

/// Runs `body`, expecting it to panic; returns the panic's message.
pub(crate) fn expect_panic(body: impl FnOnce()) -> String {
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).expect_err("expected a panic");
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
