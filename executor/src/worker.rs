//! Worker threads: one `mio::Poll`, one run queue and one timer heap each; the tasks
//! and the queues' stealing side are the runtime's [`Scheduler`].
//!
//! # Safety of the shared state
//! The run queue's owning end ([`Local`]) belongs to the worker thread and is reached
//! only through its thread-local context. What other threads touch is in
//! [`WorkerShared`]: the inbox of pinned spawns (see `inbox`),
//! the `mio::Waker` and `Registry` (thread-safe), the I/O table (mutex), and, for the
//! monitor when a task holds the worker (see `monitor`), the `Poll` and the timer heap
//! (mutexes; the owner holds the `Poll`'s across `epoll_wait`, the monitor and, except
//! on Linux, the other workers only `try_lock` it) and the start time of the current
//! turn (atomic). On Linux the other workers take events from the `Poll`'s `epoll`
//! instance through its descriptor, with no lock: the kernel serialises concurrent
//! `epoll_wait` calls on one instance and hands each event to one of them.
//!
//! # Loop
//! A turn polls up to [`POLLS_PER_TURN`] tasks (or for up to 1 ms of polls), each taken
//! from: the inbox (spawns aimed at this worker, one at a time), the worker's own
//! queue, a batch from the injector, a batch stolen from another worker. Then
//! `epoll_wait`: without waiting when the turn ran tasks; when it found none, the
//! worker collects the pending I/O events of the other workers (on Linux all of them,
//! elsewhere those still in a turn; see `WorkerShared::poll_events_for_peer`), lists
//! itself as sleeping, looks at every queue once more, and blocks until an event, a
//! wake or the next timer. Then it dispatches I/O events and fires due timers, until
//! told to stop.
//!
//! A socket's events arrive on the worker whose `Poll` registered it (or are taken from
//! it by a worker running out of tasks, or by the monitor while it is held), and wake
//! its task wherever that task runs now; a [`Sleep`](crate::Sleep) moves to the worker
//! that polls it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mio::{Events, Token};
use pagekeep_arena::outside_arena;

use crate::inbox::Inbox;
use crate::reactor::{IoTable, Readiness};
use crate::scheduler::Scheduler;
use crate::sync::lock;
use crate::task::store::{AfterPoll, TaskKey};
use crate::timer::TimerHeap;
use crate::waker::task_waker;

/// Token of the worker's `mio::Waker`; I/O tokens are table indices, far below it.
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Events fetched per `epoll_wait`.
const EVENT_CAPACITY: usize = 1024;
/// Task polls between two looks at I/O and timers while tasks are ready (tokio's
/// number: a prime, so that it does not beat with a task's own period).
pub(crate) const POLLS_PER_TURN: usize = 61;
/// Time after which a turn ends early (see the loop).
const TURN_TIME: Duration = Duration::from_millis(1);

/// The part of a worker that other threads reach. See the module `# Safety` notes.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    /// Index in the process-wide worker table.
    index: usize,
    /// Index in its runtime.
    local_index: usize,
    registry: mio::Registry,
    waker: mio::Waker,
    /// Keys of first polls aimed at this worker (see `inbox`).
    inbox: Inbox<TaskKey>,
    io: Mutex<IoTable>,
    stop: AtomicBool,
    /// The worker's loop panicked (a waker or the reactor failed; task polls and drops
    /// are contained and never get here): it takes no pinned work.
    dead: AtomicBool,
    /// Tasks this worker has polled (for tests and statistics).
    polls: AtomicU64,
    /// I/O events this worker collected from other workers' `Poll`s before blocking
    /// (for tests and statistics).
    peer_events: AtomicU64,
    /// The worker's `Poll`: its owner holds the lock in `epoll_wait`; the monitor
    /// takes it (`try_lock` only) to collect the events of a held worker, and, except
    /// on Linux, another worker running out of tasks to collect those of a worker in a
    /// turn.
    poll: Mutex<mio::Poll>,
    /// The descriptor of `poll`'s `epoll` instance, owned by `poll` (so open as long as
    /// this value lives). Another worker running out of tasks takes the pending events
    /// from it directly, with no lock (see [`Self::poll_events_for_peer`]).
    #[cfg(target_os = "linux")]
    epoll: std::os::fd::RawFd,
    /// The worker's timers. Its own thread inserts and fires; the monitor fires those
    /// of a held worker. Locked only briefly, never across a task poll.
    pub(crate) timers: Mutex<TimerHeap>,
    /// When the current turn started, in nanoseconds since the scheduler's epoch plus
    /// one; 0 while the worker is out of tasks (about to block or blocked). A turn
    /// older than [`HELD_AFTER`](crate::monitor::HELD_AFTER) means a task holds the
    /// worker (see `monitor`).
    turn_started: AtomicU64,
}

