//! The blocking pool: threads that run [`spawn_blocking`] closures, apart from the
//! workers.
//!
//! # Policy
//! - Bounded: at most `max_blocking_threads` threads (default
//!   [`DEFAULT_MAX_BLOCKING_THREADS`], tokio's figure); closures past that wait in a FIFO
//!   queue, unbounded, for a thread to finish what it runs.
//! - Lazy: no thread exists until a closure needs one. A closure gets a new thread when
//!   fewer threads are idle than closures are queued and the bound allows it; otherwise
//!   an idle thread is woken.
//! - Retired: a thread idle for `thread_keep_alive` (default [`DEFAULT_KEEP_ALIVE`])
//!   exits.
//! - Shutdown (the runtime is dropped or shut down): closures already running run to the
//!   end, on their threads, which the runtime does not wait for (a closure blocked for
//!   ever would otherwise hang the runtime's drop); their handles get their values.
//!   Closures still queued are dropped unrun and their handles report
//!   [`JoinError::Cancelled`]; so are closures spawned later through a [`Handle`] that
//!   outlived the runtime.
//!
//! Blocking threads are not workers ([`current_worker`](crate::current_worker) is `None`
//! there, `spawn` panics, [`Handle::current`] works) and run their closures outside any
//! request's arena.
//!
//! # Safety of the shared state
//! One mutex guards the queue and the counts; one condition variable wakes idle threads.
//! No closure is run, dropped, or has its handle woken while the mutex is held: a job
//! is popped under the lock and run, or dropped, after it is released.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use pagekeep_arena::outside_arena;

use crate::handle::Handle;
use crate::join::{JoinError, JoinHandle, JoinState};
use crate::sync::lock;

/// Most blocking threads a runtime starts by default.
pub(crate) const DEFAULT_MAX_BLOCKING_THREADS: usize = 512;
/// How long a blocking thread waits idle before it exits, by default.
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A closure waiting for, or running on, a blocking thread.
trait Job: Send {
    /// Runs the closure and reports its outcome to its handle.
    fn run(self: Box<Self>);
}

struct BlockingJob<W, R> {
    /// `None` once run.
    work: Option<W>,
    join: Arc<JoinState<R>>,
}

impl<W, R> Job for BlockingJob<W, R>
where
    W: FnOnce() -> R + Send,
    R: Send,
{
    fn run(mut self: Box<Self>) {
        let Some(work) = self.work.take() else {
            return;
        };
        if self.join.is_aborted() {
            // Aborted before it started: dropped unrun (by `Drop` below).
            self.work = Some(work);
            return;
        }
        let result = match catch_unwind(AssertUnwindSafe(work)) {
            Ok(output) => Ok(output),
            Err(payload) => Err(JoinError::Panicked(payload)),
        };
        self.join.complete(result);
    }
}

impl<W, R> Drop for BlockingJob<W, R> {
    /// A job dropped unrun (queued at shutdown, or aborted) drops its closure, containing
    /// a panic of its destructors, then tells its handle why.
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(work))) {
            crate::sync::discard_panic(payload);
        }
        let error = if self.join.is_aborted() {
            JoinError::Aborted
        } else {
            JoinError::Cancelled
        };
        self.join.complete(Err(error));
    }
}

struct PoolState {
    queue: VecDeque<Box<dyn Job>>,
    /// Threads started and not yet exited.
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
    /// High-water mark of `threads`, for tests.
    #[cfg(test)]
    most_threads: usize,
    shutdown: bool,
}

/// A runtime's blocking pool; see the module docs.
pub(crate) struct BlockingPool {
    state: Mutex<PoolState>,
    work_ready: Condvar,
    max_threads: usize,
    keep_alive: Duration,
    thread_name: String,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("BlockingPool")
            .field("threads", &state.threads)
            .field("idle", &state.idle)
            .field("queued", &state.queue.len())
            .field("max_threads", &self.max_threads)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl BlockingPool {
    /// A pool of at most `max_threads` threads (zero counts as one), idle threads
    /// retired after `keep_alive`, named `thread_name`.
    pub(crate) fn new(max_threads: usize, keep_alive: Duration, thread_name: String) -> Self {
        Self {
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                #[cfg(test)]
                most_threads: 0,
                shutdown: false,
            }),
            work_ready: Condvar::new(),
            max_threads: max_threads.max(1),
            keep_alive,
            thread_name,
        }
    }

    /// Refuses new closures, drops the queued ones (their handles see `Cancelled`) and
    /// lets the threads exit once their running closures return.
    pub(crate) fn shutdown(&self) {
        let queued = {
            let mut state = lock(&self.state);
            state.shutdown = true;
            std::mem::take(&mut state.queue)
        };
        self.work_ready.notify_all();
        drop(queued);
    }

    /// Threads alive now, and the most alive at once so far.
    #[cfg(test)]
    pub(crate) fn thread_counts(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.threads, state.most_threads)
    }
}

