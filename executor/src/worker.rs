//! Worker threads: one `mio::Poll`, one run queue, one task store and one timer heap
//! each, plus the process-wide worker table that wakers go through.
//!
//! # Safety of the shared state
//! The run queue, task store and timer heap ([`Local`]) belong to the worker thread and
//! are reached only through its thread-local context; user code never runs while one
//! of their `RefCell`s is borrowed mutably (futures are moved out of the store to be
//! polled and dropped outside any borrow). What other threads touch is in
//! [`WorkerShared`]: the inbox (mutex), the `notified` flag (atomic), the `mio::Waker`
//! and `Registry` (thread-safe) and the I/O table (mutex).
//!
//! # Loop
//! Run the tasks queued at the start of the turn (those woken meanwhile wait for the
//! next turn, so I/O is never starved), then `epoll_wait` (no wait when tasks are
//! queued, else until the next timer), dispatch I/O events, drain the inbox of
//! cross-thread wakes and spawns, fire due timers; repeat until told to stop.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mio::{Events, Token};
use pagekeep_arena::outside_arena;

use crate::reactor::IoTable;
use crate::sync::lock;
use crate::task::store::{BoxFuture, TaskKey, TaskStore};
use crate::timer::TimerHeap;
use crate::waker::{MAX_WORKERS, task_waker};

/// Token of the worker's `mio::Waker`; I/O tokens are table indices, far below it.
const WAKER_TOKEN: Token = Token(usize::MAX);
/// Events fetched per `epoll_wait`.
const EVENT_CAPACITY: usize = 1024;

/// Work posted to a worker by other threads.
#[derive(Default)]
struct Inbox {
    wakes: Vec<TaskKey>,
    spawns: Vec<BoxFuture>,
    /// The worker has exited: nothing posted now would ever run.
    closed: bool,
}

/// The part of a worker that other threads reach. See the module `# Safety` notes.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    /// Index in [`WORKER_TABLE`].
    index: usize,
    registry: mio::Registry,
    waker: mio::Waker,
    inbox: Mutex<Inbox>,
    /// Set by whoever posts to the inbox and has woken (or will wake) the `Poll`;
    /// cleared by the worker before it drains the inbox.
    notified: AtomicBool,
    io: Mutex<IoTable>,
    stop: AtomicBool,
    /// The worker's loop panicked (a waker or the reactor failed; task polls and drops
    /// are contained and never get here): it has dropped its tasks and takes no work.
    dead: AtomicBool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("wakes", &self.wakes.len())
            .field("spawns", &self.spawns.len())
            .finish()
    }
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

    /// Puts work in the inbox (unless the worker has exited) and wakes the worker.
    fn post<T>(&self, work: T, push: impl FnOnce(&mut Inbox, T)) -> Result<(), T> {
        {
            let mut inbox = lock(&self.inbox);
            if inbox.closed {
                return Err(work);
            }
            // Runtime state outlives any request: never grow it inside a request's arena.
            outside_arena(|| push(&mut inbox, work));
        }
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A failed wake means the Poll is gone (worker exiting): nothing to do.
            let _ = self.waker.wake();
        }
        Ok(())
    }

    /// Spawns onto this worker from any thread: straight into its store on the worker's
    /// own thread, through the inbox from others. Gives the future back when the worker
    /// has exited.
    pub(crate) fn spawn(&self, future: BoxFuture) -> Result<(), BoxFuture> {
        let mut future = Some(future);
        with_local(|local| {
            // The same worker, not merely the same table index: a handle that outlived
            // its runtime must not spawn onto a later worker that took over the entry.
            if std::ptr::eq(Arc::as_ptr(&local.shared), self)
                && let Some(future) = future.take()
            {
                local.spawn(future);
            }
        });
        match future {
            None => Ok(()),
            Some(future) => self.post(future, |inbox, future| inbox.spawns.push(future)),
        }
    }

    /// Moves what was posted into `into` (whose vectors the caller has emptied) by
    /// swapping vectors, so that neither side allocates again once both have grown to
    /// the usual batch. With `close`, every later post is refused.
    fn take_posted(&self, into: &mut Inbox, close: bool) {
        let mut inbox = lock(&self.inbox);
        std::mem::swap(&mut inbox.wakes, &mut into.wakes);
        std::mem::swap(&mut inbox.spawns, &mut into.spawns);
        inbox.closed |= close;
    }

    /// Whether the worker's loop died of a panic (see [`Worker::run`]); such a worker
    /// has failed its tasks and refuses new ones.
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks a worker whose thread never started: refuses posts, like an exited one.
    pub(crate) fn abandon(&self) {
        lock(&self.inbox).closed = true;
        self.dead.store(true, Ordering::Release);
    }

    /// Tells the worker to leave its loop.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notified.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// Process-wide table of live workers, indexed by the worker bits of task wakers.