impl WorkerShared {
    pub(crate) fn registry(&self) -> &mio::Registry {
        &self.registry
    }

    pub(crate) fn io_table(&self) -> MutexGuard<'_, IoTable> {
        lock(&self.io)
    }

    /// Index of this worker in the process-wide table.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Tasks this worker has polled so far.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests only"))]
    pub(crate) fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// I/O events this worker collected from other workers' `Poll`s so far.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests only"))]
    pub(crate) fn peer_events(&self) -> u64 {
        self.peer_events.load(Ordering::Relaxed)
    }

    /// Makes the worker's `epoll_wait` return (now or at its next call).
    pub(crate) fn wake_poll(&self) {
        // A failed wake means the Poll is gone (worker exiting): nothing to do.
        let _ = self.waker.wake();
    }

    /// Hands the worker the key of a task whose first poll must run here (unless the
    /// worker has exited: then the key is given back).
    pub(crate) fn post(&self, key: TaskKey) -> Result<(), TaskKey> {
        let here = with_local(|local| std::ptr::eq(Arc::as_ptr(&local.shared), self));
        // The worker itself picks the key at its next pick: no wake.
        if self.inbox.post(key, here == Some(true))? {
            self.wake_poll();
        }
        Ok(())
    }

    /// Runtime index of this worker.
    pub(crate) fn local_index(&self) -> usize {
        self.local_index
    }

    /// When the worker's current turn started (in [`Scheduler::nanos`]), or `None` while
    /// it is out of tasks.
    pub(crate) fn turn_started(&self) -> Option<u64> {
        match self.turn_started.load(Ordering::Acquire) {
            0 => None,
            started => Some(started),
        }
    }

    /// Collects the pending I/O events of this worker's `Poll` without blocking and
    /// dispatches them (their tasks are woken wherever they run), unless the owner is
    /// using the `Poll` right now or has left the turn that started at `turn` (in
    /// [`Scheduler::nanos`]). For the monitor, on a held worker.
    ///
    /// A wake of the worker's own `mio::Waker` collected here is written again: the
    /// worker may have ended its turn meanwhile and be about to block, counting on it
    /// (a sleeper woken to take a key, see `Scheduler::notify_one`).
    ///
    /// The wakers of the tasks the events concern are pushed onto `wakers`, for the
    /// monitor to wake each under `catch_unwind` (as it does its timers' wakers).
    pub(crate) fn poll_events_for_owner(
        &self,
        turn: u64,
        events: &mut Events,
        wakers: &mut Vec<Waker>,
    ) {
        let Ok(mut poll) = self.poll.try_lock() else {
            return;
        };
        if self.turn_started() != Some(turn) {
            return;
        }
        let polled = poll.poll(events, Some(Duration::ZERO));
        drop(poll);
        if polled.is_ok() {
            self.dispatch(events, wakers);
            if events.iter().any(|event| event.token() == WAKER_TOKEN) {
                self.wake_poll();
            }
        }
    }

    /// Collects the pending I/O events of this worker's `Poll` without blocking and
    /// dispatches them (their tasks are woken on the calling thread: on another worker
    /// of the runtime they go to that worker's queue). For a peer worker about to
    /// block: the owner may be preempted by the kernel (woken from `epoll_wait` but not
    /// yet running, or in a turn), or held by a task, with its sockets' readiness
    /// waiting in its own `epoll` instance, which only it would otherwise collect.
    /// Returns how many events were collected.
    ///
    /// On Linux the events are taken from the owner's `epoll` instance directly, with
    /// no lock, even while the owner is blocked in (or was woken from and has not yet
    /// returned from) `epoll_wait` on it: the kernel hands each event to one caller, so
    /// an owner woken for events taken here finds none and waits on. Elsewhere the
    /// `Poll` is only `try_lock`ed, so an owner in `epoll_wait` (which holds the lock)
    /// keeps its events.
    ///
    /// A wake of the owner's `mio::Waker` collected here is written again (the owner
    /// may be about to block, counting on it). `taken` is scratch space; the wakers of
    /// the tasks concerned are pushed onto `wakers`, for the caller to wake with the
    /// I/O table unlocked.
    pub(crate) fn poll_events_for_peer(
        &self,
        events: &mut Events,
        taken: &mut Vec<(Token, Readiness)>,
        wakers: &mut Vec<Waker>,
    ) -> usize {
        taken.clear();
        if !self.take_pending_events(events, taken) {
            return 0;
        }
        self.dispatch_each(taken.iter().copied(), wakers);
        if taken.iter().any(|(token, _)| *token == WAKER_TOKEN) {
            self.wake_poll();
        }
        taken.len()
    }

    /// Moves the events pending in this worker's `epoll` instance to `taken`, with no
    /// lock and without waiting (see [`Self::poll_events_for_peer`]). Returns whether
    /// the call succeeded.
    #[cfg(target_os = "linux")]
    fn take_pending_events(
        &self,
        _events: &mut Events,
        taken: &mut Vec<(Token, Readiness)>,
    ) -> bool {
        // SAFETY: `self.epoll` is the descriptor of the `epoll` instance owned by
        // `self.poll`, which lives, and keeps it open, as long as `self` is borrowed.
        let epoll = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.epoll) };
        // Grown (rarely: it keeps its capacity) outside any request's arena.
        outside_arena(|| crate::sys::take_ready_events(epoll, taken)).is_ok()
    }

    /// Moves the events pending in this worker's `Poll` to `taken`, without waiting,
    /// unless the owner holds the `Poll` (see [`Self::poll_events_for_peer`]). Returns
    /// whether it could.
    #[cfg(not(target_os = "linux"))]
    fn take_pending_events(
        &self,
        events: &mut Events,
        taken: &mut Vec<(Token, Readiness)>,
    ) -> bool {
        let Ok(mut poll) = self.poll.try_lock() else {
            return false;
        };
        let polled = poll.poll(events, Some(Duration::ZERO));
        drop(poll);
        if polled.is_err() {
            return false;
        }
        outside_arena(|| {
            taken.extend(
                events
                    .iter()
                    .map(|event| (event.token(), Readiness::of(event))),
            );
        });
        true
    }

    /// Hands the events of this worker's `Poll` to their sockets' states, pushing the
    /// wakers of the tasks they concern onto `wakers`: the caller wakes them once the
    /// I/O table is unlocked (a waker may drop a socket, which locks it).
    fn dispatch(&self, events: &Events, wakers: &mut Vec<Waker>) {
        self.dispatch_each(
            events
                .iter()
                .map(|event| (event.token(), Readiness::of(event))),
            wakers,
        );
    }

    /// [`Self::dispatch`] for events given as (token, readiness).
    fn dispatch_each(
        &self,
        events: impl IntoIterator<Item = (Token, Readiness)>,
        wakers: &mut Vec<Waker>,
    ) {
        let table = self.io_table();
        for (token, readiness) in events {
            if token == WAKER_TOKEN {
                continue;
            }
            if let Some(state) = table.get(token.0) {
                state.on_event(readiness, wakers);
            }
        }
    }

    /// Moves the keys posted to this worker and not yet taken to `into` (the monitor
    /// requeues those of a held worker for others to run).
    pub(crate) fn take_posted_keys(&self, into: &mut Vec<TaskKey>) {
        self.inbox.take_all(into, false);
    }

    /// Whether the worker's loop died of a panic (see [`Worker::run`]).
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks a worker whose thread never started: refuses posts, like an exited one.
    pub(crate) fn abandon(&self) {
        self.inbox.close();
        self.dead.store(true, Ordering::Release);
    }

    /// Tells the worker to leave its loop.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.inbox.notify();
        self.wake_poll();
    }
}

