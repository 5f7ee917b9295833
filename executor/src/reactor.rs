//! The reactor half of a worker: readiness bookkeeping for registered sockets.
//!
//! Each worker owns a `mio::Poll`. A socket registers once, edge-triggered, for both
//! reads and writes, under a token that indexes the worker's [`IoTable`]. The table
//! entry is an [`IoState`]: one atomic word of readiness (a read bit, a write bit and an
//! event counter) and the waiting tasks of each direction behind a short mutex (a socket may be used from a task
//! on another worker, so the state is shared).
//!
//! Readiness protocol, per direction. The worker, on an event, sets the direction's bit
//! and bumps the counter, then takes every stored waker and wakes it once the I/O table
//! is unlocked (several tasks may
//! wait on one direction, for example two tasks reading one shared stream; none is
//! ever replaced by another). A task whose bit is set
//! tries the operation; when the operation shows the socket drained (`WouldBlock`, or a
//! read or write shorter than asked) it clears the bit, but only if the counter still
//! has the value it saw before the operation, so an event that arrived meanwhile is
//! never lost. A task whose bit is clear stores its waker under the mutex (cloned before
//! the mutex is taken: a clone is user code, which may re-enter the socket) and then
//! re-reads the bits: either it sees an event that raced with it and retries, or the
//! worker (which sets bits before locking) finds the waker. The short-read rule saves
//! the `WouldBlock` system call that would otherwise end every read. "Closed" bits
//! (peer hung up, socket error) are sticky: once set, operations always run, so an end
//! of stream that arrived with the last data is seen even after a short read.
//!
//! When the worker exits (its runtime dropped, or its loop died), no event will ever
//! come: it sets the sticky "driver gone" bit of every socket still registered and
//! wakes all their waiters. A task that then finds its direction not ready fails with
//! an error instead of waiting for ever (a socket that is still ready, or closed, keeps
//! working until it would block), as tokio's sockets do once their driver is gone. The
//! bit is only read on the way to waiting, so a ready socket pays nothing for it.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

impl Direction {
    /// The readiness bit an operation clears when it finds the socket drained.
    fn bit(self) -> usize {
        match self {
            Self::Read => READ_READY,
            Self::Write => WRITE_READY,
        }
    }

    /// The bits that let an operation run: ready, or closed (sticky).
    fn runnable(self) -> usize {
        match self {
            Self::Read => READ_READY | READ_CLOSED,
            Self::Write => WRITE_READY | WRITE_CLOSED,
        }
    }
}

const READ_READY: usize = 1;
const WRITE_READY: usize = 2;
/// Sticky: the peer closed its half, or the socket has an error. Not cleared by a short
/// read, because with edge-triggered events a short read that leaves a pending end of
/// stream behind would otherwise wait for an event that never comes; only `WouldBlock`
/// (proof that nothing is pending) clears it.
const READ_CLOSED: usize = 4;
/// Sticky, like [`READ_CLOSED`], for writes.
const WRITE_CLOSED: usize = 8;
/// Sticky: the worker this socket is registered with has exited, so no event will come;
/// an operation that would wait fails instead (see the module docs).
const DRIVER_GONE: usize = 16;
/// The event counter lives above the readiness bits.
const TICK: usize = 32;

/// The error of an operation that would wait on a socket whose worker has exited.
fn driver_gone_error() -> io::Error {
    io::Error::other(
        "the runtime that registered this socket has shut down: no readiness event will come",
    )
}

/// What an operation tells the readiness protocol about the socket.
#[derive(Debug)]
pub(crate) enum Outcome<R> {
    /// Done; the socket may have more (keep the readiness bit).
    More(R),
    /// Done, and the socket is drained for now (clear the bit, event counter allowing).
    Drained(R),
}

/// What one readiness event says about a socket, decoded from a `mio` event or, for
/// events taken from a peer worker's `epoll` instance directly (see `worker`), from
/// the raw `epoll` flags as `mio` decodes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// Data (or a connection to accept) may be read.
    pub(crate) readable: bool,
    /// Data may be written (or a connection completed).
    pub(crate) writable: bool,
    /// The peer closed its writing half, or hung up.
    pub(crate) read_closed: bool,
    /// The socket can no longer be written to (hung up, or an error).
    pub(crate) write_closed: bool,
    /// The socket has an error pending.
    pub(crate) error: bool,
}