static WORKER_TABLE: [RwLock<Option<Arc<WorkerShared>>>; MAX_WORKERS] =
    [const { RwLock::new(None) }; MAX_WORKERS];
/// Source of per-worker generation bases (see `TaskStore::new`).
static GENERATION_SEED: AtomicU32 = AtomicU32::new(0);
/// Source of [`Local::id`]s.
static NEXT_WORKER_ID: AtomicU64 = AtomicU64::new(0);

/// The worker-thread-only part of a worker.
#[derive(Debug)]
pub(crate) struct Local {
    /// Unique over the process's life, unlike the table index (which a later worker
    /// reuses): tells a [`Sleep`](crate::Sleep) whether its timer entry is in this
    /// worker's heap.
    pub(crate) id: u64,
    pub(crate) shared: Arc<WorkerShared>,
    /// The worker's runtime, for [`Handle::current`](crate::Handle::current).
    pub(crate) handle: crate::Handle,
    pub(crate) tasks: RefCell<TaskStore>,
    pub(crate) run_queue: RefCell<VecDeque<TaskKey>>,
    pub(crate) timers: RefCell<TimerHeap>,
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
    /// Spawns onto this worker.
    pub(crate) fn spawn(&self, future: BoxFuture) {
        // The store and queue outlive any request: grow them outside its arena.
        outside_arena(|| {
            let key = self.tasks.borrow_mut().insert(future);
            self.run_queue.borrow_mut().push_back(key);
        });
    }

    fn schedule(&self, key: TaskKey) {
        if self.tasks.borrow_mut().schedule(key) {
            // A handler may wake a task while its arena is entered.
            outside_arena(|| self.run_queue.borrow_mut().push_back(key));
        }
    }

    /// Polls one task; returns whether it finished.
    fn run_task(&self, key: TaskKey) {
        let Some(mut future) = self.tasks.borrow_mut().take_for_poll(key) else {
            return;
        };
        let waker = task_waker(self.shared.index, key);
        let mut cx = Context::from_waker(&waker);
        // Each poll starts with a full cooperative budget (see `coop`); the thread is
        // unconstrained again between polls.
        let polled = crate::coop::with_budget(crate::coop::Budget::initial(), || {
            future.as_mut().poll(&mut cx)
        });
        match polled {
            Poll::Ready(()) => {
                self.tasks.borrow_mut().remove(key);
                drop(future);
            }
            Poll::Pending => self.tasks.borrow_mut().put_back(key, future),
        }
    }
}

/// Wakes task `key` of the worker at table index `worker`; see `waker.rs`.
pub(crate) fn wake_task(worker: usize, key: TaskKey) {
    let local = with_local(|local| {
        if local.shared.index == worker {
            local.schedule(key);
            true
        } else {
            false
        }
    });
    if local == Some(true) {
        return;
    }
    let Some(entry) = WORKER_TABLE.get(worker) else {
        return;
    };
    let guard = entry.read().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = guard.as_ref() {
        // A worker that has exited has no task left to wake.
        let _ = shared.post(key, |inbox, key| inbox.wakes.push(key));
    }
}

/// A worker before its thread starts.
#[derive(Debug)]
pub(crate) struct Worker {
    poll: mio::Poll,
    shared: Arc<WorkerShared>,
}