/// Source of [`Local::id`]s.
static NEXT_WORKER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The worker-thread-only part of a worker.
#[derive(Debug)]
pub(crate) struct Local {
    /// Unique over the process's life, unlike the table index (which a later worker
    /// reuses): tells a [`Sleep`](crate::Sleep) whether its timer entry is in this
    /// worker's heap.
    pub(crate) id: u64,
    pub(crate) shared: Arc<WorkerShared>,
    pub(crate) scheduler: Arc<Scheduler>,
    /// The worker's runtime, for [`Handle::current`](crate::Handle::current).
    pub(crate) handle: crate::Handle,
    /// The owning end of this worker's run queue (FIFO); others steal from it.
    pub(crate) queue: crate::run_queue::Worker<TaskKey>,
    /// State of the xorshift that picks the first victim to steal from.
    random: Cell<u32>,
}

thread_local! {
    static CONTEXT: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// Runs `f` with the current thread's worker, or returns `None` off worker threads.
pub(crate) fn with_local<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    CONTEXT
        .try_with(|context| context.borrow().as_ref().map(|local| f(local)))
        .ok()
        .flatten()
}

/// The current thread's worker, shared part.
pub(crate) fn current_shared() -> Option<Arc<WorkerShared>> {
    with_local(|local| Arc::clone(&local.shared))
}

