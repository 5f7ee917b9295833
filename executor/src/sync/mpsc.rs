//! Multi-producer, single-consumer channels: [`channel`] (bounded) and
//! [`unbounded_channel`].
//!
//! Values are received in the order they were sent (per sender; the sends of different
//! senders interleave as they happen). When every sender is dropped, the receiver gets
//! the values still buffered, then `None`. When the receiver is dropped or
//! [closed](Receiver::close), sends fail and give the value back; the values still
//! buffered when the receiver is dropped are dropped with it.
//!
//! # Design
//!
//! Both kinds share one record behind an `Arc`: a mutex over the buffer (a `VecDeque`),
//! the sender count, the closed flag, the receiver's waker and two wait lists (senders
//! waiting for room, senders waiting for the receiver to close). The bounded buffer is
//! allocated once, at its full capacity, when the channel is made, so a send never
//! allocates; the unbounded one grows (doubling) when a send finds it full.
//!
//! Each value the receiver takes out of a full bounded buffer wakes one waiting sender,
//! marked chosen in its wait list; a chosen sender that finds the room taken by another
//! (a `try_send`) waits again, in its place, and a chosen sender dropped before it sent
//! hands the wake-up on to the next waiting sender, so a free slot is never left with
//! senders asleep.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::lock;
use super::wait_list::{Unwinds, WaitList, WaiterState, WakeBatch, replace_waker};

/// A sender's send failed: the receiver is gone or closed. Holds the value back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("channel closed")
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`Sender::try_send`] failed. Holds the value back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The buffer is full.
    Full(T),
    /// The receiver is gone or closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(value) | Self::Closed(value) => value,
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("channel full"),
            Self::Closed(_) => f.write_str("channel closed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// Why a `try_recv` returned no value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is buffered, and a sender may still send.
    Empty,
    /// Nothing is buffered and nothing will be: every sender is gone, or the receiver
    /// was closed.
    Disconnected,
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("channel empty"),
            Self::Disconnected => f.write_str("channel empty and disconnected"),
        }
    }
}

impl std::error::Error for TryRecvError {}

struct State<T> {
    /// Bounded: allocated at `capacity` when the channel is made and never longer.
    buffer: VecDeque<T>,
    /// Live senders (of either kind).
    senders: usize,
    /// The receiver was closed or dropped: no more sends.
    closed: bool,
    /// The receiver's, while it waits for a value.
    receiver_waker: Option<Waker>,
    /// Senders waiting for room (bounded only).
    send_waiters: WaitList,
    /// Senders waiting in [`Sender::closed`].
    close_waiters: WaitList,
}

/// The record a channel's handles share.
struct Chan<T> {
    /// `None`: unbounded.
    capacity: Option<usize>,
    state: Mutex<State<T>>,
}

