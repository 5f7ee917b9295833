//! [`JoinHandle`]: the result of a spawned task, delivered across threads.
//!
//! The task and its handle share one small record (mutex: result slot + waker). The
//! task fills it when it finishes, panics (the panic is caught at the poll and carried
//! as [`JoinError::Panicked`]) or is dropped unfinished at runtime shutdown
//! ([`JoinError::Cancelled`]). Dropping the handle detaches the task.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Why a task produced no value.
pub enum JoinError {
    /// The task panicked; the payload is what it panicked with.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The runtime shut down before the task finished.
    Cancelled,
    /// There was no memory to store the task; it never ran.
    OutOfMemory,
}

impl JoinError {
    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(_) => f.write_str("JoinError::Panicked(..)"),
            Self::Cancelled => f.write_str("JoinError::Cancelled"),
            Self::OutOfMemory => f.write_str("JoinError::OutOfMemory"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(_) => f.write_str("task panicked"),
            Self::Cancelled => f.write_str("task cancelled by runtime shutdown"),
            Self::OutOfMemory => f.write_str("no memory to store the task; it never ran"),
        }
    }
}

impl std::error::Error for JoinError {}

struct Slot<T> {
    result: Option<Result<T, JoinError>>,
    waker: Option<Waker>,
    /// The result was taken by the handle.
    taken: bool,
}

/// Shared between a task and its [`JoinHandle`].
pub(crate) struct JoinState<T> {
    slot: Mutex<Slot<T>>,
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::new(Slot {
                result: None,
                waker: None,
                taken: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        crate::sync::lock(&self.slot)
    }

    /// Records the outcome (the first one wins) and wakes the handle.
    pub(crate) fn complete(&self, result: Result<T, JoinError>) {
        let waker = {
            let mut slot = self.lock();
            if slot.result.is_some() || slot.taken {
                return;
            }
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Owned permission to await a spawned task's output. Dropping it detaches the task.
#[must_use = "dropping a JoinHandle detaches the task; await it to get its output"]
pub struct JoinHandle<T> {
    state: Arc<JoinState<T>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(state: Arc<JoinState<T>>) -> Self {
        Self { state }
    }

    /// Whether the task has finished (its output is waiting to be taken).
    pub fn is_finished(&self) -> bool {
        let slot = self.state.lock();
        slot.result.is_some() || slot.taken
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.state.lock();
        if let Some(result) = slot.result.take() {
            slot.taken = true;
            return Poll::Ready(result);
        }
        assert!(!slot.taken, "JoinHandle polled after completion");
        match &slot.waker {
            Some(stored) if stored.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