impl Local {
    /// The next task to poll: pinned, own queue, injector, another worker's queue.
    /// With `injector_first` (the first pick of each turn) the injector goes before
    /// the own queue, so that a worker whose queue never empties (a task that always
    /// yields, on a one-worker runtime) still takes what other threads spawn and wake.
    fn next_task(&self, injector_first: bool) -> Option<TaskKey> {
        if let Some(key) = self.shared.inbox.pop() {
            return Some(key);
        }
        if injector_first && let Some(key) = self.scheduler.steal_injected(&self.queue) {
            return Some(key);
        }
        if let Some(key) = self.queue.pop() {
            return Some(key);
        }
        if let Some(key) = self.scheduler.steal_injected(&self.queue) {
            return Some(key);
        }
        let count = self.scheduler.worker_count();
        if count < 2 {
            return None;
        }
        // xorshift32: a cheap spread of the first victim.
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random.set(x);
        self.scheduler
            .steal_from_others(self.shared.local_index, x as usize % count, &self.queue)
    }

    /// Collects the pending I/O events of the other workers of the runtime, pushing
    /// the wakers they concern onto `wakers`; returns how many events came. On Linux,
    /// those of every other worker: one blocked in `epoll_wait` may have been woken
    /// for them and not be running yet (see [`WorkerShared::poll_events_for_peer`]).
    /// Elsewhere only those of the workers in a turn: the others hold their `Poll`
    /// (blocked in `epoll_wait`) or are on their way to.
    fn collect_peer_events(
        &self,
        events: &mut Events,
        taken: &mut Vec<(Token, Readiness)>,
        wakers: &mut Vec<Waker>,
    ) -> usize {
        let mut collected = 0;
        for peer in self.scheduler.workers.iter() {
            if peer.local_index == self.shared.local_index
                || (!cfg!(target_os = "linux") && peer.turn_started().is_none())
            {
                continue;
            }
            collected += peer.poll_events_for_peer(events, taken, wakers);
        }
        collected
    }

    /// Polls task `key` if it is still scheduled (a stale key does nothing).
    fn run_task(&self, key: TaskKey) {
        let tasks = &self.scheduler.tasks;
        let Some(mut future) = tasks.start(key) else {
            return;
        };
        self.shared.polls.fetch_add(1, Ordering::Relaxed);
        let waker = task_waker(self.scheduler.home, key);
        let mut cx = Context::from_waker(&waker);
        // Each poll starts with a full cooperative budget (see `coop`); the thread is
        // unconstrained again between polls.
        let polled = crate::coop::with_budget(crate::coop::Budget::initial(), || {
            future.as_mut().poll(&mut cx)
        });
        match polled {
            Poll::Ready(()) => {
                // SAFETY: `future` came from `start(key)` just above; this ends that poll.
                unsafe { tasks.complete(key) };
                drop(future);
            }
            // SAFETY: as above.
            Poll::Pending => match unsafe { tasks.end_poll(key, future) } {
                AfterPoll::Idle => {}
                AfterPoll::Requeue => outside_arena(|| self.queue.push(key)),
                AfterPoll::Cancelled(future) => drop(future),
            },
        }
    }
}