impl<T> Chan<T> {
    fn new(capacity: Option<usize>, buffer: VecDeque<T>) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            state: Mutex::new(State {
                buffer,
                senders: 1,
                closed: false,
                receiver_waker: None,
                send_waiters: WaitList::new(),
                close_waiters: WaitList::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        lock(&self.state)
    }

    fn has_room(&self, state: &State<T>) -> bool {
        self.capacity
            .is_none_or(|capacity| state.buffer.len() < capacity)
    }

    /// Buffers `value` if the channel is open and has room, and returns the receiver's
    /// waker to wake (after the guard is dropped); the value back otherwise.
    fn push(&self, state: &mut State<T>, value: T) -> Result<Option<Waker>, TrySendError<T>> {
        if state.closed {
            return Err(TrySendError::Closed(value));
        }
        if !self.has_room(state) {
            return Err(TrySendError::Full(value));
        }
        if state.buffer.len() == state.buffer.capacity() {
            debug_assert!(self.capacity.is_none(), "a bounded buffer grew");
            // Channels usually connect tasks that outlive the request that made them:
            // the buffer must not grow into (and pin) that request's arena.
            pagekeep_arena::outside_arena(|| state.buffer.reserve(1));
        }
        state.buffer.push_back(value);
        Ok(state.receiver_waker.take())
    }

    fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.lock();
            self.push(&mut state, value)?
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Takes the next value, waking one sender waiting for room (bounded).
    fn take_value(&self, mut state: std::sync::MutexGuard<'_, State<T>>) -> Option<T> {
        let value = state.buffer.pop_front()?;
        let sender = if self.capacity.is_some() {
            state.send_waiters.notify_one()
        } else {
            None
        };
        drop(state);
        if let Some(waker) = sender {
            waker.wake();
        }
        Some(value)
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // With the task's budget spent, the value stays in the buffer for the next poll.
        let coop = std::task::ready!(crate::coop::poll_proceed(cx));
        // Cloned before the lock: a clone may panic, and must not with the lock held.
        let waker = cx.waker().clone();
        let mut state = self.lock();
        if state.buffer.is_empty() {
            if state.senders == 0 || state.closed {
                drop(state);
                drop(waker);
                coop.made_progress();
                return Poll::Ready(None);
            }
            let unused = replace_waker(&mut state.receiver_waker, waker);
            drop(state);
            drop(unused);
            return Poll::Pending;
        }
        coop.made_progress();
        let value = self.take_value(state);
        drop(waker);
        Poll::Ready(value)
    }

    fn try_recv(&self) -> Result<T, TryRecvError> {
        let state = self.lock();
        if state.buffer.is_empty() {
            return Err(if state.senders == 0 || state.closed {
                TryRecvError::Disconnected
            } else {
                TryRecvError::Empty
            });
        }
        Ok(self.take_value(state).expect("buffer not empty"))
    }

    /// Closes the channel for sending and wakes every waiting sender, then resumes the
    /// first panic of a waker, if any: every waiter is woken first.
    fn close(&self) {
        let mut unwinds = Unwinds::new();
        self.close_catching(&mut unwinds);
        unwinds.finish();
    }

    /// Closes and wakes every waiting sender; the wakers' panics go to `unwinds`.
    fn close_catching(&self, unwinds: &mut Unwinds) {
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            state.send_waiters.notify_all();
            state.close_waiters.notify_all();
        }
        self.wake_notified_all(|state| &mut state.send_waiters, unwinds);
        self.wake_notified_all(|state| &mut state.close_waiters, unwinds);
    }

    /// Wakes, a batch at a time with the lock released, the `NotifiedAll` waiters of
    /// one of the lists, every one of them even if some wakers panic.
    fn wake_notified_all(&self, list: fn(&mut State<T>) -> &mut WaitList, unwinds: &mut Unwinds) {
        let mut batch = WakeBatch::new();
        loop {
            let more = list(&mut self.lock()).take_notified_all(&mut batch);
            batch.wake_all(unwinds);
            if !more {
                return;
            }
        }
    }

    /// The receiver's drop: closes, then drops what is buffered (after the lock), then
    /// resumes the first panic of a waker or a value's destructor, if any.
    fn close_and_drain(&self) {
        let mut unwinds = Unwinds::new();
        self.close_catching(&mut unwinds);
        let buffered = std::mem::take(&mut self.lock().buffer);
        unwinds.run(|| drop(buffered));
        unwinds.finish();
    }

    fn add_sender(&self) {
        self.lock().senders += 1;
    }