impl Readiness {
    /// The readiness a `mio` event reports.
    pub(crate) fn of(event: &mio::event::Event) -> Self {
        Self {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            write_closed: event.is_write_closed(),
            error: event.is_error(),
        }
    }
}

/// Most wakers one direction keeps besides its first; registering one more wakes the
/// oldest (a spurious wake-up, which it tolerates: it registers again when polled).
const MAX_EXTRA_WAITERS: usize = 32;

/// The tasks waiting for one direction of a socket. Any number of tasks may wait: each
/// registration adds its waker unless an equal one is already there, and an event
/// wakes them all. The usual single waiter lives in `first` and costs no allocation.
#[derive(Debug, Default)]
struct Waiters {
    first: Option<Waker>,
    /// Further waiters (two tasks reading one stream, say); rarely used.
    rest: Vec<Waker>,
}

/// What [`Waiters::install`] leaves the caller to do once the lock is released (waking
/// and dropping a waker run its code).
#[derive(Debug)]
enum Installed {
    /// The waker is stored.
    Stored,
    /// The waker is stored, and this one, the oldest extra waiter, was evicted to keep
    /// the list bounded: wake it (a spurious wake-up: it registers again when polled).
    Evicted(Waker),
    /// An equal waker was there already: drop this one.
    Duplicate(Waker),
}

impl Waiters {
    /// Adds `waker`, a clone the caller made with no lock held, unless an equal one is
    /// there already. Runs no user code: [`Waker::will_wake`] compares the wakers'
    /// data and vtable pointers.
    fn install(&mut self, waker: Waker) -> Installed {
        let Some(first) = &self.first else {
            self.first = Some(waker);
            return Installed::Stored;
        };
        if first.will_wake(&waker) || self.rest.iter().any(|stored| stored.will_wake(&waker)) {
            return Installed::Duplicate(waker);
        }
        let evicted = if self.rest.len() >= MAX_EXTRA_WAITERS {
            Some(self.rest.remove(0))
        } else {
            None
        };
        // Reactor state outlives any request: never grow it inside a request's arena.
        pagekeep_arena::outside_arena(|| self.rest.push(waker));
        evicted.map_or(Installed::Stored, Installed::Evicted)
    }

    /// Takes every waiter, leaving the list empty.
    fn take(&mut self) -> Waiters {
        Waiters {
            first: self.first.take(),
            rest: std::mem::take(&mut self.rest),
        }
    }

    /// Moves every waiter onto `wakers`, for the caller to wake.
    fn move_into(self, wakers: &mut Vec<Waker>) {
        wakers.extend(self.first);
        wakers.extend(self.rest);
    }
}

#[derive(Debug, Default)]
struct Wakers {
    read: Waiters,
    write: Waiters,
}

/// Readiness of one registered socket; see the module docs for the protocol.
#[derive(Debug)]
pub(crate) struct IoState {
    /// `READ_READY | WRITE_READY` bits plus an event counter in units of `TICK`.
    readiness: AtomicUsize,
    wakers: Mutex<Wakers>,
}

