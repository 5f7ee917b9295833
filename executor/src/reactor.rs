//! The reactor half of a worker: readiness bookkeeping for registered sockets.
//!
//! Each worker owns a `mio::Poll`. A socket registers once, edge-triggered, for both
//! reads and writes, under a token that indexes the worker's [`IoTable`]. The table
//! entry is an [`IoState`]: two "ready" flags and two wakers behind a short mutex (a
//! socket may be used from a task on another worker, so the state is shared).
//!
//! Readiness protocol, per direction: the task tries the operation; on `WouldBlock` it
//! locks the state and, if an event arrived meanwhile (`ready` set), clears the flag and
//! retries, otherwise stores its waker and returns `Pending`. The worker sets `ready` and
//! takes the waker under the same lock. An event can therefore never fall between the
//! failed attempt and the waker being stored (no lost wake-ups); the price of a stale
//! `ready` flag is one extra system call.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use mio::event::Source;
use mio::{Interest, Token};

use crate::worker::{WorkerShared, current_shared};

/// Which half of a socket an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Reading, accepting.
    Read,
    /// Writing, connecting.
    Write,
}

#[derive(Debug, Default)]
struct Readiness {
    read_ready: bool,
    write_ready: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

/// Readiness of one registered socket; see the module docs for the protocol.
#[derive(Debug, Default)]
pub(crate) struct IoState {
    readiness: Mutex<Readiness>,
}

impl IoState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Readiness> {
        // The guarded data is plain flags; a panic elsewhere cannot leave it inconsistent.
        self.readiness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records an event and wakes the tasks waiting for it.
    pub(crate) fn on_event(&self, readable: bool, writable: bool) {
        let (read_waker, write_waker) = {
            let mut readiness = self.lock();
            readiness.read_ready |= readable;
            readiness.write_ready |= writable;
            let read = if readable {
                readiness.read_waker.take()
            } else {
                None
            };
            let write = if writable {
                readiness.write_waker.take()
            } else {
                None
            };
            (read, write)
        };
        if let Some(waker) = read_waker {
            waker.wake();
        }
        if let Some(waker) = write_waker {
            waker.wake();
        }
    }
}

/// Token-indexed table of the sockets registered with one worker's `Poll`.
#[derive(Debug, Default)]
pub(crate) struct IoTable {
    entries: Vec<Option<Arc<IoState>>>,
    free: Vec<usize>,
}

impl IoTable {
    fn insert(&mut self, state: Arc<IoState>) -> usize {
        if let Some(index) = self.free.pop() {
            self.entries[index] = Some(state);
            index
        } else {
            self.entries.push(Some(state));
            self.entries.len() - 1
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(entry) = self.entries.get_mut(index) {
            if entry.take().is_some() {
                self.free.push(index);
            }
        }
    }

    /// The state registered under `token`, if any. A token whose socket went away yields
    /// `None`, or the state of a later socket that reused the index: a spurious event,
    /// which the readiness protocol absorbs.
    pub(crate) fn get(&self, token: usize) -> Option<&Arc<IoState>> {
        self.entries.get(token)?.as_ref()
    }

    /// Registered sockets.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

/// A socket's registration with the worker it was created on. Deregister before drop.
#[derive(Debug)]
pub(crate) struct Registration {
    worker: Arc<WorkerShared>,
    token: usize,
    state: Arc<IoState>,
}

impl Registration {
    /// Registers `source` with the current thread's worker.
    ///
    /// # Errors
    /// Outside a worker thread (an [`io::ErrorKind::Other`] error saying so), or when
    /// `epoll_ctl` fails.
    pub(crate) fn new<S: Source + ?Sized>(source: &mut S) -> io::Result<Self> {
        let worker = current_shared().ok_or_else(|| {
            io::Error::other("sockets must be created on an executor worker thread")
        })?;
        let state = Arc::new(IoState::default());
        let token = worker.io_table().insert(Arc::clone(&state));
        if let Err(error) = worker.registry().register(
            source,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            worker.io_table().remove(token);
            return Err(error);
        }
        Ok(Self {
            worker,
            token,
            state,
        })
    }

    /// Removes `source` from the worker's `Poll` and frees the token.
    pub(crate) fn deregister<S: Source + ?Sized>(&self, source: &mut S) {
        // Failure means the descriptor is already gone from epoll; nothing to undo.
        let _ = self.worker.registry().deregister(source);
        self.worker.io_table().remove(self.token);
    }

    /// Runs `operation` until it stops failing with `WouldBlock`, or parks the task
    /// until the next event in `direction` (see the module docs).
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut operation: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match operation() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    let mut readiness = self.state.lock();
                    let readiness = &mut *readiness;
                    let (ready, waker) = match direction {
                        Direction::Read => (&mut readiness.read_ready, &mut readiness.read_waker),
                        Direction::Write => {
                            (&mut readiness.write_ready, &mut readiness.write_waker)
                        }
                    };
                    if *ready {
                        *ready = false;
                        continue;
                    }
                    match waker {
                        Some(stored) if stored.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                result => return Poll::Ready(result),
            }
        }
    }
}