    fn drop_sender(&self) {
        let waker = {
            let mut state = self.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.receiver_waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn len(&self) -> usize {
        self.lock().buffer.len()
    }

    fn poll_closed(&self, waiter: &mut Option<u64>, cx: &mut Context<'_>) -> Poll<()> {
        // Cloned before the lock: a clone may panic, and must not with the lock held.
        let waker = cx.waker().clone();
        let mut state = self.lock();
        if state.closed {
            let stale = waiter.take().and_then(|id| state.close_waiters.remove(id));
            drop(state);
            drop(waker);
            drop(stale);
            return Poll::Ready(());
        }
        let unused = state.close_waiters.wait(waiter, waker);
        drop(state);
        drop(unused);
        Poll::Pending
    }

    fn forget_close_waiter(&self, waiter: &mut Option<u64>) {
        if let Some(id) = waiter.take() {
            let stale = self.lock().close_waiters.remove(id);
            drop(stale);
        }
    }
}

/// Makes a bounded channel that buffers up to `capacity` values: a
/// [`send`](Sender::send) waits while the buffer is full.
///
/// The buffer is allocated here, at its full capacity, and never again: sending
/// allocates nothing.
///
/// # Panics
///
/// If `capacity` is 0 (as tokio's `channel`), or if there is no memory for a buffer of
/// `capacity` values.
///
/// # Examples
///
/// ```
/// use pagekeep_executor::sync::mpsc;
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let total = runtime.block_on(async {
///     let (sender, mut receiver) = mpsc::channel(2);
///     for start in [0, 100] {
///         let sender = sender.clone();
///         pagekeep_executor::spawn(async move {
///             for value in start..start + 10 {
///                 // Waits while two values are buffered.
///                 sender.send(value).await.unwrap();
///             }
///         });
///     }
///     drop(sender);
///     let mut total = 0;
///     // `None` once both producers are done and the buffer is empty.
///     while let Some(value) = receiver.recv().await {
///         total += value;
///     }
///     total
/// });
/// assert_eq!(total, 45 + 1045);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "mpsc bounded channel requires capacity > 0");
    // The channel usually connects tasks that outlive the request that made it: its
    // record and buffer come from outside any request's arena.
    let chan = pagekeep_arena::outside_arena(|| {
        let mut buffer = VecDeque::new();
        if buffer.try_reserve_exact(capacity).is_err() {
            no_memory_for(capacity);
        }
        Chan::new(Some(capacity), buffer)
    });
    (
        Sender {
            chan: Arc::clone(&chan),
        },
        Receiver { chan },
    )
}

#[cold]
#[inline(never)]
fn no_memory_for(capacity: usize) -> ! {
    panic!("mpsc channel: no memory for a buffer of {capacity} values")
}

/// Makes an unbounded channel: [`send`](UnboundedSender::send) never waits. The buffer
/// grows (doubling, outside any request's arena) when a send finds it full, and keeps
/// its size.
///
/// # Examples
///
/// ```
/// use pagekeep_executor::sync::mpsc;
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let (sender, mut receiver) = mpsc::unbounded_channel();
///     let producer = pagekeep_executor::spawn(async move {
///         for word in ["no", "waiting", "here"] {
///             sender.send(word).unwrap();
///         }
///     });
///     assert_eq!(receiver.recv().await, Some("no"));
///     assert_eq!(receiver.recv().await, Some("waiting"));
///     assert_eq!(receiver.recv().await, Some("here"));
///     assert_eq!(receiver.recv().await, None);
///     producer.await.unwrap();
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    // As in `channel`: the shared record lives outside any request's arena.
    let chan = pagekeep_arena::outside_arena(|| Chan::new(None, VecDeque::new()));
    (
        UnboundedSender {
            chan: Arc::clone(&chan),
        },
        UnboundedReceiver { chan },
    )
}

/// The sending half of a bounded [`channel`]. Cloning it adds a sender; the receiver
/// sees the end of the channel when every sender is dropped.
pub struct Sender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting while the buffer is full.
    ///
    /// # Errors
    ///
    /// [`SendError`], holding the value, if the receiver is dropped or closed (before
    /// or while this waits).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, the value was not sent, and it is
    /// dropped with the future. Waiting senders are woken in the order they started
    /// waiting, but a dropped one loses its place: to keep both value and place across
    /// `select!`s, keep the future alive (pinned outside the loop, or by `&mut`)
    /// between them.
    ///
    /// The order is not strict: a send (or `try_send`) that finds room when it is first
    /// polled takes it, even if others are waiting; a woken sender that finds the room
    /// taken waits again in its place.
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        SendFuture {
            chan: &self.chan,
            value: Some(value),
            waiter: None,
        }
    }

    /// Sends `value` if the buffer has room, without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] if the buffer is full, [`TrySendError::Closed`] if the
    /// receiver is dropped or closed; either holds the value.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.chan.try_send(value)
    }

    /// Whether the receiver is dropped or closed: every send would fail.
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// Completes when the receiver is dropped or closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub fn closed(&self) -> ClosedFuture<'_, T> {
        ClosedFuture {
            chan: &self.chan,
            waiter: None,
        }
    }

    /// The capacity the channel was made with.
    pub fn max_capacity(&self) -> usize {
        self.chan.capacity.expect("a bounded channel")
    }

    /// Whether `self` and `other` send on the same channel.
    pub fn same_channel(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Self {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.chan.capacity)
            .finish_non_exhaustive()
    }
}

/// The future of [`Sender::send`]; see there for its cancel safety.
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, T> {
    chan: &'a Chan<T>,
    /// `None` once sent (or given back).
    value: Option<T>,
    /// Its entry in the senders' wait list, while it waits.
    waiter: Option<u64>,
}