impl IoState {
    fn new() -> Self {
        // Optimistically ready: the first operation is simply tried.
        Self {
            readiness: AtomicUsize::new(READ_READY | WRITE_READY),
            wakers: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wakers> {
        // The guarded data is two `Option<Waker>`s; a panic cannot leave them torn.
        crate::sync::lock(&self.wakers)
    }

    /// Records an event and pushes the wakers of the tasks waiting for it onto
    /// `wakers`, for the caller to wake once no lock is held (a waker is user code: it
    /// may panic, or drop a socket, which locks the I/O table).
    pub(crate) fn on_event(&self, event: Readiness, wakers: &mut Vec<Waker>) {
        let mut bits = 0;
        if event.readable {
            bits |= READ_READY;
        }
        if event.writable {
            bits |= WRITE_READY;
        }
        if event.read_closed || event.error {
            bits |= READ_READY | READ_CLOSED;
        }
        if event.write_closed || event.error {
            bits |= WRITE_READY | WRITE_CLOSED;
        }
        if bits == 0 {
            return;
        }
        let readable = bits & READ_READY != 0;
        let writable = bits & WRITE_READY != 0;
        // Bits first, then the lock: see the module docs.
        let _ = self
            .readiness
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some((current | bits).wrapping_add(TICK))
            });
        let (read_waiters, write_waiters) = {
            let mut wakers = self.lock();
            let read = if readable {
                wakers.read.take()
            } else {
                Waiters::default()
            };
            let write = if writable {
                wakers.write.take()
            } else {
                Waiters::default()
            };
            (read, write)
        };
        // Outside the lock: a waker is user code. The lists, and `wakers` if it grows,
        // are freed and allocated outside any request's arena, where they belong.
        pagekeep_arena::outside_arena(|| {
            read_waiters.move_into(wakers);
            write_waiters.move_into(wakers);
        });
    }

    /// Marks the socket's worker as gone (see the module docs) and pushes the wakers of
    /// every waiting task onto `wakers`, for the caller to wake (so that each sees the
    /// error) once no lock is held.
    fn driver_gone(&self, wakers: &mut Vec<Waker>) {
        // Bit first, then the lock, as for events: a task that registers its waker
        // after we took the waiters re-reads the bits and sees this one.
        self.readiness.fetch_or(DRIVER_GONE, Ordering::AcqRel);
        let (read, write) = {
            let mut waiters = self.lock();
            (waiters.read.take(), waiters.write.take())
        };
        pagekeep_arena::outside_arena(|| {
            read.move_into(wakers);
            write.move_into(wakers);
        });
    }

    /// Stores `waker` as a waiter for `direction` (see [`Waiters`]). It is cloned
    /// before the lock is taken and the evicted or duplicate waker is woken or dropped
    /// after it is released: a waker's clone, wake and drop are user code, which may
    /// re-enter this socket (register, or wake it) or panic, and must neither deadlock
    /// nor poison the lock. A task waker's clone and drop cost nothing; the usual single
    /// waiter allocates nothing. The caller re-reads the readiness bits afterwards (see
    /// the module docs).
    fn park(&self, direction: Direction, waker: &Waker) {
        let waker = waker.clone();
        let installed = {
            let mut wakers = self.lock();
            let waiters = match direction {
                Direction::Read => &mut wakers.read,
                Direction::Write => &mut wakers.write,
            };
            waiters.install(waker)
        };
        match installed {
            Installed::Stored => {}
            Installed::Evicted(evicted) => evicted.wake(),
            Installed::Duplicate(duplicate) => drop(duplicate),
        }
    }

