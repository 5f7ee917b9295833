//! A channel for one value: [`channel`] makes a [`Sender`], which sends at most once,
//! and a [`Receiver`], a future of the value.
//!
//! # Design
//!
//! The two halves share one record behind an `Arc`: a mutex over the value slot, the
//! two "gone" flags and each half's waker (the receiver's while it waits for the value,
//! the sender's while it waits in [`Sender::closed`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::lock;
use super::wait_list::{Unwinds, replace_waker};

/// The sender was dropped without sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvError;

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("oneshot sender dropped without sending")
    }
}

impl std::error::Error for RecvError {}

/// Why [`Receiver::try_recv`] returned no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// No value yet; the sender may still send.
    Empty,
    /// No value, and none will come: the sender was dropped without sending, the value
    /// was already received, or the receiver was closed before it came.
    Closed,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("oneshot channel empty"),
            Self::Closed => f.write_str("oneshot channel closed"),
        }
    }
}

impl std::error::Error for TryRecvError {}

struct State<T> {
    value: Option<T>,
    /// The sender sent or was dropped: no value will come after `value`.
    sender_done: bool,
    /// The receiver was closed or dropped: a send fails.
    receiver_closed: bool,
    receiver_waker: Option<Waker>,
    /// The sender's, while it waits in [`Sender::closed`].
    sender_waker: Option<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        lock(&self.state)
    }
}

/// Makes a one-value channel.
///
/// # Examples
///
/// ```
/// use pagekeep_executor::sync::oneshot;
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let (sender, receiver) = oneshot::channel();
///     pagekeep_executor::spawn(async move {
///         sender.send("done").unwrap();
///     });
///     assert_eq!(receiver.await, Ok("done"));
///
///     // A sender dropped without sending: the receiver gets `RecvError`.
///     let (sender, receiver) = oneshot::channel::<u32>();
///     drop(sender);
///     assert_eq!(receiver.await, Err(oneshot::RecvError));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    // The channel usually connects tasks that outlive the request that made it: its
    // record comes from outside any request's arena.
    let shared = pagekeep_arena::outside_arena(|| {
        Arc::new(Shared {
            state: Mutex::new(State {
                value: None,
                sender_done: false,
                receiver_closed: false,
                receiver_waker: None,
                sender_waker: None,
            }),
        })
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The sending half of a oneshot [`channel`]. Dropping it without sending makes the
/// receiver complete with [`RecvError`].
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waking the receiver.
    ///
    /// # Errors
    ///
    /// The value back, if the receiver is dropped or closed.
    pub fn send(self, value: T) -> Result<(), T> {
        let waker = {
            let mut state = self.shared.lock();
            if state.receiver_closed {
                drop(state);
                return Err(value);
            }
            state.value = Some(value);
            state.sender_done = true;
            state.receiver_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is dropped or closed: a send would fail.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().receiver_closed
    }

    /// Completes when the receiver is dropped or closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub fn closed(&mut self) -> Closed<'_, T> {
        Closed { sender: self }
    }

    /// Polls for the receiver's closing, as [`closed`](Self::closed) does, for
    /// hand-written futures. Only the waker of the last `Pending` call is woken.
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Cloned before the lock: a clone may panic, and must not with the lock held.
        let waker = cx.waker().clone();
        let mut state = self.shared.lock();
        if state.receiver_closed {
            drop(state);
            drop(waker);
            return Poll::Ready(());
        }
        let unused = replace_waker(&mut state.sender_waker, waker);
        drop(state);
        drop(unused);
        Poll::Pending
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let (receiver, own) = {
            let mut state = self.shared.lock();
            state.sender_done = true;
            (state.receiver_waker.take(), state.sender_waker.take())
        };
        // The receiver is woken even if its own waker's drop panics.
        let mut unwinds = Unwinds::new();
        unwinds.wake(receiver);
        unwinds.run(|| drop(own));
        unwinds.finish();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The future of [`Sender::closed`]; cancel safe.
#[must_use = "futures do nothing unless polled"]
pub struct Closed<'a, T> {
    sender: &'a mut Sender<T>,
}

impl<T> fmt::Debug for Closed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closed").finish_non_exhaustive()
    }
}

impl<T> Future for Closed<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().sender.poll_closed(cx)
    }
}

