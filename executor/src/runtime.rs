//! [`Runtime`]: starts the worker threads, hands work to them, stops them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use crate::blocking::{BlockingPool, DEFAULT_KEEP_ALIVE, DEFAULT_MAX_BLOCKING_THREADS};
use crate::handle::Handle;
use crate::join::JoinHandle;
use crate::scheduler::{Scheduler, publish_table_entry, release_table_entry, reserve_table_entry};
use crate::task::package;
use crate::task::store::MAX_SLOTS as MAX_TASKS;
use crate::waker::MAX_WORKERS;
use crate::worker::{Worker, WorkerShared};

/// Source of per-runtime generation bases (see `TaskStore::new`).
static GENERATION_SEED: AtomicU32 = AtomicU32::new(0);

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder {
    workers: usize,
    thread_name: String,
    max_blocking_threads: usize,
    keep_alive: Duration,
    max_tasks: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            workers: thread::available_parallelism().map_or(1, usize::from),
            thread_name: "executor-worker".to_owned(),
            max_blocking_threads: DEFAULT_MAX_BLOCKING_THREADS,
            keep_alive: DEFAULT_KEEP_ALIVE,
            max_tasks: MAX_TASKS,
        }
    }
}

impl Builder {
    /// Number of worker threads; default: one per available core. Zero counts as one.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Most tasks alive at once (spawned and not finished, `block_on`'s included);
    /// default and most: 4,194,240, the size of the task table. A spawn past it does
    /// not run: its handle reports [`JoinError::TaskTableFull`](crate::JoinError::TaskTableFull)
    /// (and `block_on` panics saying so). Zero counts as one; more than the default
    /// counts as the default.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).max_tasks(1).build()?;
    /// let error = runtime.block_on(async {
    ///     // The `block_on` task takes the only slot.
    ///     pagekeep_executor::spawn(async {}).await.unwrap_err()
    /// });
    /// assert!(matches!(error, pagekeep_executor::JoinError::TaskTableFull));
    /// assert!(error.to_string().contains("task table is full"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_tasks(mut self, tasks: usize) -> Self {
        self.max_tasks = tasks.clamp(1, MAX_TASKS);
        self
    }

    /// Name prefix of the worker threads (the index is appended); the blocking pool's
    /// threads are named with `-blocking` appended.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Most threads of the blocking pool ([`spawn_blocking`](crate::spawn_blocking))
    /// alive at once; default 512 (tokio's). Threads start only when a closure needs
    /// one; closures past the bound wait in a queue. Zero counts as one.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder()
    ///     .workers(1)
    ///     .max_blocking_threads(2)
    ///     .build()?;
    /// let tasks: Vec<_> = (0..4u32)
    ///     .map(|n| runtime.handle().spawn_blocking(move || n * 2))
    ///     .collect();
    /// let doubled: Vec<u32> = tasks.into_iter().map(|task| runtime.block_on(task).unwrap()).collect();
    /// assert_eq!(doubled, [0, 2, 4, 6]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn max_blocking_threads(mut self, threads: usize) -> Self {
        self.max_blocking_threads = threads.max(1);
        self
    }

    /// How long a blocking thread waits idle for a closure before it exits; default 10
    /// seconds. `Duration::ZERO` retires a thread as soon as the queue is empty;
    /// `Duration::MAX` keeps threads for good.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder()
    ///     .workers(1)
    ///     .thread_keep_alive(std::time::Duration::from_millis(100))
    ///     .build()?;
    /// let task = runtime.handle().spawn_blocking(|| "done");
    /// assert_eq!(runtime.block_on(task).unwrap(), "done");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn thread_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Creates the workers' `Poll`s and starts their threads.
    ///
    /// # Errors
    /// When a `Poll`, a `mio::Waker` or a thread cannot be created, or more than 1024
    /// workers would be alive in the process.
    pub fn build(self) -> std::io::Result<Runtime> {
        let mut indices = Vec::with_capacity(self.workers);
        let mut created = Vec::with_capacity(self.workers);
        let mut failure = None;
        for local_index in 0..self.workers {
            let Some(index) = reserve_table_entry() else {
                failure = Some(std::io::Error::other(format!(
                    "more than {MAX_WORKERS} executor workers alive"
                )));
                break;
            };
            indices.push(index);
            match Worker::new(index, local_index) {
                Ok(worker) => created.push(worker),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = failure {
            indices.into_iter().for_each(release_table_entry);
            return Err(error);
        }
        let scheduler = Arc::new(Scheduler::new(
            created
                .iter()
                .map(|worker| Arc::clone(worker.shared()))
                .collect(),
            created.iter().map(Worker::stealer).collect(),
            GENERATION_SEED.fetch_add(0x9E37_79B9, Ordering::Relaxed),
            self.max_tasks,
        ));
        for &index in &indices {
            publish_table_entry(index, &scheduler);
        }
        let spawner = Spawner {
            scheduler: Arc::clone(&scheduler),
        };
        let blocking = BlockingPool::new(
            self.max_blocking_threads,
            self.keep_alive,
            format!("{}-blocking", self.thread_name),
        );
        let mut runtime = Runtime {
            workers: Vec::new(),
            scheduler: Arc::clone(&scheduler),
            handle: Handle::new(spawner, blocking),
            monitor: None,
        };
        let mut created = created.into_iter().enumerate();
        for (local_index, worker) in created.by_ref() {
            let shared = Arc::clone(worker.shared());
            let handle = runtime.handle.clone();
            let for_thread = Arc::clone(&scheduler);
            // Counted in before the thread starts, so that no worker that leaves early
            // takes itself for the last.
            scheduler.enter();
            // If the thread cannot start, the worker (and its Poll) is dropped here and
            // `runtime`'s drop stops and releases the workers already started.
            let spawned = thread::Builder::new()
                .name(format!("{}-{local_index}", self.thread_name))
                .spawn(move || worker.run(for_thread, handle));
            match spawned {
                Ok(thread) => runtime.workers.push(WorkerHandle {
                    shared,
                    thread: Some(thread),
                }),
                Err(error) => {
                    scheduler.leave();
                    // This worker and the ones not started never run: refuse work
                    // posted to them and free their entries (the runtime's drop frees
                    // those of the started ones and drops every task).
                    for shared in std::iter::once(shared)
                        .chain(created.map(|(_, worker)| Arc::clone(worker.shared())))
                    {
                        shared.abandon();
                        release_table_entry(shared.index());
                    }
                    return Err(error);
                }
            }
        }
        if self.workers > 1 {
            // On failure, dropping `runtime` stops the workers and frees their entries.
            runtime.monitor = Some(crate::monitor::start(
                &scheduler,
                format!("{}-monitor", self.thread_name),
            )?);
        }
        Ok(runtime)
    }
}

#[derive(Debug)]
struct WorkerHandle {
    shared: Arc<WorkerShared>,
    thread: Option<thread::JoinHandle<()>>,
}

/// A set of worker threads, each with its own reactor, run queue and timers.
///
/// Dropping the runtime stops the workers: tasks still running are dropped (their
/// [`JoinHandle`]s report [`JoinError::Cancelled`](crate::JoinError::Cancelled)) and
/// the threads are joined, but for the one dropping it when one of the runtime's own
/// tasks does: that worker stops once the task's poll returns, detached. The blocking
/// pool stops taking closures: those queued are dropped (their handles report
/// `Cancelled`), those running finish on their threads, which are not waited for.
/// [`Handle`]s that outlive the runtime spawn nothing: their tasks are cancelled at once.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(2).build()?;
/// let handle = runtime.spawn(async { 6 * 7 });
/// assert_eq!(runtime.block_on(handle).unwrap(), 42);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Runtime {
    workers: Vec<WorkerHandle>,
    /// The tasks and run queues all the workers share.
    scheduler: Arc<Scheduler>,
    /// The same workers, for spawning from anywhere, and the blocking pool.
    handle: Handle,
    /// The thread that looks after held workers (see `monitor`), with two workers or
    /// more; joined when the runtime is dropped.
    monitor: Option<thread::JoinHandle<()>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Runtime {
    /// A builder with the defaults (one worker per core).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Number of worker threads.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Spawns `future` onto the runtime: the first idle worker takes it.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// The runtime's [`Handle`]: clone it to spawn onto this runtime from other threads.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let handle = runtime.handle().clone();
    /// let task = std::thread::spawn(move || handle.spawn(async { 5 })).join().unwrap();
    /// assert_eq!(runtime.block_on(task).unwrap(), 5);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns `future` with its first poll on worker `index` (0-based, modulo the worker
    /// count); after that it runs wherever it is woken or stolen, like any task. If that
    /// worker died (a waker panicked on it), the first poll runs on a live worker.
    pub fn spawn_on<F>(&self, index: usize, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawner().spawn_on(index, future)
    }

    /// The scheduler, for tests that look at its tasks and workers.
    #[cfg(test)]
    pub(crate) fn scheduler_for_tests(&self) -> &Scheduler {
        &self.scheduler
    }

    /// A handle that spawns onto this runtime's workers from anywhere, tasks included.
    pub(crate) fn spawner(&self) -> Spawner {
        self.handle.spawner().clone()
    }

    /// Runs `future` on the runtime (first polled on worker 0) and blocks the calling thread
    /// until it finishes.
    ///
    /// The future moves to that worker, so it must be `Send + 'static`, unlike tokio's
    /// `block_on`, which polls on the calling thread: it cannot borrow the caller's
    /// locals; move them in, or share them through an `Arc`.
    ///
    /// # Panics
    /// Re-raises the future's panic; panics if every worker of the runtime died (with
    /// worker 0 dead and another alive, the future runs there), if there is no
    /// memory to store the task, and when called on a worker thread (blocking a worker
    /// could deadlock it; `.await` there).
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        assert!(
            crate::worker::with_local(|_| ()).is_none(),
            "Runtime::block_on called on an executor worker thread; await the future instead"
        );
        match block_on_thread(self.spawn_on(0, future)) {
            Ok(output) => output,
            Err(crate::JoinError::Panicked(payload)) => std::panic::resume_unwind(payload),
            Err(crate::JoinError::Cancelled | crate::JoinError::Aborted) => {
                panic!("the runtime's worker stopped or died before block_on finished")
            }
            Err(crate::JoinError::OutOfMemory) => panic!("no memory to store the block_on task"),
            Err(crate::JoinError::TaskTableFull) => {
                panic!("the runtime's task table is full: no room for the block_on task")
            }
        }
    }
}

