//! [`Notify`]: wake one task or every waiting task, with no data, as tokio's `Notify`.
//!
//! # Design
//!
//! One mutex guards the permit and the [`WaitList`] of registered [`Notified`] futures.
//! `notify_one` marks the first waiting future `NotifiedOne` (or stores the permit when
//! nobody waits); the mark stays in the list until that future sees it, so a chosen
//! future dropped before it was polled again hands the notification on to the next
//! waiter, or back to the permit. `notify_waiters` bumps a generation counter and marks
//! every waiting future `NotifiedAll`; a future compares the generation it read when it
//! was created with the current one at its first poll, so it sees a `notify_waiters`
//! made after its creation even if it was not polled (registered) yet.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use super::lock;
use super::wait_list::{Unwinds, WaitList, WaiterState, WakeBatch};

/// Notifies tasks of an event, carrying no data: a task awaits
/// [`notified()`](Self::notified), another calls [`notify_one`](Self::notify_one) or
/// [`notify_waiters`](Self::notify_waiters).
///
/// `notify_one` with nobody waiting stores one permit (at most one), which the next
/// `notified().await` consumes at once; `notify_waiters` wakes the futures that exist
/// when it is called and stores nothing. Waiters are notified first come, first served.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use pagekeep_executor::sync::Notify;
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let notify = Arc::new(Notify::new());
///     let waiter = {
///         let notify = Arc::clone(&notify);
///         pagekeep_executor::spawn(async move {
///             notify.notified().await;
///             "notified"
///         })
///     };
///     // Whether or not the waiter is already waiting, it gets this notification
///     // (as a stored permit if not).
///     notify.notify_one();
///     assert_eq!(waiter.await.unwrap(), "notified");
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Notify {
    state: Mutex<State>,
    /// Bumped by every `notify_waiters` (under the lock).
    generation: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// A `notify_one` found nobody waiting.
    permit: bool,
    waiters: WaitList,
}

impl Notify {
    /// A `Notify` with no permit and no waiter.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                permit: false,
                waiters: WaitList::new(),
            }),
            generation: AtomicU64::new(0),
        }
    }

    /// A future that completes when this `Notify` is notified: by a `notify_one` that
    /// chose it (or a permit stored before), or by a `notify_waiters` made after the
    /// future was created, polled or not.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a `Notified` dropped after a `notify_one` chose it, but before it
    /// returned `Ready`, passes the notification on to the next waiter, or stores it as
    /// the permit if nobody waits. A `notify_waiters` is not passed on (it was meant
    /// for everyone waiting at the time).
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.load(Ordering::SeqCst),
            waiter: None,
            done: false,
        }
    }

    /// Notifies the first waiting task; with none waiting, stores a permit that the
    /// next [`notified()`](Self::notified) future consumes at its first poll. Permits
    /// do not add up: many calls with nobody waiting store one.
    pub fn notify_one(&self) {
        let waker = {
            let mut state = lock(&self.state);
            let waker = state.waiters.notify_one();
            if waker.is_none() {
                state.permit = true;
            }
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Notifies every task waiting now: each [`Notified`] future created before this
    /// call completes. Stores no permit; futures created later are not notified.
    ///
    /// # Panics
    ///
    /// If a waiting task's waker panics when woken: the first such panic is resumed
    /// after every other waiter has been woken.
    pub fn notify_waiters(&self) {
        let mut batch = WakeBatch::new();
        let mut unwinds = Unwinds::new();
        let mut state = lock(&self.state);
        self.generation.fetch_add(1, Ordering::SeqCst);
        state.waiters.notify_all();
        loop {
            let more = state.waiters.take_notified_all(&mut batch);
            drop(state);
            batch.wake_all(&mut unwinds);
            if !more {
                break;
            }
            state = lock(&self.state);
        }
        unwinds.finish();
    }
}

impl Default for Notify {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Notify")
            .field("permit", &state.permit)
            .finish_non_exhaustive()
    }
}