/// A worker before its thread starts.
#[derive(Debug)]
pub(crate) struct Worker {
    shared: Arc<WorkerShared>,
    queue: crate::run_queue::Worker<TaskKey>,
}

impl Worker {
    /// Creates the `Poll` and the run queue of the runtime's worker `local_index`,
    /// which has worker-table entry `index`.
    pub(crate) fn new(index: usize, local_index: usize) -> std::io::Result<Self> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        #[cfg(target_os = "linux")]
        let epoll = std::os::fd::AsRawFd::as_raw_fd(&poll);
        let shared = Arc::new(WorkerShared {
            index,
            local_index,
            registry,
            waker,
            inbox: Inbox::default(),
            io: Mutex::default(),
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            peer_events: AtomicU64::new(0),
            #[cfg(target_os = "linux")]
            epoll,
            poll: Mutex::new(poll),
            timers: Mutex::new(TimerHeap::default()),
            turn_started: AtomicU64::new(0),
        });
        Ok(Self {
            shared,
            queue: crate::run_queue::Worker::new_fifo(),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<WorkerShared> {
        &self.shared
    }

    /// The stealing end of this worker's run queue.
    pub(crate) fn stealer(&self) -> crate::run_queue::Stealer<TaskKey> {
        self.queue.stealer()
    }

    /// The worker thread's body: installs the context, loops, then (at shutdown, or
    /// as the runtime's last worker) drops the tasks.
    pub(crate) fn run(mut self, scheduler: Arc<Scheduler>, handle: crate::Handle) {
        let local = Rc::new(Local {
            id: NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed),
            shared: Arc::clone(&self.shared),
            scheduler,
            handle,
            queue: std::mem::replace(&mut self.queue, crate::run_queue::Worker::new_fifo()),
            // Any odd seed does; the table index differs between workers.
            random: Cell::new(u32::try_from(self.shared.index).unwrap_or(0) * 2 + 0x9E37_79B9),
        });
        CONTEXT.with(|context| *context.borrow_mut() = Some(Rc::clone(&local)));
        // Task polls and drops contain their own panics; what still unwinds out of the
        // loop (a waker that panics, a failed `epoll_wait`) ends this worker, but not
        // silently: it is marked dead (the server hands it no more connections) and
        // its inbox closes; the other workers run its tasks.
        let looped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.event_loop(&local);
        }));
        if let Err(payload) = looped {
            self.shared.dead.store(true, Ordering::Release);
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic".to_owned());
            crate::sync::discard_panic(payload);
            eprintln!(
                "executor: worker {} died ({message}); the other workers take its tasks",
                self.shared.index
            );
        }
        let scheduler = &local.scheduler;
        scheduler.wake_up(self.shared.local_index);
        // Keys pinned here go to the others (or nowhere, at shutdown).
        let mut posted = Vec::new();
        self.shared.inbox.take_all(&mut posted, true);
        let own: Vec<TaskKey> = std::iter::from_fn(|| local.queue.pop()).collect();
        scheduler.requeue_orphans(posted.into_iter().chain(own));
        let last = scheduler.leave();
        // Shutdown (or the last worker gone): drop the tasks here, with this worker's
        // context installed (their destructors may deregister sockets or wake others).
        if last || scheduler.tasks.is_closed() {
            scheduler.drain();
        }
        // What the destructors woke here goes to the others too; from now on, wakes on
        // this thread go through the injector (the context is gone).
        let own: Vec<TaskKey> = std::iter::from_fn(|| local.queue.pop()).collect();
        scheduler.requeue_orphans(own);
        CONTEXT.with(|context| context.borrow_mut().take());
        // Sockets that outlive the worker (moved to another runtime, or kept by a task
        // elsewhere) will get no more events: their waiters are woken to fail instead of
        // waiting for ever.
        let mut orphaned = Vec::new();
        crate::reactor::shut_down(&self.shared.io, &mut orphaned);
        wake_each_on_exit(&mut orphaned);
        // Sleeps still in the heap belong to tasks elsewhere: woken, they re-register
        // with their own worker's heap.
        self.shared.turn_started.store(0, Ordering::Release);
        let mut orphaned = lock(&self.shared.timers).clear();
        wake_each_on_exit(&mut orphaned);
    }

    fn event_loop(&mut self, local: &Local) {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        // The wakers of the sockets' events and of the timers due at each look, reused.
        let mut due: Vec<Waker> = Vec::new();
        // The events taken from other workers' `epoll` instances, reused.
        let mut taken: Vec<(Token, Readiness)> = Vec::new();
        let me = self.shared.local_index;
        // Whether the last turn ended out of tasks (the worker then blocked, or could).
        let mut was_idle = true;
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                self.shared.turn_started.store(0, Ordering::Release);
                return;
            }
            let mut ran = 0;
            let mut full = false;
            let turn_start = Instant::now();
            // Compared with the clock after each poll: an `Instant` comparison, where
            // `elapsed()` subtracted two time stamps every poll (about 30 instructions
            // of a request's 9,200, callgrind).
            let turn_end = turn_start.checked_add(TURN_TIME);
            // Published for the monitor, which looks after a worker whose turn lasts
            // (see `monitor`); a worker coming out of idleness makes sure it watches.
            self.shared
                .turn_started
                .store(local.scheduler.nanos(turn_start), Ordering::Release);
            if was_idle {
                local.scheduler.turn_begun();
            }
            while ran < POLLS_PER_TURN {
                let Some(key) = local.next_task(ran == 0) else {
                    break;
                };
                local.run_task(key);
                ran += 1;
                // A turn also ends after `TURN_TIME` of polls (long handlers), so that
                // this worker's sockets, whose events only it collects, are not left
                // waiting behind a run of slow polls.
                if ran == POLLS_PER_TURN || turn_end.is_none_or(|end| Instant::now() >= end) {
                    full = true;
                    break;
                }
            }
            was_idle = !full;
            if !full {
                self.shared.turn_started.store(0, Ordering::Release);
            }
            if !full {
                // Out of tasks: before blocking, take the pending I/O events of the
                // other workers (see `WorkerShared::poll_events_for_peer`); the tasks
                // they wake land in this worker's queue.
                let collected = local.collect_peer_events(&mut events, &mut taken, &mut due);
                wake_all(&mut due);
                if collected != 0 {
                    local
                        .shared
                        .peer_events
                        .fetch_add(collected as u64, Ordering::Relaxed);
                }
            }
            let timeout = if full {
                Some(Duration::ZERO)
            } else {
                // Out of work: sleep, unless work arrived since the last look.
                local.scheduler.sleep(me);
                if local.scheduler.has_work()
                    || !local.queue.is_empty()
                    || self.shared.inbox.pending()
                {
                    Some(Duration::ZERO)
                } else {
                    lock(&self.shared.timers).next_deadline().map(|deadline| {
                        // Round up so that a timer is never fired early and never spun on.
                        let wait = deadline.saturating_duration_since(Instant::now());
                        let millis = wait.as_nanos().div_ceil(1_000_000);
                        Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
                    })
                }
            };
            let polled = lock(&self.shared.poll).poll(&mut events, timeout);
            if !full {
                local.scheduler.wake_up(me);
            }
            if let Err(error) = polled
                && error.kind() != std::io::ErrorKind::Interrupted
            {
                panic!("epoll_wait failed: {error}");
            }
            // Woken once the I/O table is unlocked. A waker that panics here ends this
            // worker, as one of its timers' does (see `run`), once the others are woken.
            self.shared.dispatch(&events, &mut due);
            wake_all(&mut due);
            // The keys posted are picked from the inbox itself (see `inbox`).
            self.shared.inbox.woken();
            // Woken once the heap is unlocked: a waker may poll or drop a `Sleep`.
            lock(&self.shared.timers).fire_due(Instant::now(), &mut due);
            wake_all(&mut due);
        }
    }
}