/// The receiving half of a oneshot [`channel`]: a future of the value, or of
/// [`RecvError`] if the sender is dropped without sending.
///
/// # Cancel safety
///
/// Awaiting `&mut receiver` (in a `select!`, say) is cancel safe: the value leaves the
/// channel only when the poll returns it, so a dropped poll loses nothing and the
/// receiver can be awaited again. Dropping the receiver itself drops a value sent and
/// not received. Once it has completed, it completes again with `RecvError`.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// Takes the value if it was sent, without waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if the sender may still send, [`TryRecvError::Closed`]
    /// if no value will come.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.shared.lock();
        match state.value.take() {
            Some(value) => Ok(value),
            None if state.sender_done || state.receiver_closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Closes the channel: a later send fails (and [`Sender::closed`] completes). A
    /// value sent before stays, for [`try_recv`](Self::try_recv) or awaiting.
    pub fn close(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.receiver_closed = true;
            state.sender_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // With the task's budget spent, the value stays in the channel for the next poll.
        let coop = std::task::ready!(crate::coop::poll_proceed(cx));
        // Cloned before the lock: a clone may panic, and must not with the lock held.
        let waker = cx.waker().clone();
        let mut state = self.shared.lock();
        if let Some(value) = state.value.take() {
            drop(state);
            drop(waker);
            coop.made_progress();
            return Poll::Ready(Ok(value));
        }
        if state.sender_done || state.receiver_closed {
            drop(state);
            drop(waker);
            coop.made_progress();
            return Poll::Ready(Err(RecvError));
        }
        let unused = replace_waker(&mut state.receiver_waker, waker);
        drop(state);
        drop(unused);
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Closes, then drops a value sent and never received and its own waker, after
        // the lock; each step runs even if one before it panics.
        let mut unwinds = Unwinds::new();
        unwinds.run(|| self.close());
        let (value, own) = {
            let mut state = self.shared.lock();
            (state.value.take(), state.receiver_waker.take())
        };
        unwinds.run(|| drop(own));
        unwinds.run(|| drop(value));
        unwinds.finish();
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::{
        CountingWaker, DropCounter, expect_panic, poll_once, with_clone_hook,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_sent_value_wakes_the_waiting_receiver() {
        let (sender, mut receiver) = channel();
        let (waker, wakes) = CountingWaker::new();
        assert!(poll_once(&mut receiver, &waker).is_pending());
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        sender.send(3).unwrap();
        assert_eq!(wakes.get(), 1);
        assert_eq!(poll_once(&mut receiver, &waker), Poll::Ready(Ok(3)));
        assert_eq!(
            poll_once(&mut receiver, &waker),
            Poll::Ready(Err(RecvError))
        );
    }

    #[test]
    fn a_sender_dropped_without_sending_gives_recv_error() {
        let (sender, mut receiver) = channel::<u8>();
        let (waker, wakes) = CountingWaker::new();
        assert!(poll_once(&mut receiver, &waker).is_pending());
        drop(sender);
        assert_eq!(wakes.get(), 1);
        assert_eq!(
            poll_once(&mut receiver, &waker),
            Poll::Ready(Err(RecvError))
        );
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn a_send_to_a_closed_or_dropped_receiver_gives_the_value_back() {
        let (mut sender, mut receiver) = channel();
        let (waker, wakes) = CountingWaker::new();
        assert!(!sender.is_closed());
        assert!(poll_once(&mut sender.closed(), &waker).is_pending());
        receiver.close();
        assert_eq!(wakes.get(), 1);
        assert!(sender.is_closed());
        assert!(poll_once(&mut sender.closed(), &waker).is_ready());
        assert_eq!(sender.send(1), Err(1));
        assert_eq!(
            poll_once(&mut receiver, &waker),
            Poll::Ready(Err(RecvError))
        );

        let (sender, receiver) = channel();
        drop(receiver);
        assert!(sender.is_closed());
        assert_eq!(sender.send("back"), Err("back"));
    }

    #[test]
    fn a_value_sent_before_close_can_still_be_received() {
        let (sender, mut receiver) = channel();
        sender.send(8).unwrap();
        receiver.close();
        assert_eq!(receiver.try_recv(), Ok(8));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn an_unreceived_value_is_dropped_with_the_receiver() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (sender, receiver) = channel();
        sender.send(DropCounter(Arc::clone(&drops))).unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(receiver);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_cancelled_poll_loses_nothing_and_a_new_waker_replaces_the_old() {
        let (sender, mut receiver) = channel();
        let (old, old_wakes) = CountingWaker::new();
        let (new, new_wakes) = CountingWaker::new();
        assert!(poll_once(&mut receiver, &old).is_pending());
        assert!(poll_once(&mut receiver, &new).is_pending());
        sender.send(()).unwrap();
        assert_eq!((old_wakes.get(), new_wakes.get()), (0, 1));
        assert_eq!(poll_once(&mut receiver, &new), Poll::Ready(Ok(())));
    }

    #[test]
    fn the_value_crosses_threads() {
        let (sender, mut receiver) = channel();
        let sending = std::thread::spawn(move || sender.send(String::from("across")));
        let (waker, _) = CountingWaker::new();
        let value = loop {
            match poll_once(&mut receiver, &waker) {
                Poll::Ready(value) => break value,
                Poll::Pending => std::thread::yield_now(),
            }
        };
        sending.join().unwrap().unwrap();
        assert_eq!(value.as_deref(), Ok("across"));
    }

    /// A waker whose clone takes the channel's lock (and then panics): the clone is made
    /// before the lock, in the receiver's poll and in the sender's `poll_closed`.
    #[test]
    fn a_waker_clone_runs_outside_the_lock() {
        let (mut sender, mut receiver) = channel::<u8>();
        let shared = Arc::clone(&sender.shared);
        with_clone_hook(&|| drop(shared.lock()), |waker| {
            expect_panic(|| {
                let _ = poll_once(&mut receiver, waker);
            });
            expect_panic(|| {
                let _ = sender.poll_closed(&mut Context::from_waker(waker));
            });
        });
        sender.send(5).unwrap();
        let (waker, _) = CountingWaker::new();
        assert_eq!(poll_once(&mut receiver, &waker), Poll::Ready(Ok(5)));
    }
}