// The value is never pinned: it is moved into the buffer or back to the caller.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("waiting", &self.waiter.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        assert!(
            this.value.is_some(),
            "`SendFuture` polled after it completed"
        );
        // With the task's budget spent, the value stays in the future (and the future in
        // its place among the waiting senders) for the next poll.
        let coop = std::task::ready!(crate::coop::poll_proceed(cx));
        // Cloned before the lock: a clone may panic, and must not with the lock held
        // (the value, a user type, would be dropped by the unwinding under the lock, and
        // its destructor may take this very lock: a `Sender` of the same channel).
        let waker = cx.waker().clone();
        let value = this.value.take().expect("checked above");
        let mut state = this.chan.lock();
        match this.chan.push(&mut state, value) {
            Ok(receiver) => {
                coop.made_progress();
                let stale = this
                    .waiter
                    .take()
                    .and_then(|id| state.send_waiters.remove(id));
                drop(state);
                // The receiver is woken even if a drop panics, and the other way round.
                let mut unwinds = Unwinds::new();
                unwinds.wake(receiver);
                unwinds.run(|| drop(stale));
                unwinds.run(|| drop(waker));
                unwinds.finish();
                Poll::Ready(Ok(()))
            }
            Err(TrySendError::Closed(value)) => {
                coop.made_progress();
                let stale = this
                    .waiter
                    .take()
                    .and_then(|id| state.send_waiters.remove(id));
                drop(state);
                drop(stale);
                drop(waker);
                Poll::Ready(Err(SendError(value)))
            }
            Err(TrySendError::Full(value)) => {
                // Back in the future before anything else can panic.
                this.value = Some(value);
                // Waits (again, in its place if it was chosen and the room was taken).
                let unused = state.send_waiters.wait(&mut this.waiter, waker);
                drop(state);
                drop(unused);
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        let Some(id) = self.waiter.take() else {
            return;
        };
        let (removed, next) = {
            let mut state = self.chan.lock();
            let removed = state.send_waiters.remove(id);
            let next = match removed {
                // Woken for a free slot it will not use: wake the next sender.
                Some((WaiterState::NotifiedOne, _)) if !state.closed => {
                    state.send_waiters.notify_one()
                }
                _ => None,
            };
            (removed, next)
        };
        // The next sender is woken even if the stale waker's drop panics.
        let mut unwinds = Unwinds::new();
        unwinds.wake(next);
        unwinds.run(|| drop(removed));
        unwinds.finish();
        // `self.value`, if any, is dropped after this, with no lock held.
    }
}

/// The future of [`Sender::closed`] and [`UnboundedSender::closed`]; cancel safe.
#[must_use = "futures do nothing unless polled"]
pub struct ClosedFuture<'a, T> {
    chan: &'a Chan<T>,
    waiter: Option<u64>,
}

impl<T> fmt::Debug for ClosedFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClosedFuture").finish_non_exhaustive()
    }
}

impl<T> Future for ClosedFuture<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.chan.poll_closed(&mut this.waiter, cx)
    }
}

impl<T> Drop for ClosedFuture<'_, T> {
    fn drop(&mut self) {
        self.chan.forget_close_waiter(&mut self.waiter);
    }
}

/// The receiving half of a bounded [`channel`].
///
/// Dropping it closes the channel (sends fail from then on) and drops the values still
/// buffered.
pub struct Receiver<T> {
    chan: Arc<Chan<T>>,
}

/// The receiving half of an [`unbounded_channel`]; as [`Receiver`].
pub struct UnboundedReceiver<T> {
    chan: Arc<Chan<T>>,
}

/// The receiver methods, the same for both kinds.
macro_rules! receiver_methods {
    ($name:ident) => {
        impl<T> $name<T> {
            /// Receives the next value, waiting for one: `None` once every sender is
            /// gone (or the receiver was closed) and the buffer is empty.
            ///
            /// # Cancel safety
            ///
            /// Cancel safe: a value is taken out of the channel only when the future
            /// returns it, so dropping the future (a `select!` that took another
            /// branch) loses nothing.
            pub fn recv(&mut self) -> RecvFuture<'_, T> {
                RecvFuture { chan: &self.chan }
            }

            /// Polls for the next value, as [`recv`](Self::recv) does, for
            /// hand-written futures. Only the waker of the last `Pending` call is
            /// woken.
            pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.chan.poll_recv(cx)
            }

            /// Takes the next value if one is buffered, without waiting.
            ///
            /// # Errors
            ///
            /// [`TryRecvError::Empty`] if nothing is buffered but a sender may still
            /// send, [`TryRecvError::Disconnected`] if nothing is buffered and every
            /// sender is gone (or the receiver was closed).
            pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
                self.chan.try_recv()
            }

            /// Closes the channel for sending, without dropping what is buffered:
            /// sends fail from now on (waiting ones included), and
            /// [`recv`](Self::recv) returns the values already buffered, then `None`.
            ///
            /// # Panics
            ///
            /// If a waiting sender's waker panics when woken: the first such panic is
            /// resumed once every waiting sender has been woken. Dropping the receiver
            /// does the same, after it has dropped the buffered values too.
            pub fn close(&mut self) {
                self.chan.close();
            }

            /// Whether the channel is closed for sending: the receiver was closed, or
            /// every sender is gone.
            pub fn is_closed(&self) -> bool {
                let state = self.chan.lock();
                state.closed || state.senders == 0
            }

            /// How many values are buffered.
            pub fn len(&self) -> usize {
                self.chan.len()
            }

            /// Whether no value is buffered.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl<T> Drop for $name<T> {
            fn drop(&mut self) {
                self.chan.close_and_drain();
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("capacity", &self.chan.capacity)
                    .finish_non_exhaustive()
            }
        }
    };
}