/// Wakes every waker of `wakers` (those of an exiting worker's orphaned sockets and
/// sleeps), leaving it empty, each under `catch_unwind`: one that panics is reported on
/// standard error, as on the monitor, and the exit goes on (the other wakers are woken,
/// the timers after the sockets), since nothing is left to end but this thread.
fn wake_each_on_exit(wakers: &mut Vec<Waker>) {
    outside_arena(|| {
        for waker in wakers.drain(..) {
            if let Err(payload) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()))
            {
                crate::sync::discard_panic(payload);
                report_panicking_waker_on_exit();
            }
        }
    });
}

/// Says on standard error that a waker panicked when an exiting worker woke it.
#[cold]
fn report_panicking_waker_on_exit() {
    use std::io::Write;
    let _ = std::io::stderr().write_all(
        b"executor: a waker panicked when an exiting worker woke it; the exit goes on\n",
    );
}

/// Wakes every waker of `wakers`, leaving it empty. A waker that panics does not keep
/// the others from being woken: the first panic is raised again once they all are (it
/// then ends the worker, see [`Worker::run`]), and any later one is discarded.
fn wake_all(wakers: &mut Vec<Waker>) {
    let mut first_panic = None;
    for waker in wakers.drain(..) {
        if let Err(payload) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake()))
        {
            match first_panic {
                None => first_panic = Some(payload),
                Some(_) => crate::sync::discard_panic(payload),
            }
        }
    }
    if let Some(payload) = first_panic {
        std::panic::resume_unwind(payload);
    }
}