impl Runtime {
    /// Stops the workers as dropping the runtime does, but waits at most `grace` for
    /// them: a worker still running then (blocked in a task that never yields) is left
    /// behind, detached, and this returns anyway. Returns how many workers were left.
    ///
    /// A detached worker keeps its thread (and its worker-table entry) until it
    /// returns from the blocking task, stops and drops its tasks; or until the process
    /// exits, which does not wait for it.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(2).build()?;
    /// let left = runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    /// assert_eq!(left, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown_timeout(mut self, grace: std::time::Duration) -> usize {
        self.handle.blocking_pool().shutdown();
        self.scheduler.tasks.close();
        self.scheduler.monitor.stop();
        for worker in &self.workers {
            worker.shared.request_stop();
        }
        let deadline = crate::timer::deadline_after(std::time::Instant::now(), grace);
        while self.workers.iter().any(|worker| {
            worker
                .thread
                .as_ref()
                .is_some_and(|thread| !thread.is_finished())
        }) && std::time::Instant::now() < deadline
        {
            thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut left = 0;
        for worker in std::mem::take(&mut self.workers) {
            match worker.thread {
                Some(thread) if !thread.is_finished() => {
                    // Detached: its table entry stays claimed while the thread lives.
                    left += 1;
                    drop(thread);
                }
                thread => {
                    if let Some(thread) = thread {
                        let _ = thread.join();
                    }
                    self.release_entry(&worker.shared, left);
                }
            }
        }
        self.scheduler.drain();
        left
    }