receiver_methods!(Receiver);
receiver_methods!(UnboundedReceiver);

/// The future of `recv` on a [`Receiver`] or [`UnboundedReceiver`]; cancel safe.
#[must_use = "futures do nothing unless polled"]
pub struct RecvFuture<'a, T> {
    chan: &'a Chan<T>,
}

impl<T> fmt::Debug for RecvFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvFuture").finish_non_exhaustive()
    }
}

impl<T> Future for RecvFuture<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.chan.poll_recv(cx)
    }
}

/// The sending half of an [`unbounded_channel`]. Cloning it adds a sender.
pub struct UnboundedSender<T> {
    chan: Arc<Chan<T>>,
}

impl<T> UnboundedSender<T> {
    /// Sends `value` without waiting (the buffer grows if it must).
    ///
    /// # Errors
    ///
    /// [`SendError`], holding the value, if the receiver is dropped or closed.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.chan.try_send(value).map_err(|error| match error {
            TrySendError::Closed(value) | TrySendError::Full(value) => SendError(value),
        })
    }

    /// Whether the receiver is dropped or closed: every send would fail.
    pub fn is_closed(&self) -> bool {
        self.chan.is_closed()
    }

    /// Completes when the receiver is dropped or closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub fn closed(&self) -> ClosedFuture<'_, T> {
        ClosedFuture {
            chan: &self.chan,
            waiter: None,
        }
    }

    /// Whether `self` and `other` send on the same channel.
    pub fn same_channel(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.chan, &other.chan)
    }
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        self.chan.add_sender();
        Self {
            chan: Arc::clone(&self.chan),
        }
    }
}

