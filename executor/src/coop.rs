//! Cooperative scheduling budget, as tokio's `coop` module has: a task that is always
//! ready (a channel that is never empty, a socket that always has data) gives its worker
//! back after a bounded number of operations, so that the other tasks on the worker,
//! timers and I/O events get their turn.
//!
//! The budget is a thread-local count of units. The worker sets it to [`INITIAL_UNITS`]
//! before it polls a task and puts back what was there before (unconstrained) after
//! the poll, so each poll of each task starts with a full budget. Every resource
//! operation that completes (a `recv` that takes a value, a read that moves bytes, a
//! join that sees the output, an elapsed timer) spends one unit through
//! [`poll_proceed`] (or [`poll_spend`]); with nothing left, the operation wakes its task
//! (`wake_by_ref`, so the task goes to the back of the run queue) and returns
//! `Poll::Pending` before it touches the resource, so it loses nothing: the value stays
//! in the channel, the bytes on the socket. An operation that does not complete (it
//! waits) gives its unit back.
//!
//! Off the workers (a future polled by another executor, a thread blocked on a
//! `JoinHandle`, the blocking pool) the budget is unconstrained and the primitives
//! never yield for it; [`unconstrained`] opts a future out on a worker too.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Units a task gets per poll: tokio's figure. A unit costs from about 5 ns (a channel
/// `recv`) to a few microseconds (a `recv(2)` system call), so a task that spends all
/// of them holds its worker for somewhere between under a microsecond and half a
/// millisecond: long enough that the worker's turn (an `epoll_wait`, the inbox, the
/// timers) costs little beside it, short enough that a timer or a connection on the
/// same worker is not kept waiting noticeably. An HTTP connection spends two or three
/// units per request (a read, a write), far below it.
pub(crate) const INITIAL_UNITS: u8 = 128;

/// What is left of the current poll's budget: `None` is unconstrained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget(Option<u8>);

impl Budget {
    /// A full budget, for one poll of a task.
    pub(crate) const fn initial() -> Self {
        Self(Some(INITIAL_UNITS))
    }

    /// No limit: outside a worker's task polls, and inside [`unconstrained`].
    pub(crate) const fn unconstrained() -> Self {
        Self(None)
    }

    /// A budget of `units`, for tests.
    #[cfg(test)]
    pub(crate) const fn of(units: u8) -> Self {
        Self(Some(units))
    }
}

thread_local! {
    /// The budget of whatever the current thread is polling.
    static BUDGET: Cell<Budget> = const { Cell::new(Budget::unconstrained()) };
}

/// Puts the previous budget back when dropped, even if the poll unwound.
struct ResetGuard(Budget);

impl Drop for ResetGuard {
    fn drop(&mut self) {
        let _ = BUDGET.try_with(|cell| cell.set(self.0));
    }
}

/// Runs `f` (one poll of a task) with `budget`, then puts back the budget that was set
/// before.
#[inline]
pub(crate) fn with_budget<R>(budget: Budget, f: impl FnOnce() -> R) -> R {
    let previous = BUDGET.try_with(|cell| cell.replace(budget));
    let _guard = previous.map(ResetGuard);
    f()
}

/// The budget left to the current poll; for tests.
#[cfg(test)]
pub(crate) fn remaining() -> Budget {
    BUDGET
        .try_with(Cell::get)
        .unwrap_or(Budget::unconstrained())
}

/// One unit spent by an operation that has not completed yet: dropped without
/// [`made_progress`](Self::made_progress) (the operation waits), it gives the unit back.
#[must_use = "dropping it gives the unit back: call `made_progress` when the operation completes"]
pub(crate) struct RestoreOnPending {
    /// A unit was taken from a constrained budget and is not spent yet.
    taken: bool,
}

impl RestoreOnPending {
    /// The operation completed: the unit stays spent.
    #[inline]
    pub(crate) fn made_progress(mut self) {
        self.taken = false;
    }
}