    /// Gives back a stopped worker's table entry; but the home entry (the index task
    /// wakers carry) while some worker is left running, so that no later runtime takes
    /// it and has its wakes sent here. `left`: workers left running so far.
    fn release_entry(&self, worker: &WorkerShared, left: usize) {
        let detached = left > 0
            || self
                .workers
                .iter()
                .any(|other| other.thread.as_ref().is_some_and(|t| !t.is_finished()));
        if worker.index() != self.scheduler.home || !detached {
            release_table_entry(worker.index());
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.handle.blocking_pool().shutdown();
        // Spawns are refused from now on; every worker drops the tasks as it leaves.
        self.scheduler.tasks.close();
        self.scheduler.monitor.stop();
        // It never waits on a worker (it only `try_lock`s their `Poll`s), so this is
        // quick, even from one of the runtime's own tasks.
        if let Some(monitor) = self.monitor.take() {
            let _ = monitor.join();
        }
        for worker in &self.workers {
            worker.shared.request_stop();
        }
        let current = thread::current().id();
        let mut detached = false;
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                if thread.thread().id() == current {
                    // Dropped by one of its own tasks: this worker cannot wait for
                    // itself. It is left to stop once the task's poll returns, detached
                    // (as `shutdown_timeout` leaves a blocked one): its table entry stays
                    // claimed while its thread runs.
                    detached = true;
                    drop(thread);
                    continue;
                }
                // A worker that panicked has already printed its message.
                let _ = thread.join();
            }
            if worker.shared.index() != self.scheduler.home || !detached {
                release_table_entry(worker.shared.index());
            }
        }
        if !detached {
            // Tasks of workers that never started; the others drained as they left.
            self.scheduler.drain();
        }
    }
}