impl<T> Drop for UnboundedSender<T> {
    fn drop(&mut self) {
        self.chan.drop_sender();
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundedSender").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::{
        CountingWaker, DropCounter, PanicsOnWake, expect_panic, poll_once, with_clone_hook,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    #[should_panic(expected = "mpsc bounded channel requires capacity > 0")]
    fn capacity_zero_panics() {
        let _ = channel::<u8>(0);
    }

    #[test]
    #[should_panic(expected = "no memory for a buffer")]
    fn an_impossible_capacity_panics_instead_of_aborting() {
        let _ = channel::<u64>(usize::MAX);
    }

    #[test]
    fn values_arrive_in_order_and_the_buffer_never_grows() {
        let (sender, mut receiver) = channel(3);
        let capacity = receiver.chan.lock().buffer.capacity();
        for round in 0..4 {
            for value in 0..3 {
                sender.try_send(round * 10 + value).unwrap();
            }
            assert!(matches!(sender.try_send(99), Err(TrySendError::Full(99))));
            for value in 0..3 {
                assert_eq!(receiver.try_recv(), Ok(round * 10 + value));
            }
            assert_eq!(receiver.try_recv(), Err(TryRecvError::Empty));
        }
        assert_eq!(receiver.chan.lock().buffer.capacity(), capacity);
        assert_eq!(sender.max_capacity(), 3);
    }

    #[test]
    fn a_full_buffer_makes_send_wait_until_a_value_is_taken() {
        let (sender, mut receiver) = channel(1);
        let (waker, wakes) = CountingWaker::new();
        sender.try_send(1).unwrap();
        let mut send = sender.send(2);
        assert!(poll_once(&mut send, &waker).is_pending());
        assert!(poll_once(&mut send, &waker).is_pending());
        assert_eq!(
            receiver.chan.lock().send_waiters.len(),
            1,
            "one entry per future"
        );
        assert_eq!(wakes.get(), 0);
        assert_eq!(receiver.try_recv(), Ok(1));
        assert_eq!(wakes.get(), 1);
        assert!(matches!(poll_once(&mut send, &waker), Poll::Ready(Ok(()))));
        drop(send);
        assert_eq!(receiver.chan.lock().send_waiters.len(), 0);
        assert_eq!(receiver.try_recv(), Ok(2));
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_send() {
        let (sender, mut receiver) = channel(2);
        let (waker, wakes) = CountingWaker::new();
        let mut recv = receiver.recv();
        assert!(poll_once(&mut recv, &waker).is_pending());
        sender.try_send(7).unwrap();
        assert_eq!(wakes.get(), 1);
        assert_eq!(poll_once(&mut recv, &waker), Poll::Ready(Some(7)));
    }

    #[test]
    fn a_chosen_sender_dropped_before_sending_wakes_the_next() {
        let (sender, mut receiver) = channel(1);
        let (waker_a, wakes_a) = CountingWaker::new();
        let (waker_b, wakes_b) = CountingWaker::new();
        sender.try_send(0).unwrap();
        let mut a = sender.send(1);
        let mut b = sender.send(2);
        assert!(poll_once(&mut a, &waker_a).is_pending());
        assert!(poll_once(&mut b, &waker_b).is_pending());
        assert_eq!(receiver.try_recv(), Ok(0));
        assert_eq!(
            (wakes_a.get(), wakes_b.get()),
            (1, 0),
            "first come, first woken"
        );
        drop(a);
        assert_eq!(wakes_b.get(), 1, "the free slot went on to B");
        assert!(matches!(poll_once(&mut b, &waker_b), Poll::Ready(Ok(()))));
        assert_eq!(receiver.try_recv(), Ok(2));
    }

    #[test]
    fn a_chosen_sender_whose_room_was_taken_waits_again_in_its_place() {
        let (sender, mut receiver) = channel(1);
        let (waker_a, wakes_a) = CountingWaker::new();
        let (waker_b, wakes_b) = CountingWaker::new();
        sender.try_send(0).unwrap();
        let mut a = sender.send(1);
        let mut b = sender.send(2);
        assert!(poll_once(&mut a, &waker_a).is_pending());
        assert!(poll_once(&mut b, &waker_b).is_pending());
        assert_eq!(receiver.try_recv(), Ok(0));
        // Another sender takes the slot before A runs.
        sender.try_send(3).unwrap();
        assert!(poll_once(&mut a, &waker_a).is_pending());
        assert_eq!(receiver.try_recv(), Ok(3));
        assert_eq!((wakes_a.get(), wakes_b.get()), (2, 0), "A is still first");
        assert!(matches!(poll_once(&mut a, &waker_a), Poll::Ready(Ok(()))));
        assert_eq!(receiver.try_recv(), Ok(1));
        assert_eq!(wakes_b.get(), 1);
        assert!(matches!(poll_once(&mut b, &waker_b), Poll::Ready(Ok(()))));
    }

    #[test]
    fn a_cancelled_send_drops_its_value_and_its_entry() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (sender, receiver) = channel(1);
        let (waker, _) = CountingWaker::new();
        sender.try_send(DropCounter(Arc::clone(&drops))).unwrap();
        let mut send = sender.send(DropCounter(Arc::clone(&drops)));
        assert!(poll_once(&mut send, &waker).is_pending());
        drop(send);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the unsent value");
        assert_eq!(receiver.chan.lock().send_waiters.len(), 0);
        drop(receiver);
        assert_eq!(drops.load(Ordering::SeqCst), 2, "the buffered value");
    }

    #[test]
    fn a_cancelled_recv_loses_no_value() {
        let (sender, mut receiver) = channel(1);
        let (waker, _) = CountingWaker::new();
        let mut recv = receiver.recv();
        assert!(poll_once(&mut recv, &waker).is_pending());
        drop(recv);
        sender.try_send(5).unwrap();
        assert_eq!(receiver.try_recv(), Ok(5));
    }

    #[test]
    fn dropping_the_receiver_fails_the_waiting_senders() {
        let (sender, receiver) = channel(1);
        let (waker_a, wakes_a) = CountingWaker::new();
        let (waker_b, wakes_b) = CountingWaker::new();
        let (waker_c, wakes_c) = CountingWaker::new();
        sender.try_send(0).unwrap();
        let mut a = sender.send(1);
        let mut b = sender.send(2);
        let mut closed = sender.closed();
        assert!(poll_once(&mut a, &waker_a).is_pending());
        assert!(poll_once(&mut b, &waker_b).is_pending());
        assert!(poll_once(&mut closed, &waker_c).is_pending());
        assert!(!sender.is_closed());
        drop(receiver);
        assert_eq!((wakes_a.get(), wakes_b.get(), wakes_c.get()), (1, 1, 1));
        assert!(sender.is_closed());
        assert!(matches!(
            poll_once(&mut b, &waker_b),
            Poll::Ready(Err(SendError(2)))
        ));
        assert!(matches!(
            poll_once(&mut a, &waker_a),
            Poll::Ready(Err(SendError(1)))
        ));
        assert!(poll_once(&mut closed, &waker_c).is_ready());
        assert!(matches!(sender.try_send(3), Err(TrySendError::Closed(3))));
    }

    #[test]
    fn buffered_values_outlive_the_senders_then_none() {
        let (sender, mut receiver) = channel(4);
        let second = sender.clone();
        let (waker, wakes) = CountingWaker::new();
        sender.try_send(1).unwrap();
        second.try_send(2).unwrap();
        drop(sender);
        assert!(!receiver.is_closed());
        drop(second);
        assert!(receiver.is_closed());
        let mut recv = receiver.recv();
        assert_eq!(poll_once(&mut recv, &waker), Poll::Ready(Some(1)));
        assert_eq!(receiver.try_recv(), Ok(2));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Disconnected));
        let mut recv = receiver.recv();
        assert_eq!(poll_once(&mut recv, &waker), Poll::Ready(None));
        assert_eq!(wakes.get(), 0);
    }

    #[test]
    fn the_last_sender_dropped_wakes_a_waiting_receiver() {
        let (sender, mut receiver) = channel::<u8>(1);
        let (waker, wakes) = CountingWaker::new();
        let mut recv = receiver.recv();
        assert!(poll_once(&mut recv, &waker).is_pending());
        let clone = sender.clone();
        drop(sender);
        assert_eq!(wakes.get(), 0);
        drop(clone);
        assert_eq!(wakes.get(), 1);
        assert_eq!(poll_once(&mut recv, &waker), Poll::Ready(None));
    }

    #[test]
    fn close_keeps_the_buffered_values_and_refuses_new_ones() {
        let (sender, mut receiver) = channel(2);
        sender.try_send(1).unwrap();
        receiver.close();
        assert!(sender.is_closed());
        assert!(matches!(sender.try_send(2), Err(TrySendError::Closed(2))));
        assert_eq!(receiver.len(), 1);
        assert_eq!(receiver.try_recv(), Ok(1));
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn values_left_in_the_channel_are_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        {
            let (sender, receiver) = channel(4);
            for _ in 0..3 {
                sender.try_send(DropCounter(Arc::clone(&drops))).unwrap();
            }
            drop(receiver);
            assert_eq!(drops.load(Ordering::SeqCst), 3, "dropped with the receiver");
            // A send after the receiver's drop gives the value back.
            let error = sender
                .try_send(DropCounter(Arc::clone(&drops)))
                .unwrap_err();
            drop(error);
            assert_eq!(drops.load(Ordering::SeqCst), 4);
        }
        {
            let (sender, receiver) = unbounded_channel();
            for _ in 0..3 {
                sender.send(DropCounter(Arc::clone(&drops))).unwrap();
            }
            // Senders gone first: the values stay until the receiver goes.
            drop(sender);
            assert_eq!(drops.load(Ordering::SeqCst), 4);
            drop(receiver);
        }
        assert_eq!(drops.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn unbounded_send_grows_and_fails_once_the_receiver_is_gone() {
        let (sender, mut receiver) = unbounded_channel();
        let (waker, wakes) = CountingWaker::new();
        let mut recv = receiver.recv();
        assert!(poll_once(&mut recv, &waker).is_pending());
        for value in 0..40 {
            sender.send(value).unwrap();
        }
        assert_eq!(wakes.get(), 1);
        for value in 0..40 {
            assert_eq!(receiver.try_recv(), Ok(value));
        }
        let second = sender.clone();
        assert!(second.same_channel(&sender));
        drop(receiver);
        assert!(sender.is_closed());
        assert_eq!(second.send(41), Err(SendError(41)));
    }

    #[test]
    fn a_repolled_recv_wakes_only_the_latest_waker() {
        let (sender, mut receiver) = unbounded_channel();
        let (old, old_wakes) = CountingWaker::new();
        let (new, new_wakes) = CountingWaker::new();
        let mut recv = receiver.recv();
        assert!(poll_once(&mut recv, &old).is_pending());
        assert!(poll_once(&mut recv, &new).is_pending());
        sender.send(()).unwrap();
        assert_eq!((old_wakes.get(), new_wakes.get()), (0, 1));
    }

    #[test]
    fn a_sender_on_another_thread_meets_a_full_buffer() {
        let (sender, mut receiver) = channel(1);
        let producer = std::thread::spawn(move || {
            let (waker, _) = CountingWaker::new();
            for value in 0..4 {
                let mut send = sender.send(value);
                while poll_once(&mut send, &waker).is_pending() {
                    std::thread::yield_now();
                }
            }
        });
        let (waker, _) = CountingWaker::new();
        let mut received = Vec::new();
        loop {
            match poll_once(&mut receiver.recv(), &waker) {
                Poll::Ready(Some(value)) => received.push(value),
                Poll::Ready(None) => break,
                Poll::Pending => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(received, [0, 1, 2, 3]);
    }

    /// A value that holds a sender of its own channel: dropping it takes the channel's
    /// lock.
    struct HoldsSender(#[allow(dead_code)] Option<Sender<HoldsSender>>);

    /// A send on a full channel polled with a waker whose clone takes the channel's lock
    /// and then panics: the clone is made before the lock, so neither the clone nor the
    /// unwinding (which, with the clone under the lock, dropped the value, whose
    /// `Sender` takes the lock again: a self-deadlock miri reports) runs under the lock,
    /// and the value stays in the future.
    #[test]
    fn a_waker_clone_that_panics_runs_no_user_code_under_the_lock() {
        let (sender, mut receiver) = channel::<HoldsSender>(1);
        sender.try_send(HoldsSender(None)).unwrap();
        let mut send = sender.send(HoldsSender(Some(sender.clone())));
        with_clone_hook(&|| assert!(!sender.is_closed()), |waker| {
            let message = expect_panic(|| drop(poll_once(&mut send, waker)));
            assert_eq!(message, "a waker's clone panics on purpose");
            // `closed()`'s poll too.
            expect_panic(|| {
                let _ = poll_once(&mut sender.closed(), waker);
            });
        });
        // And the receiver's (on an empty channel).
        let (empty_sender, mut empty_receiver) = channel::<u8>(1);
        with_clone_hook(&|| assert!(!empty_sender.is_closed()), |waker| {
            expect_panic(|| {
                let _ = poll_once(&mut empty_receiver.recv(), waker);
            });
        });
        assert!(send.value.is_some(), "the value stays in the future");
        assert_eq!(receiver.chan.lock().send_waiters.len(), 0);
        // The channel still works: the buffered value out, the waiting one in.
        assert!(receiver.try_recv().is_ok());
        let (waker, _) = CountingWaker::new();
        assert!(matches!(poll_once(&mut send, &waker), Poll::Ready(Ok(()))));
        drop(send);
        assert!(receiver.try_recv().is_ok());
    }

    /// A waker that panics when the receiver's drop wakes it: every other waiting
    /// sender and `closed()` future is woken all the same, the buffered values are
    /// dropped, and the panic comes out of the drop only then.
    #[test]
    fn a_waker_that_panics_when_woken_does_not_stop_the_other_wake_ups() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (sender, receiver) = channel(1);
        sender.try_send(DropCounter(Arc::clone(&drops))).unwrap();
        let mut a = sender.send(DropCounter(Arc::clone(&drops)));
        let mut b = sender.send(DropCounter(Arc::clone(&drops)));
        let mut c = sender.send(DropCounter(Arc::clone(&drops)));
        let mut closed = sender.closed();
        let (waker_b, wakes_b) = CountingWaker::new();
        let (waker_closed, wakes_closed) = CountingWaker::new();
        assert!(poll_once(&mut a, &PanicsOnWake::waker()).is_pending());
        assert!(poll_once(&mut b, &waker_b).is_pending());
        assert!(poll_once(&mut c, &PanicsOnWake::waker()).is_pending());
        assert!(poll_once(&mut closed, &waker_closed).is_pending());
        let message = expect_panic(|| drop(receiver));
        assert_eq!(message, "a waker panics on purpose when woken");
        assert_eq!((wakes_b.get(), wakes_closed.get()), (1, 1));
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the buffered value dropped"
        );
        assert!(matches!(poll_once(&mut b, &waker_b), Poll::Ready(Err(_))));
        assert!(poll_once(&mut closed, &waker_closed).is_ready());
    }
}