/// The future of [`Notify::notified`]; see there for its cancel safety.
#[must_use = "futures do nothing unless polled"]
pub struct Notified<'a> {
    notify: &'a Notify,
    /// `notify.generation` when this future was created.
    generation: u64,
    /// Its entry in the wait list, once registered.
    waiter: Option<u64>,
    done: bool,
}

impl fmt::Debug for Notified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notified")
            .field("waiting", &self.waiter.is_some())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        // With the task's budget spent, a notification (the permit, the choice of
        // `notify_one`, a newer generation) stays where it is for the next poll, or is
        // passed on if this future is dropped first.
        let coop = std::task::ready!(crate::coop::poll_proceed(cx));
        // Cloned before the lock: a clone may panic, and must not with the lock held.
        let waker = cx.waker().clone();
        let mut state = lock(&this.notify.state);
        let notified = match this.waiter {
            Some(id) => match state.waiters.state(id) {
                Some(WaiterState::Waiting) => false,
                Some(WaiterState::NotifiedOne | WaiterState::NotifiedAll) => true,
                None => unreachable!("a Notified's entry is removed only by itself"),
            },
            None => {
                if this.notify.generation.load(Ordering::SeqCst) != this.generation {
                    true
                } else {
                    std::mem::take(&mut state.permit)
                }
            }
        };
        if notified {
            let stale = this.waiter.take().and_then(|id| state.waiters.remove(id));
            drop(state);
            this.done = true;
            drop(waker);
            drop(stale);
            coop.made_progress();
            return Poll::Ready(());
        }
        let unused = state.waiters.wait(&mut this.waiter, waker);
        drop(state);
        drop(unused);
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        let Some(id) = self.waiter.take() else {
            return;
        };
        let (removed, next) = {
            let mut state = lock(&self.notify.state);
            let removed = state.waiters.remove(id);
            let mut next = None;
            if let Some((WaiterState::NotifiedOne, _)) = removed {
                // Chosen, but never consumed: hand it on.
                next = state.waiters.notify_one();
                if next.is_none() {
                    state.permit = true;
                }
            }
            (removed, next)
        };
        // The next waiter is woken even if the stale waker's drop panics.
        let mut unwinds = Unwinds::new();
        unwinds.wake(next);
        unwinds.run(|| drop(removed));
        unwinds.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::{
        CountingWaker, PanicsOnWake, expect_panic, poll_once, with_clone_hook,
    };

    #[test]
    fn notify_one_before_any_waiter_stores_one_permit() {
        let notify = Notify::new();
        let (waker, _) = CountingWaker::new();
        notify.notify_one();
        notify.notify_one();
        let mut first = notify.notified();
        assert!(poll_once(&mut first, &waker).is_ready());
        // Permits do not add up.
        let mut second = notify.notified();
        assert!(poll_once(&mut second, &waker).is_pending());
        drop(second);
        assert_eq!(lock(&notify.state).waiters.len(), 0);
    }

    #[test]
    fn two_waiters_are_notified_in_turn_by_notify_one() {
        let notify = Notify::new();
        let (waker_a, count_a) = CountingWaker::new();
        let (waker_b, count_b) = CountingWaker::new();
        let mut a = notify.notified();
        let mut b = notify.notified();
        assert!(poll_once(&mut a, &waker_a).is_pending());
        assert!(poll_once(&mut b, &waker_b).is_pending());
        notify.notify_one();
        assert_eq!((count_a.get(), count_b.get()), (1, 0));
        // B was not chosen: polling it again does not complete it.
        assert!(poll_once(&mut b, &waker_b).is_pending());
        assert!(poll_once(&mut a, &waker_a).is_ready());
        // A polled again after completing stays complete.
        assert!(poll_once(&mut a, &waker_a).is_ready());
        notify.notify_one();
        assert_eq!(count_b.get(), 1);
        assert!(poll_once(&mut b, &waker_b).is_ready());
        assert!(!lock(&notify.state).permit);
    }

    #[test]
    fn a_dropped_chosen_waiter_passes_the_notification_on() {
        let notify = Notify::new();
        let (waker_a, _) = CountingWaker::new();
        let (waker_b, count_b) = CountingWaker::new();
        let mut a = notify.notified();
        let mut b = notify.notified();
        assert!(poll_once(&mut a, &waker_a).is_pending());
        assert!(poll_once(&mut b, &waker_b).is_pending());
        notify.notify_one();
        drop(a);
        assert_eq!(count_b.get(), 1, "the notification went on to B");
        assert!(poll_once(&mut b, &waker_b).is_ready());
        assert!(!lock(&notify.state).permit);
    }

    #[test]
    fn a_dropped_chosen_waiter_alone_leaves_the_permit() {
        let notify = Notify::new();
        let (waker, _) = CountingWaker::new();
        let mut a = notify.notified();
        assert!(poll_once(&mut a, &waker).is_pending());
        notify.notify_one();
        drop(a);
        let mut b = notify.notified();
        assert!(poll_once(&mut b, &waker).is_ready());
    }

    #[test]
    fn a_dropped_unchosen_waiter_takes_nothing_with_it() {
        let notify = Notify::new();
        let (waker_a, _) = CountingWaker::new();
        let (waker_b, count_b) = CountingWaker::new();
        let mut a = notify.notified();
        let mut b = notify.notified();
        assert!(poll_once(&mut a, &waker_a).is_pending());
        assert!(poll_once(&mut b, &waker_b).is_pending());
        // Dropped in the opposite order of registration, before any notification.
        drop(a);
        notify.notify_one();
        assert_eq!(count_b.get(), 1);
        assert!(poll_once(&mut b, &waker_b).is_ready());
        assert_eq!(lock(&notify.state).waiters.len(), 0);
    }

    #[test]
    fn dropping_both_waiters_in_either_order_keeps_the_one_notification() {
        for chosen_first in [true, false] {
            let notify = Notify::new();
            let (waker, _) = CountingWaker::new();
            let mut a = notify.notified();
            let mut b = notify.notified();
            assert!(poll_once(&mut a, &waker).is_pending());
            assert!(poll_once(&mut b, &waker).is_pending());
            notify.notify_one(); // chooses A
            if chosen_first {
                drop(a); // passes it to B
                drop(b); // passes it to the permit
            } else {
                drop(b);
                drop(a);
            }
            assert_eq!(lock(&notify.state).waiters.len(), 0);
            let mut c = notify.notified();
            assert!(poll_once(&mut c, &waker).is_ready(), "kept as the permit");
            let mut d = notify.notified();
            assert!(poll_once(&mut d, &waker).is_pending(), "and only once");
        }
    }

    #[test]
    fn a_forgotten_waiter_swallows_only_the_notify_one_that_chooses_it() {
        let notify = Notify::new();
        let (waker, count) = CountingWaker::new();
        let mut forgotten = notify.notified();
        assert!(poll_once(&mut forgotten, &waker).is_pending());
        std::mem::forget(forgotten);
        let mut other = notify.notified();
        assert!(poll_once(&mut other, &waker).is_pending());
        // notify_waiters still reaches the live waiter.
        notify.notify_waiters();
        assert!(poll_once(&mut other, &waker).is_ready());
        // The forgotten entry was marked by that broadcast, so the next notify_one
        // finds nobody waiting and stores the permit.
        notify.notify_one();
        let mut last = notify.notified();
        assert!(poll_once(&mut last, &waker).is_ready());
        assert_eq!(count.get(), 2);
    }

    #[test]
    fn a_repoll_with_another_waker_is_woken_through_the_new_one() {
        let notify = Notify::new();
        let (old, old_count) = CountingWaker::new();
        let (new, new_count) = CountingWaker::new();
        let mut a = notify.notified();
        assert!(poll_once(&mut a, &old).is_pending());
        assert!(poll_once(&mut a, &new).is_pending());
        assert_eq!(lock(&notify.state).waiters.len(), 1, "one entry per future");
        notify.notify_one();
        assert_eq!((old_count.get(), new_count.get()), (0, 1));
        assert!(poll_once(&mut a, &new).is_ready());
    }

    #[test]
    fn notify_waiters_wakes_those_created_before_it_only() {
        let notify = Notify::new();
        let (waker, count) = CountingWaker::new();
        let mut polled = notify.notified();
        assert!(poll_once(&mut polled, &waker).is_pending());
        // Created, never polled before the call: notified all the same.
        let mut unpolled = notify.notified();
        notify.notify_waiters();
        let mut later = notify.notified();
        assert_eq!(count.get(), 1);
        assert!(poll_once(&mut polled, &waker).is_ready());
        assert!(poll_once(&mut unpolled, &waker).is_ready());
        assert!(
            poll_once(&mut later, &waker).is_pending(),
            "no permit stored"
        );
        // A notify_waiters is not passed on by a dropped waiter.
        let mut other = notify.notified();
        assert!(poll_once(&mut other, &waker).is_pending());
        notify.notify_waiters();
        drop(later);
        assert!(poll_once(&mut other, &waker).is_ready());
        let mut last = notify.notified();
        assert!(poll_once(&mut last, &waker).is_pending());
    }

    #[test]
    fn notify_one_skips_a_waiter_already_woken_by_notify_waiters() {
        let notify = Notify::new();
        let (waker, _) = CountingWaker::new();
        let mut a = notify.notified();
        assert!(poll_once(&mut a, &waker).is_pending());
        notify.notify_waiters();
        let mut b = notify.notified();
        assert!(poll_once(&mut b, &waker).is_pending());
        notify.notify_one();
        assert!(
            poll_once(&mut b, &waker).is_ready(),
            "the notify_one went to B"
        );
        assert!(poll_once(&mut a, &waker).is_ready());
    }

    #[test]
    fn a_notified_future_moves_to_another_thread() {
        let notify = std::sync::Arc::new(Notify::new());
        let (waker, count) = CountingWaker::new();
        let waiting = {
            let notify = std::sync::Arc::clone(&notify);
            std::thread::spawn(move || {
                let mut notified = notify.notified();
                while poll_once(&mut notified, &waker).is_pending() {
                    std::thread::yield_now();
                }
            })
        };
        // Whether the thread registered first or not, it gets the notification.
        notify.notify_one();
        waiting.join().unwrap();
        assert!(count.get() <= 1);
    }

    /// A waker whose clone takes the `Notify`'s lock (and then panics): the clone is
    /// made before the lock is taken, so it neither deadlocks nor leaves anything
    /// registered.
    #[test]
    fn a_waker_clone_runs_outside_the_lock() {
        let notify = Notify::new();
        let mut notified = notify.notified();
        with_clone_hook(&|| drop(format!("{notify:?}")), |waker| {
            expect_panic(|| {
                let _ = poll_once(&mut notified, waker);
            });
        });
        assert_eq!(lock(&notify.state).waiters.len(), 0);
        notify.notify_one();
        let (waker, _) = CountingWaker::new();
        assert!(poll_once(&mut notified, &waker).is_ready());
    }

    /// `notify_waiters` wakes every waiter even if the first one's waker panics, then
    /// lets that panic out.
    #[test]
    fn notify_waiters_wakes_everyone_even_if_a_waker_panics() {
        let notify = Notify::new();
        let (waker, count) = CountingWaker::new();
        let mut first = notify.notified();
        let mut second = notify.notified();
        let mut third = notify.notified();
        assert!(poll_once(&mut first, &PanicsOnWake::waker()).is_pending());
        assert!(poll_once(&mut second, &waker).is_pending());
        assert!(poll_once(&mut third, &PanicsOnWake::waker()).is_pending());
        let message = expect_panic(|| notify.notify_waiters());
        assert_eq!(message, "a waker panics on purpose when woken");
        assert_eq!(count.get(), 1);
        assert!(poll_once(&mut second, &waker).is_ready());
        assert!(poll_once(&mut first, &waker).is_ready());
    }
}