// Linux only: elsewhere a peer does not take the events of a worker that holds its
// `Poll` (see `WorkerShared::poll_events_for_peer`).
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::reactor::{Direction, Outcome, Registration};
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;

    struct Counter(AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A worker woken from `epoll_wait` for its sockets' events but not yet running
    /// (the kernel has not given it a core) still holds its `Poll`'s lock. A peer
    /// running out of tasks takes those events anyway, wakes the waiting task, and
    /// writes a wake of the owner's `mio::Waker` it took again, for the owner. The
    /// peer used to `try_lock` the `Poll`, and so left the events waiting for the
    /// owner's time slice (issue 17).
    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(
        miri,
        ignore = "opens sockets and an epoll instance, which miri cannot"
    )]
    fn a_peer_takes_the_events_of_a_worker_that_holds_its_poll() {
        let owner = Worker::new(0, 0).unwrap();
        let shared = Arc::clone(owner.shared());
        let (mut ours, mut theirs) = mio::net::UnixStream::pair().unwrap();
        let registration = Registration::with_worker(Arc::clone(&shared), &mut ours).unwrap();
        let reader = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&reader));
        let mut cx = Context::from_waker(&waker);
        let mut buffer = [0_u8; 16];
        // Drains the registration's initial readiness, then parks the reader.
        loop {
            let polled = registration.poll_io(&mut cx, Direction::Read, || {
                (&ours).read(&mut buffer).map(Outcome::Drained)
            });
            if polled.is_pending() {
                break;
            }
        }
        // The events of the registration itself (writable) go to the owner.
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        lock(&shared.poll)
            .poll(&mut events, Some(Duration::ZERO))
            .unwrap();
        theirs.write_all(b"ping").unwrap();
        shared.wake_poll();

        let held = lock(&shared.poll);
        let mut taken = Vec::new();
        let mut wakers = Vec::new();
        let collected = shared.poll_events_for_peer(&mut events, &mut taken, &mut wakers);
        drop(held);
        wakers.into_iter().for_each(Waker::wake);
        assert_eq!(
            collected, 2,
            "the socket's event and the owner's wake-up, with the owner's `Poll` held"
        );
        assert_eq!(reader.0.load(Ordering::SeqCst), 1, "the reader was woken");
        let read = registration.poll_io(&mut cx, Direction::Read, || {
            (&ours).read(&mut buffer).map(Outcome::Drained)
        });
        assert!(matches!(read, Poll::Ready(Ok(4))), "{read:?}");

        // The owner still gets its wake-up, and only that.
        lock(&shared.poll)
            .poll(&mut events, Some(Duration::ZERO))
            .unwrap();
        let tokens: Vec<Token> = events.iter().map(mio::event::Event::token).collect();
        assert_eq!(tokens, [WAKER_TOKEN]);
        registration.deregister(&mut ours);
    }
}