/// Spawns onto a runtime from anywhere; cheap to clone. Spawning onto a runtime that
/// has shut down drops the future at once (its handle reports a cancellation).
#[derive(Clone, Debug)]
pub(crate) struct Spawner {
    scheduler: Arc<Scheduler>,
}

impl Spawner {
    /// Number of workers.
    pub(crate) fn worker_count(&self) -> usize {
        self.scheduler.worker_count()
    }

    /// Whether worker `index` died (its loop panicked); it takes no new pinned work.
    pub(crate) fn is_dead(&self, index: usize) -> bool {
        self.scheduler.workers[index % self.scheduler.worker_count()].is_dead()
    }

    /// Whether worker `index` is held by a task that has not yielded for a while (see
    /// `monitor`).
    pub(crate) fn is_held(&self, index: usize) -> bool {
        self.scheduler
            .is_held(index % self.scheduler.worker_count())
    }

    /// Spawns `future` with its first poll on worker `index` (modulo the worker count);
    /// from then on it runs wherever it is woken or stolen.
    pub(crate) fn spawn_on<F>(&self, index: usize, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_pinned(Some(index), future)
    }

    /// Spawns `future` on whichever worker takes it first: the calling worker's queue
    /// on a worker of this runtime, the injector elsewhere.
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_pinned(None, future)
    }

    fn spawn_pinned<F>(&self, pin: Option<usize>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // The task may outlive whatever request spawns it: never in a request's arena.
        let (task, handle) = pagekeep_arena::outside_arena(|| package(future));
        if let Some(task) = task
            && let Err(refused) = self.scheduler.spawn(task, pin)
        {
            crate::task::refuse(&handle, refused);
        }
        handle
    }
}

struct ThreadUnparker(thread::Thread);

impl Wake for ThreadUnparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on the calling thread, parking between polls. The future must not
/// need a worker (no sockets or timers of its own): it is for waiting on handles.
pub(crate) fn block_on_thread<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadUnparker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}