thread_local! {
    /// The runtime of the blocking thread running here, for [`Handle::current`].
    static BLOCKING_HANDLE: std::cell::RefCell<Option<Handle>> =
        const { std::cell::RefCell::new(None) };
}

/// The handle of the runtime whose blocking thread this is.
pub(crate) fn current_handle() -> Option<Handle> {
    BLOCKING_HANDLE
        .try_with(|handle| handle.borrow().clone())
        .ok()
        .flatten()
}

/// Queues `work` on `handle`'s blocking pool; see [`spawn_blocking`].
pub(crate) fn spawn<W, R>(handle: &Handle, work: W) -> JoinHandle<R>
where
    W: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    // The job and its record may outlive the request that spawns it.
    let (job, join) = outside_arena(|| {
        let join = JoinState::new();
        let job: Box<dyn Job> = Box::new(BlockingJob {
            work: Some(work),
            join: Arc::clone(&join),
        });
        (job, JoinHandle::new(join))
    });
    let pool = handle.blocking_pool();
    let start_thread = {
        let mut state = lock(&pool.state);
        if state.shutdown {
            drop(state);
            // Dropped unrun: the handle reports `Cancelled`.
            drop(job);
            return join;
        }
        outside_arena(|| state.queue.push_back(job));
        let start = state.idle < state.queue.len() && state.threads < pool.max_threads;
        if start {
            state.threads += 1;
            #[cfg(test)]
            {
                state.most_threads = state.most_threads.max(state.threads);
            }
        }
        start
    };
    if !start_thread {
        pool.work_ready.notify_one();
        return join;
    }
    let for_thread = handle.clone();
    let started = outside_arena(|| {
        thread::Builder::new()
            .name(pool.thread_name.clone())
            .spawn(move || run_thread(for_thread))
    });
    if let Err(error) = started {
        // Without any thread left, nothing would ever run what is queued: fail it.
        let stranded = {
            let mut state = lock(&pool.state);
            state.threads -= 1;
            if state.threads == 0 {
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            }
        };
        if !stranded.is_empty() {
            eprintln!(
                "executor: no blocking thread could be started ({error}); {} queued closures cancelled",
                stranded.len()
            );
        }
        drop(stranded);
    }
    join
}

/// A blocking thread's body: run queued jobs; wait idle at most the keep-alive; exit on
/// a timeout with nothing queued, or at shutdown once the queue is empty.
fn run_thread(handle: Handle) {
    BLOCKING_HANDLE.with(|current| *current.borrow_mut() = Some(handle.clone()));
    let pool = handle.blocking_pool();
    let mut state = lock(&pool.state);
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            outside_arena(|| job.run());
            state = lock(&pool.state);
            continue;
        }
        if state.shutdown {
            break;
        }
        state.idle += 1;
        let (guard, waited) = pool
            .work_ready
            .wait_timeout(state, pool.keep_alive)
            .unwrap_or_else(PoisonError::into_inner);
        state = guard;
        state.idle -= 1;
        if waited.timed_out() && state.queue.is_empty() {
            break;
        }
    }
    state.threads -= 1;
    drop(state);
    BLOCKING_HANDLE.with(|current| current.borrow_mut().take());
}

/// Runs `work` on the current runtime's blocking pool, a set of threads apart from the
/// workers, and returns a handle to its result: for code that blocks (file system
/// calls, blocking libraries, long computations) and would stall every task of a worker
/// if run in one.
///
/// A closure that panics gives [`JoinError::Panicked`]. An
/// [`abort`](JoinHandle::abort) only stops a closure that has not started yet
/// ([`JoinError::Aborted`]); a running one runs to its end. See the pool's policy
/// (bounded, lazily started, idle threads retired, queued closures cancelled at
/// shutdown) in the README and on
/// [`Builder::max_blocking_threads`](crate::Builder::max_blocking_threads).
///
/// Cost: two allocations (the boxed closure and the join record, both outside any
/// request's arena), a short lock, and a condition-variable signal or, when no thread
/// is idle, a thread start.
///
/// # Panics
/// Outside a runtime's threads (workers and blocking threads); use
/// [`Handle::spawn_blocking`] there.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let sum = runtime.block_on(async {
///     let blocking = pagekeep_executor::spawn_blocking(|| {
///         assert_eq!(pagekeep_executor::current_worker(), None);
///         (1..=10u64).sum::<u64>()
///     });
///     blocking.await.unwrap()
/// });
/// assert_eq!(sum, 55);
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn spawn_blocking<W, R>(work: W) -> JoinHandle<R>
where
    W: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match Handle::try_current() {
        Ok(handle) => spawn(&handle, work),
        Err(error) => panic!("spawn_blocking: {error}"),
    }
}
