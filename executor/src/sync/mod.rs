//! Synchronization between tasks: [`mpsc`] channels (bounded and unbounded),
//! [`oneshot`] channels and [`Notify`].
//!
//! Each primitive keeps its state behind one `std::sync::Mutex` and its waiting futures
//! in a list where each future has one entry, found again by an id when the future is
//! polled again and removed when it is dropped. No waker is cloned, woken or dropped
//! and no value of the user's type is dropped while a lock is held, as each may run the
//! executor's or the user's code, which may panic or take the same lock: a future clones
//! its waker before it locks (one clone per poll, a copy of two words for this runtime's
//! own wakers), and what is needed is taken out, the guard dropped, then the wakers are
//! woken and the values dropped. Every future is `Unpin`
//! and may be used in a `select!`; its docs say whether dropping it before it completes
//! loses anything (whether it is cancel safe).
//!
//! The futures may be polled from any task on any worker, or from outside the runtime:
//! the primitives need no timer or reactor.
//!
//! A waiter list is a `Vec` searched by id, so waiting costs time linear in the number
//! of futures waiting on the same primitive: these are built for a handful of waiters
//! each, as channels between tasks and shutdown signals have. A waiting future leaked
//! with `mem::forget` (safe code, the futures being `Unpin`) keeps its entry until the
//! primitive is dropped, and a "wake one" (`notify_one`, a freed slot) that chooses it
//! is lost with it: drop futures, do not forget them.
//!
//! Crate-private: `lock`, the one way the runtime takes its mutexes, `discard_panic`
//! and `drop_contained`.

pub mod mpsc;
mod notify;
pub mod oneshot;
pub(crate) mod shim;
#[cfg(test)]
pub(crate) mod test_support;
mod wait_list;

pub use notify::{Notified, Notify};
pub(crate) use wait_list::{Unwinds, replace_waker};

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it as it is if a panic poisoned it.
///
/// Every mutex of the runtime guards short updates (a push, a pop, a swap of an
/// `Option`) that a panic cannot leave half done, and a handler's panic is contained per
/// request: refusing a poisoned lock would turn one panic into a stuck server.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops a caught panic's payload, containing a panic of its own destructor (user code,
/// in principle), and the payload of that panic in turn, and so on; only a payload nested
/// [`PAYLOAD_DEPTH`] deep is leaked instead, as nothing sensible is left to do with it.
///
/// A payload is usually a string allocated where the panic happened, in a request's
/// arena for a handler: it must be freed, or it would keep that arena quarantined. The
/// payload of a destructor's panic is usually such a string too, allocated in the same
/// arena, so it is freed as well rather than leaked.
pub(crate) fn discard_panic(payload: Box<dyn std::any::Any + Send>) {
    let mut payload = payload;
    for _ in 0..PAYLOAD_DEPTH {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

/// Drops `value`, a user type whose destructor may panic, containing that panic (its
/// payload dropped with [`discard_panic`]). For values nobody will take any more: a
/// finished task's output when its handle is gone.
pub(crate) fn drop_contained<T>(value: T) {
    if let Err(payload) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)))
    {
        discard_panic(payload);
    }
}

/// How many payloads, each thrown by the destructor of the one before, [`discard_panic`]
/// drops before it leaks the next one.
const PAYLOAD_DEPTH: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    /// A panic payload whose destructor panics with a payload like itself, `depth`
    /// times, the last one with a plain string.
    struct Nested(usize);

    impl Drop for Nested {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            if self.0 > 0 {
                std::panic::panic_any(Nested(self.0 - 1));
            }
            panic!("the innermost destructor panics");
        }
    }

    fn unpin_and_send<F: Unpin + Send>() {}

    /// Every future can go in a `select!` without pinning, and across threads, whatever
    /// the value type (`PhantomPinned` is `!Unpin`).
    #[test]
    fn futures_are_unpin_and_send() {
        use std::marker::PhantomPinned;
        unpin_and_send::<mpsc::SendFuture<'static, PhantomPinned>>();
        unpin_and_send::<mpsc::RecvFuture<'static, PhantomPinned>>();
        unpin_and_send::<mpsc::ClosedFuture<'static, PhantomPinned>>();
        unpin_and_send::<oneshot::Receiver<PhantomPinned>>();
        unpin_and_send::<oneshot::Closed<'static, PhantomPinned>>();
        unpin_and_send::<Notified<'static>>();
        unpin_and_send::<crate::Tick<'static>>();
    }

    /// Every nested payload is dropped, none leaked (miri's leak check sees to the
    /// allocations), up to the depth where one is leaked on purpose.
    #[test]
    fn discard_panic_drops_payloads_thrown_by_payloads() {
        DROPPED.store(0, Ordering::Relaxed);
        discard_panic(Box::new(Nested(3)));
        assert_eq!(DROPPED.load(Ordering::Relaxed), 4);
    }
}