    /// Clears `bits` unless an event arrived since `seen` was read.
    fn clear(&self, bits: usize, seen: usize) {
        let _ = self.readiness.compare_exchange(
            seen,
            seen & !bits,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
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
        if let Some(entry) = self.entries.get_mut(index)
            && entry.take().is_some()
        {
            self.free.push(index);
        }
    }

    /// The state registered under `token`, if any. A token whose socket went away yields
    /// `None`, or the state of a later socket that reused the index: a spurious event,
    /// which the readiness protocol absorbs.
    pub(crate) fn get(&self, token: usize) -> Option<&Arc<IoState>> {
        self.entries.get(token)?.as_ref()
    }

    /// The state of every registered socket, for [`shut_down`].
    fn live_states(&self) -> Vec<Arc<IoState>> {
        self.entries.iter().flatten().cloned().collect()
    }

    /// Registered sockets.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }
}

/// Tells every socket still registered in `table` that its worker has exited:
/// operations that would wait fail (see the module docs), and the wakers of their
/// waiting tasks are pushed onto `wakers`, for the caller to wake (each may panic: the
/// worker wakes them one by one, see `worker`). Called once by the worker thread on
/// its way out, when no task of its own is left.
pub(crate) fn shut_down(table: &Mutex<IoTable>, wakers: &mut Vec<Waker>) {
    // Copied out so that the states drop outside the table's lock.
    let states = pagekeep_arena::outside_arena(|| crate::sync::lock(table).live_states());
    for state in states {
        state.driver_gone(wakers);
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
        Self::with_worker(worker, source)
    }

    /// Registers `source` with `worker`'s `Poll`.
    ///
    /// # Errors
    /// When `epoll_ctl` fails.
    pub(crate) fn with_worker<S: Source + ?Sized>(
        worker: Arc<WorkerShared>,
        source: &mut S,
    ) -> io::Result<Self> {
        // The registration and the I/O table outlive any request: a socket opened by a
        // handler is registered outside the request's arena.
        let state = pagekeep_arena::outside_arena(|| Arc::new(IoState::new()));
        let token = pagekeep_arena::outside_arena(|| worker.io_table().insert(Arc::clone(&state)));
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

    /// Runs `operation` when the socket may be ready, until it stops failing with
    /// `WouldBlock`, or parks the task until the next event in `direction` (see the
    /// module docs).
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut operation: impl FnMut() -> io::Result<Outcome<R>>,
    ) -> Poll<io::Result<R>> {
        let state = &*self.state;
        loop {
            let seen = state.readiness.load(Ordering::Acquire);
            if seen & direction.runnable() == 0 {
                if seen & DRIVER_GONE != 0 {
                    return Poll::Ready(Err(driver_gone_error()));
                }
                state.park(direction, cx.waker());
                let now = state.readiness.load(Ordering::Acquire);
                if now & direction.runnable() == 0 {
                    if now & DRIVER_GONE != 0 {
                        return Poll::Ready(Err(driver_gone_error()));
                    }
                    return Poll::Pending;
                }
                continue;
            }
            // Asked only when the operation is about to run (a poll that finds the socket
            // not ready costs nothing); with the task's budget spent, the socket is left
            // as it is for the next poll. `WouldBlock` gives the unit back.
            let coop = std::task::ready!(crate::coop::poll_proceed(cx));
            match operation() {
                Ok(Outcome::More(result)) => {
                    coop.made_progress();
                    return Poll::Ready(Ok(result));
                }
                Ok(Outcome::Drained(result)) => {
                    state.clear(direction.bit(), seen);
                    coop.made_progress();
                    return Poll::Ready(Ok(result));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    // `WouldBlock` proves the socket neither ready nor closed: clear the
                    // sticky bit too, so that a stray closed bit can never make this
                    // loop spin.
                    state.clear(direction.runnable(), seen);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    coop.made_progress();
                    return Poll::Ready(Err(error));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counter(AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every distinct waiter is kept (an equal waker once), all are woken, and the
    /// list stays bounded by waking the oldest early.
    #[test]
    fn waiters_keep_every_task_once_and_stay_bounded() {
        let counters: Vec<_> = (0..MAX_EXTRA_WAITERS + 3)
            .map(|_| Arc::new(Counter(AtomicUsize::new(0))))
            .collect();
        let wakers: Vec<Waker> = counters
            .iter()
            .map(|counter| Waker::from(Arc::clone(counter)))
            .collect();
        let mut waiters = Waiters::default();
        let mut register = |waker: &Waker| match waiters.install(waker.clone()) {
            Installed::Stored => None,
            Installed::Evicted(evicted) => Some(evicted),
            Installed::Duplicate(_) => None,
        };
        assert!(register(&wakers[0]).is_none());
        assert!(
            register(&wakers[0]).is_none(),
            "an equal waker is kept once"
        );
        assert!(register(&wakers[1]).is_none());
        assert!(register(&wakers[1]).is_none());
        for waker in &wakers[2..=MAX_EXTRA_WAITERS] {
            assert!(register(waker).is_none());
        }
        // One more than the bound: the oldest extra waiter is handed back to be woken.
        let evicted = register(&wakers[MAX_EXTRA_WAITERS + 1]).expect("evicted");
        assert_eq!(waiters.rest.len(), MAX_EXTRA_WAITERS);
        // (Which waker it is shows in the counts: `will_wake` compares vtable
        // addresses, which miri does not keep equal between a waker and its clone.)
        evicted.wake();
        assert_eq!(
            counters[1].0.load(Ordering::Relaxed),
            1,
            "the oldest extra one"
        );
        let mut taken = Vec::new();
        waiters.take().move_into(&mut taken);
        taken.into_iter().for_each(Waker::wake);
        let woken: Vec<_> = counters
            .iter()
            .map(|counter| counter.0.load(Ordering::Relaxed))
            .collect();
        assert!(
            woken[..=MAX_EXTRA_WAITERS + 1]
                .iter()
                .all(|count| *count == 1),
            "{woken:?}"
        );
        assert_eq!(woken[MAX_EXTRA_WAITERS + 2], 0, "never registered");
        assert!(waiters.first.is_none() && waiters.rest.is_empty());
    }

    /// A waker whose clone is user code that re-enters the socket it is being
    /// registered with: it notes whether the socket's waiter lock is held during the
    /// clone, then (the lock being free; on a held one it would deadlock) registers
    /// `other` for the same direction, or panics.
    struct Reentrant {
        state: Arc<IoState>,
        other: Waker,
        clone_panics: bool,
        clones: AtomicUsize,
        lock_held_during_clone: std::sync::atomic::AtomicBool,
        woken: AtomicUsize,
    }

    static REENTRANT: std::task::RawWakerVTable = std::task::RawWakerVTable::new(
        reentrant_clone,
        reentrant_wake,
        reentrant_wake_by_ref,
        reentrant_drop,
    );

    /// A waker on `probe`: its data pointer is an `Arc<Reentrant>` strong count, one
    /// per waker, given back by `reentrant_wake` and `reentrant_drop`.
    fn reentrant_waker(probe: Arc<Reentrant>) -> Waker {
        let data = Arc::into_raw(probe).cast::<()>();
        // SAFETY: the vtable's functions take `data` for what it is, a pointer from
        // `Arc::into_raw` that owns one strong count of a live `Reentrant` (which is
        // `Send + Sync`); each clone takes a count of its own, and wake or drop gives it
        // back exactly once.
        unsafe { Waker::from_raw(std::task::RawWaker::new(data, &REENTRANT)) }
    }

    /// # Safety
    /// `data` comes from a waker of [`reentrant_waker`] that is still alive.
    unsafe fn reentrant_clone(data: *const ()) -> std::task::RawWaker {
        let probe = data.cast::<Reentrant>();
        // SAFETY: the waker being cloned owns a strong count, so the `Reentrant` lives
        // at least as long as this call.
        let reentrant = unsafe { &*probe };
        reentrant.clones.fetch_add(1, Ordering::SeqCst);
        let held = matches!(
            reentrant.state.wakers.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        );
        reentrant
            .lock_held_during_clone
            .fetch_or(held, Ordering::SeqCst);
        assert!(
            !reentrant.clone_panics,
            "a waker clone that panics on purpose"
        );
        if !held {
            reentrant.state.park(Direction::Read, &reentrant.other);
        }
        // SAFETY: `probe` comes from `Arc::into_raw` and its count is held (above); the
        // new count belongs to the clone made here.
        unsafe { Arc::increment_strong_count(probe) };
        std::task::RawWaker::new(data, &REENTRANT)
    }

    /// # Safety
    /// `data` comes from a waker of [`reentrant_waker`], whose count this call takes.
    unsafe fn reentrant_wake(data: *const ()) {
        // SAFETY: the waker being woken owns this count and gives it up here.
        let probe = unsafe { Arc::from_raw(data.cast::<Reentrant>()) };
        probe.woken.fetch_add(1, Ordering::SeqCst);
    }

    /// # Safety
    /// `data` comes from a waker of [`reentrant_waker`] that is still alive.
    unsafe fn reentrant_wake_by_ref(data: *const ()) {
        // SAFETY: the waker owns a count and outlives this call.
        let probe = unsafe { &*data.cast::<Reentrant>() };
        probe.woken.fetch_add(1, Ordering::SeqCst);
    }

    /// # Safety
    /// `data` comes from a waker of [`reentrant_waker`], whose count this call takes.
    unsafe fn reentrant_drop(data: *const ()) {
        // SAFETY: the waker being dropped owns this count and gives it up here.
        drop(unsafe { Arc::from_raw(data.cast::<Reentrant>()) });
    }

    fn reentrant(state: &Arc<IoState>, other: Waker, clone_panics: bool) -> Arc<Reentrant> {
        Arc::new(Reentrant {
            state: Arc::clone(state),
            other,
            clone_panics,
            clones: AtomicUsize::new(0),
            lock_held_during_clone: std::sync::atomic::AtomicBool::new(false),
            woken: AtomicUsize::new(0),
        })
    }

    /// Takes every waiter of `state`, as the worker's exit does, and wakes them.
    fn wake_waiters(state: &IoState) -> usize {
        let mut wakers = Vec::new();
        state.driver_gone(&mut wakers);
        let count = wakers.len();
        wakers.into_iter().for_each(Waker::wake);
        count
    }

    /// A waker is cloned with the socket's waiter lock free: a clone that registers
    /// another waker on the same socket (user code may) neither deadlocks nor loses
    /// either registration, and both are woken. The clone used to run under the lock:
    /// such a waker deadlocked on it (the probe, seeing the lock held, records it
    /// instead).
    #[test]
    fn a_waker_whose_clone_reenters_the_socket_neither_deadlocks_nor_is_lost() {
        let state = Arc::new(IoState::new());
        let other = Arc::new(Counter(AtomicUsize::new(0)));
        let probe = reentrant(&state, Waker::from(Arc::clone(&other)), false);
        let waker = reentrant_waker(Arc::clone(&probe));
        state.park(Direction::Read, &waker);
        assert!(
            !probe.lock_held_during_clone.load(Ordering::SeqCst),
            "the waker was cloned with the socket's waiter lock held"
        );
        assert_eq!(probe.clones.load(Ordering::SeqCst), 1);
        // Registered again (a task polled twice): an equal waker is kept once.
        state.park(Direction::Read, &waker);
        assert_eq!(wake_waiters(&state), 2, "both wakers are stored, once each");
        assert_eq!(probe.woken.load(Ordering::SeqCst), 1);
        assert_eq!(other.0.load(Ordering::Relaxed), 1);
        drop(waker);
    }

    /// A waker whose clone panics leaves the socket as it was: the panic reaches the
    /// poller, the waiter lock is not poisoned, and later waiters are stored and woken.
    /// The clone used to panic with the lock held, poisoning it.
    #[test]
    fn a_waker_whose_clone_panics_leaves_the_socket_usable() {
        let state = Arc::new(IoState::new());
        let probe = reentrant(&state, Waker::noop().clone(), true);
        let waker = reentrant_waker(Arc::clone(&probe));
        let parked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.park(Direction::Read, &waker);
        }));
        assert!(parked.is_err(), "the clone's panic reaches the poller");
        assert!(
            !state.wakers.is_poisoned(),
            "the clone panicked with the waiter lock held"
        );
        let later = Arc::new(Counter(AtomicUsize::new(0)));
        state.park(Direction::Read, &Waker::from(Arc::clone(&later)));
        assert_eq!(wake_waiters(&state), 1);
        assert_eq!(later.0.load(Ordering::Relaxed), 1);
        assert_eq!(probe.woken.load(Ordering::SeqCst), 0);
        drop(waker);
    }

    /// A closed bit that turns out to be stale (the operation says `WouldBlock`) is
    /// cleared instead of making `poll_io` spin, and the task parks.
    #[test]
    #[cfg_attr(miri, ignore = "opens a socket, which miri cannot")]
    fn stray_closed_bit_parks_instead_of_spinning() {
        let runtime = crate::Runtime::builder().workers(1).build().unwrap();
        let attempts = runtime.block_on(async {
            let mut listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let registration = Registration::new(&mut listener).unwrap();
            registration
                .state
                .readiness
                .fetch_or(READ_CLOSED, Ordering::AcqRel);
            let mut attempts = 0;
            let mut cx = Context::from_waker(Waker::noop());
            let polled = registration.poll_io(&mut cx, Direction::Read, || {
                attempts += 1;
                listener.accept().map(Outcome::More)
            });
            assert!(polled.is_pending());
            registration.deregister(&mut listener);
            attempts
        });
        assert_eq!(attempts, 1);
    }
}