impl Worker {
    /// Creates the `Poll` and claims a worker-table entry.
    pub(crate) fn new() -> std::io::Result<Self> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)?;
        for (index, entry) in WORKER_TABLE.iter().enumerate() {
            let mut slot = entry.write().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                let shared = Arc::new(WorkerShared {
                    index,
                    registry,
                    waker,
                    inbox: Mutex::default(),
                    notified: AtomicBool::new(false),
                    io: Mutex::default(),
                    stop: AtomicBool::new(false),
                    dead: AtomicBool::new(false),
                });
                *slot = Some(Arc::clone(&shared));
                return Ok(Self { poll, shared });
            }
        }
        Err(std::io::Error::other(format!(
            "more than {MAX_WORKERS} executor workers alive"
        )))
    }

    pub(crate) fn shared(&self) -> &Arc<WorkerShared> {
        &self.shared
    }

    /// The worker thread's body: installs the context, loops, then drops every task.
    pub(crate) fn run(mut self, handle: crate::Handle) {
        let base = GENERATION_SEED.fetch_add(0x9E37_79B9, Ordering::Relaxed);
        let local = Rc::new(Local {
            id: NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed),
            shared: Arc::clone(&self.shared),
            handle,
            tasks: RefCell::new(TaskStore::new(base)),
            run_queue: RefCell::new(VecDeque::new()),
            timers: RefCell::new(TimerHeap::default()),
        });
        CONTEXT.with(|context| *context.borrow_mut() = Some(Rc::clone(&local)));
        // Task polls and drops contain their own panics; what still unwinds out of the
        // loop (a waker that panics, a failed `epoll_wait`) ends this worker, but not
        // silently: it is marked dead (the server hands it no more connections), its
        // inbox closes (spawns onto it are refused, their handles see `Cancelled`) and
        // its tasks are dropped below (their connections close, their handles see
        // `Cancelled`), instead of work piling up on a thread that no longer runs.
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
                "executor: worker {} died ({message}); its tasks are cancelled and it takes no new work",
                self.shared.index
            );
        }
        // Shutdown: drop tasks (their destructors may deregister sockets or wake others),
        // repeating in case a destructor spawned more; bounded by a generous count.
        // The inbox closes at the first drain: later posts are refused (their futures
        // dropped by whoever posts them), so nothing is left behind in it.
        let mut posted = Inbox::default();
        for _ in 0..16 {
            self.shared.take_posted(&mut posted, true);
            posted.wakes.clear();
            for future in posted.spawns.drain(..) {
                local.spawn(future);
            }
            let futures = local.tasks.borrow_mut().drain();
            if futures.is_empty() {
                break;
            }
            drop(futures);
        }
        // Sockets that outlive the worker (moved to another runtime, or kept by a task
        // elsewhere) will get no more events: their waiters are woken to fail instead of
        // waiting for ever.
        crate::reactor::shut_down(&self.shared.io);
        local.run_queue.borrow_mut().clear();
        // Sleeps still in the heap belong to tasks elsewhere (this worker's own were
        // dropped above): woken, they re-register with their own worker's heap.
        let orphaned = local.timers.borrow_mut().clear();
        outside_arena(|| orphaned.into_iter().for_each(std::task::Waker::wake));
        CONTEXT.with(|context| context.borrow_mut().take());
    }

    fn event_loop(&mut self, local: &Local) {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        let mut drained = Inbox::default();
        loop {
            let queued = local.run_queue.borrow().len();
            for _ in 0..queued {
                let Some(key) = local.run_queue.borrow_mut().pop_front() else {
                    break;
                };
                local.run_task(key);
            }
            if self.shared.stop.load(Ordering::Acquire) {
                return;
            }
            let timeout = if local.run_queue.borrow().is_empty() {
                local.timers.borrow_mut().next_deadline().map(|deadline| {
                    // Round up so that a timer is never fired early and never spun on.
                    let wait = deadline.saturating_duration_since(Instant::now());
                    let millis = wait.as_nanos().div_ceil(1_000_000);
                    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
                })
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout)
                && error.kind() != std::io::ErrorKind::Interrupted
            {
                panic!("epoll_wait failed: {error}");
            }
            {
                let table = self.shared.io_table();
                for event in events.iter() {
                    if event.token() == WAKER_TOKEN {
                        continue;
                    }
                    if let Some(state) = table.get(event.token().0) {
                        state.on_event(event);
                    }
                }
            }
            if self.shared.notified.swap(false, Ordering::AcqRel) {
                self.shared.take_posted(&mut drained, false);
                for key in drained.wakes.drain(..) {
                    local.schedule(key);
                }
                for future in drained.spawns.drain(..) {
                    local.spawn(future);
                }
            }
            local.timers.borrow_mut().fire_due(Instant::now());
        }
    }
}

/// Gives the worker-table entry back once the worker thread has exited.
pub(crate) fn release_table_entry(shared: &WorkerShared) {
    let mut slot = WORKER_TABLE[shared.index]
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    *slot = None;
}