impl Drop for RestoreOnPending {
    #[inline]
    fn drop(&mut self) {
        if self.taken {
            let _ = BUDGET.try_with(|cell| {
                if let Budget(Some(units)) = cell.get() {
                    cell.set(Budget(Some(units.saturating_add(1))));
                }
            });
        }
    }
}

/// Takes one unit for an operation about to run, or, with the budget spent, wakes the
/// task and returns `Pending` (the operation must then return `Pending` without
/// touching its resource). Call [`RestoreOnPending::made_progress`] when the operation
/// completes; drop the guard when it waits.
#[inline]
pub(crate) fn poll_proceed(cx: &mut Context<'_>) -> Poll<RestoreOnPending> {
    let taken = BUDGET.try_with(|cell| match cell.get() {
        Budget(None) => Some(false),
        Budget(Some(0)) => None,
        Budget(Some(units)) => {
            cell.set(Budget(Some(units - 1)));
            Some(true)
        }
    });
    match taken {
        // The thread's storage is gone (a destructor at thread exit): no budget.
        Err(_) => Poll::Ready(RestoreOnPending { taken: false }),
        Ok(Some(taken)) => Poll::Ready(RestoreOnPending { taken }),
        Ok(None) => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Spends one unit for an operation that completes now and cannot be refused halfway
/// (its state is left as it is when this returns `Pending`): `Ready` with the unit spent,
/// or, with the budget spent, the task woken and `Pending`.
#[inline]
pub(crate) fn poll_spend(cx: &mut Context<'_>) -> Poll<()> {
    poll_proceed(cx).map(RestoreOnPending::made_progress)
}

/// Makes `future` ignore the cooperative budget: its operations never yield for it,
/// and spend nothing of the budget of the task that polls it.
///
/// A future that is always ready can then hold its worker for as long as it likes,
/// starving every other task there (timers and connections included): keep it for
/// short bursts whose length is bounded some other way.
///
/// # Examples
/// ```
/// use pagekeep_executor::sync::mpsc;
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let total = runtime.block_on(async {
///     let (sender, mut receiver) = mpsc::unbounded_channel();
///     for value in 0..1_000u64 {
///         sender.send(value).unwrap();
///     }
///     drop(sender);
///     // Drains all 1,000 values in one poll, never yielding for the budget.
///     pagekeep_executor::task::unconstrained(async move {
///         let mut total = 0;
///         while let Some(value) = receiver.recv().await {
///             total += value;
///         }
///         total
///     })
///     .await
/// });
/// assert_eq!(total, 499_500);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn unconstrained<F: Future>(future: F) -> Unconstrained<F> {
    Unconstrained { future }
}

/// The future of [`unconstrained`].
#[must_use = "futures do nothing unless polled"]
pub struct Unconstrained<F> {
    /// Structurally pinned: only reached through `Pin` in `poll`, never moved out.
    future: F,
}

impl<F> fmt::Debug for Unconstrained<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unconstrained").finish_non_exhaustive()
    }
}

impl<F: Future> Future for Unconstrained<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: `Unconstrained` has no `Drop` and no
        // `Unpin` impl of its own (it is `Unpin` only when `F` is), and no method moves
        // the field or hands out `&mut F` outside a `Pin`.
        let future = unsafe { self.map_unchecked_mut(|this| &mut this.future) };
        with_budget(Budget::unconstrained(), || future.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::{CountingWaker, poll_once};
    use crate::sync::{Notify, mpsc, oneshot};
    use std::sync::Arc;
    use std::task::Waker;

    /// Polls `future` once with `budget`, as a worker's poll of a task would.
    fn poll_with<F: Future + Unpin>(
        budget: Budget,
        future: &mut F,
        waker: &Waker,
    ) -> Poll<F::Output> {
        with_budget(budget, || poll_once(future, waker))
    }

    /// A full budget allows exactly `INITIAL_UNITS` completed operations; the next one
    /// wakes the task and is refused.
    #[test]
    fn a_poll_gets_exactly_the_initial_units_then_yields_waking_the_task() {
        let (waker, count) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        with_budget(Budget::initial(), || {
            for _ in 0..INITIAL_UNITS {
                match poll_proceed(&mut cx) {
                    Poll::Ready(guard) => guard.made_progress(),
                    Poll::Pending => panic!("refused within the budget"),
                }
            }
            assert_eq!(remaining(), Budget::of(0));
            assert_eq!(count.get(), 0);
            assert!(poll_proceed(&mut cx).is_pending());
            assert_eq!(count.get(), 1, "a refused operation wakes its task");
            assert!(poll_proceed(&mut cx).is_pending());
            assert_eq!(count.get(), 2);
        });
        assert_eq!(
            remaining(),
            Budget::unconstrained(),
            "put back after the poll"
        );
    }

    /// An operation that waits gives its unit back; one that completes keeps it spent.
    #[test]
    fn a_waiting_operation_gives_its_unit_back() {
        let mut cx = Context::from_waker(Waker::noop());
        with_budget(Budget::of(2), || {
            let Poll::Ready(guard) = poll_proceed(&mut cx) else {
                panic!("refused within the budget");
            };
            assert_eq!(remaining(), Budget::of(1));
            drop(guard);
            assert_eq!(remaining(), Budget::of(2));
            let Poll::Ready(guard) = poll_proceed(&mut cx) else {
                panic!("refused within the budget");
            };
            guard.made_progress();
            assert_eq!(remaining(), Budget::of(1));
        });
    }

    /// Off a worker's poll (and inside `unconstrained`) nothing is ever refused or
    /// counted; a budget set inside is put back on the way out, a panic included.
    #[test]
    fn unconstrained_never_refuses_and_budgets_nest() {
        let (waker, count) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1_000 {
            match poll_proceed(&mut cx) {
                Poll::Ready(guard) => guard.made_progress(),
                Poll::Pending => panic!("refused off a worker"),
            }
        }
        assert_eq!(remaining(), Budget::unconstrained());
        with_budget(Budget::of(0), || {
            assert!(poll_proceed(&mut cx).is_pending());
            let mut inner = std::pin::pin!(unconstrained(async {
                for _ in 0..1_000 {
                    std::future::poll_fn(poll_spend).await;
                }
                remaining()
            }));
            assert_eq!(
                inner.as_mut().poll(&mut cx),
                Poll::Ready(Budget::unconstrained())
            );
            assert_eq!(remaining(), Budget::of(0), "the outer budget is back");
            let unwound = std::panic::catch_unwind(|| {
                with_budget(Budget::of(5), || panic!("a task panics mid-poll"))
            });
            assert!(unwound.is_err());
            assert_eq!(remaining(), Budget::of(0), "put back by the unwind too");
        });
        assert_eq!(count.get(), 1);
    }

    /// A `recv` refused by the budget leaves the value in the channel (cancel safety as
    /// documented: dropping the refused future loses nothing); a bounded `send` refused
    /// keeps its value and sends it at the next poll.
    #[test]
    fn channel_operations_refused_by_the_budget_lose_nothing() {
        let (waker, count) = CountingWaker::new();
        let (sender, mut receiver) = mpsc::unbounded_channel();
        sender.send(1).unwrap();
        let mut recv = receiver.recv();
        assert_eq!(poll_with(Budget::of(0), &mut recv, &waker), Poll::Pending);
        assert_eq!(count.get(), 1, "the task is woken to try again");
        drop(recv);
        assert_eq!(receiver.len(), 1, "the value is still in the channel");
        let mut recv = receiver.recv();
        assert_eq!(
            poll_with(Budget::of(1), &mut recv, &waker),
            Poll::Ready(Some(1))
        );
        drop(recv);

        let (sender, mut receiver) = mpsc::channel(1);
        let mut send = sender.send(2);
        assert!(poll_with(Budget::of(0), &mut send, &waker).is_pending());
        assert_eq!(receiver.len(), 0);
        assert!(matches!(
            poll_with(Budget::of(1), &mut send, &waker),
            Poll::Ready(Ok(()))
        ));
        drop(send);
        assert_eq!(receiver.try_recv(), Ok(2));
        // The last unit goes to the operation that completes; the budget is then spent.
        drop(sender);
        let mut recv = receiver.recv();
        with_budget(Budget::of(1), || {
            assert_eq!(poll_once(&mut recv, &waker), Poll::Ready(None));
            assert_eq!(remaining(), Budget::of(0));
        });
    }

    /// A oneshot value and a join output stay where they are when the budget refuses.
    #[test]
    fn oneshot_and_join_refused_by_the_budget_keep_the_value() {
        let waker = Waker::noop();
        let (sender, mut receiver) = oneshot::channel();
        sender.send(3).unwrap();
        assert!(poll_with(Budget::of(0), &mut receiver, waker).is_pending());
        assert!(matches!(
            poll_with(Budget::of(1), &mut receiver, waker),
            Poll::Ready(Ok(3))
        ));

        let join = crate::join::JoinState::new();
        let mut handle = crate::JoinHandle::new(Arc::clone(&join));
        join.complete(Ok(4));
        assert!(poll_with(Budget::of(0), &mut handle, waker).is_pending());
        assert!(matches!(
            poll_with(Budget::of(1), &mut handle, waker),
            Poll::Ready(Ok(4))
        ));
    }

    /// A `Notified` refused by the budget keeps its notification: the permit stays
    /// stored, and one chosen by `notify_one` and dropped after the refusal passes it on.
    #[test]
    fn notified_refused_by_the_budget_keeps_or_passes_on_its_notification() {
        let waker = Waker::noop();
        let notify = Notify::new();
        notify.notify_one();
        let mut first = notify.notified();
        assert!(poll_with(Budget::of(0), &mut first, waker).is_pending());
        drop(first);
        let mut second = notify.notified();
        assert!(poll_with(Budget::of(1), &mut second, waker).is_ready());

        let mut chosen = notify.notified();
        assert!(poll_with(Budget::of(1), &mut chosen, waker).is_pending());
        notify.notify_one();
        assert!(poll_with(Budget::of(0), &mut chosen, waker).is_pending());
        drop(chosen);
        let mut next = notify.notified();
        assert!(
            poll_with(Budget::of(1), &mut next, waker).is_ready(),
            "the dropped future passed its notification on"
        );
    }

    /// An elapsed sleep refused by the budget completes at the next poll; a timeout
    /// checks its deadline whatever its future left of the budget.
    #[test]
    fn an_elapsed_sleep_waits_for_budget_and_a_timeout_does_not() {
        let waker = Waker::noop();
        let mut sleep = crate::sleep(std::time::Duration::ZERO);
        // Due at the first poll: it yields once (without spending the unit).
        with_budget(Budget::of(1), || {
            assert!(poll_once(&mut sleep, waker).is_pending());
            assert_eq!(remaining(), Budget::of(1));
        });
        assert!(poll_with(Budget::of(0), &mut sleep, waker).is_pending());
        assert!(poll_with(Budget::of(1), &mut sleep, waker).is_ready());

        let mut timeout = Box::pin(crate::timeout(
            std::time::Duration::ZERO,
            std::future::pending::<()>(),
        ));
        // The first poll is the sleep's yield; the second finds the deadline passed
        // although the budget is spent.
        assert!(poll_with(Budget::of(0), &mut timeout, waker).is_pending());
        assert_eq!(
            poll_with(Budget::of(0), &mut timeout, waker),
            Poll::Ready(Err(crate::Elapsed))
        );
    }
}
