//! [`JoinSet`]: a set of spawned tasks, joined in the order they finish.
//!
//! # Structure
//! The set owns its tasks' [`JoinHandle`]s in a map keyed by an id that is never reused.
//! It never polls them: each task's join record holds, as its handle's waker, an
//! `EntryWaker` (the id plus the set's shared `ReadyList`). When a task finishes, its
//! record wakes that waker, which pushes the id onto the ready list and wakes whoever
//! awaits [`JoinSet::join_next`]. Joining pops one id and takes that task's outcome: O(1)
//! per completion, however many tasks are in the set, and tasks are joined in the order
//! they finished.
//!
//! # Safety of the shared state
//! The ready list is the only state shared with other threads: a mutex over the ids and
//! the joiner's waker. Wakers are woken and dropped after the mutex is released.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use pagekeep_arena::outside_arena;

use crate::handle::Handle;
use crate::join::{AbortHandle, JoinError, JoinHandle};
use crate::sync::{lock, replace_waker};

/// Ids of finished tasks, in the order they finished, and the joiner's waker.
#[derive(Default)]
struct ReadyList {
    inner: Mutex<ReadyInner>,
}

#[derive(Default)]
struct ReadyInner {
    ids: VecDeque<u64>,
    waker: Option<Waker>,
}

/// The waker a [`JoinSet`] registers with each of its tasks.
struct EntryWaker {
    id: u64,
    ready: Arc<ReadyList>,
}

impl Wake for EntryWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let joiner = {
            let mut inner = lock(&self.ready.inner);
            // Woken on the finishing task's thread, possibly inside a request's arena.
            outside_arena(|| inner.ids.push_back(self.id));
            inner.waker.take()
        };
        if let Some(joiner) = joiner {
            joiner.wake();
        }
    }
}

/// A set of tasks spawned onto a runtime, awaited in the order they finish.
///
/// Dropping the set aborts every task still in it (see [`JoinHandle::abort`]); use
/// [`detach_all`](JoinSet::detach_all) first to let them run on.
///
/// Cost: a spawn costs what [`spawn`](crate::spawn) does plus one small allocation (the
/// task's waker for the set, outside any request's arena) and a map insertion; a task's
/// completion costs one push onto the set's ready list under a short lock; joining one
/// task is a pop and a map removal, O(1) whatever the set's size. Aborting or dropping
/// the set is O(n) in its tasks.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(2).build()?;
/// let total = runtime.block_on(async {
///     let mut set = pagekeep_executor::JoinSet::new();
///     for n in 1..=10u64 {
///         set.spawn(async move { n * n });
///     }
///     let mut total = 0;
///     while let Some(result) = set.join_next().await {
///         total += result.unwrap();
///     }
///     total
/// });
/// assert_eq!(total, 385);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct JoinSet<T> {
    tasks: HashMap<u64, JoinHandle<T>>,
    next_id: u64,
    ready: Arc<ReadyList>,
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet")
            .field("len", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Default for JoinSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> JoinSet<T> {
    /// An empty set.
    ///
    /// # Examples
    /// ```
    /// let set = pagekeep_executor::JoinSet::<u32>::new();
    /// assert!(set.is_empty());
    /// ```
    pub fn new() -> Self {
        Self {
            tasks: HashMap::new(),
            next_id: 0,
            ready: outside_arena(|| Arc::new(ReadyList::default())),
        }
    }

    /// Tasks in the set: spawned and not yet joined (finished ones included).
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let mut set = pagekeep_executor::JoinSet::new();
    ///     set.spawn(async { 1 });
    ///     set.spawn(async { 2 });
    ///     assert_eq!(set.len(), 2);
    ///     set.join_next().await;
    ///     assert_eq!(set.len(), 1);
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let mut set = pagekeep_executor::JoinSet::new();
    ///     set.spawn(async {});
    ///     assert!(!set.is_empty());
    ///     set.join_next().await;
    ///     assert!(set.is_empty());
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Spawns `future` on the current worker, as [`spawn`](crate::spawn) does, into the
    /// set; returns a handle that aborts it.
    ///
    /// # Panics
    /// Outside an executor worker thread; use [`spawn_on`](JoinSet::spawn_on) there.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let result = runtime.block_on(async {
    ///     let mut set = pagekeep_executor::JoinSet::new();
    ///     let abort = set.spawn(std::future::pending::<()>());
    ///     abort.abort();
    ///     set.join_next().await.unwrap()
    /// });
    /// assert!(result.unwrap_err().is_cancelled());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn spawn<F>(&mut self, future: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.insert(crate::spawn(future))
    }

    /// Spawns `future` through `handle` (on its runtime's next worker, from any thread)
    /// into the set; returns a handle that aborts it.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(2).build()?;
    /// let mut set = pagekeep_executor::JoinSet::new();
    /// for n in 0..4u32 {
    ///     set.spawn_on(async move { n }, runtime.handle());
    /// }
    /// let mut got = runtime.block_on(async move {
    ///     let mut got = Vec::new();
    ///     while let Some(result) = set.join_next().await {
    ///         got.push(result.unwrap());
    ///     }
    ///     got
    /// });
    /// got.sort_unstable();
    /// assert_eq!(got, [0, 1, 2, 3]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_on<F>(&mut self, future: F, handle: &Handle) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.insert(handle.spawn(future))
    }

    /// Adds a spawned task's handle to the set.
    fn insert(&mut self, task: JoinHandle<T>) -> AbortHandle {
        let id = self.next_id;
        self.next_id += 1;
        let abort = task.abort_handle();
        let waker = outside_arena(|| {
            Waker::from(Arc::new(EntryWaker {
                id,
                ready: Arc::clone(&self.ready),
            }))
        });
        // Wakes at once (queueing the id) when the task has already finished.
        task.state().register_waker(waker);
        self.tasks.insert(id, task);
        abort
    }

    /// Waits for the next task to finish and gives its outcome, or `None` when the set
    /// is empty. Tasks come out in the order they finished.
    ///
    /// Cancellation safe: dropping the future before it is ready loses no outcome (it
    /// stays in the set for the next call).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let order = runtime.block_on(async {
    ///     let mut set = pagekeep_executor::JoinSet::new();
    ///     set.spawn(async {
    ///         pagekeep_executor::sleep(Duration::from_millis(50)).await;
    ///         "slow"
    ///     });
    ///     set.spawn(async { "fast" });
    ///     let mut order = Vec::new();
    ///     while let Some(result) = set.join_next().await {
    ///         order.push(result.unwrap());
    ///     }
    ///     order
    /// });
    /// assert_eq!(order, ["fast", "slow"]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        poll_fn(|cx| self.poll_join_next(cx)).await
    }

    fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        // With the task's budget spent, finished tasks stay on the ready list.
        let coop = std::task::ready!(crate::coop::poll_proceed(cx));
        loop {
            if let Some(result) = self.try_join_next() {
                coop.made_progress();
                return Poll::Ready(Some(result));
            }
            if self.tasks.is_empty() {
                coop.made_progress();
                return Poll::Ready(None);
            }
            // Cloned before the lock: a clone may panic, and must not with the lock held.
            let waker = cx.waker().clone();
            let unused = {
                let mut inner = lock(&self.ready.inner);
                if !inner.ids.is_empty() {
                    // A task finished since `try_join_next` looked: take it.
                    drop(inner);
                    drop(waker);
                    continue;
                }
                replace_waker(&mut inner.waker, waker)
            };
            drop(unused);
            return Poll::Pending;
        }
    }

    /// The outcome of a task that has finished, if any, without waiting.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let mut set = pagekeep_executor::JoinSet::new();
    /// set.spawn_on(async { 9 }, runtime.handle());
    /// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// let result = loop {
    ///     if let Some(result) = set.try_join_next() {
    ///         break result;
    ///     }
    ///     assert!(std::time::Instant::now() < deadline);
    ///     std::thread::sleep(std::time::Duration::from_millis(1));
    /// };
    /// assert_eq!(result.unwrap(), 9);
    /// assert!(set.try_join_next().is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        loop {
            let id = lock(&self.ready.inner).ids.pop_front()?;
            // Ids of tasks no longer in the set (detached) are skipped.
            let Some(task) = self.tasks.remove(&id) else {
                continue;
            };
            match task.state().take_result() {
                Some(result) => return Some(result),
                // Only a finished task queues its id; keep it anyway, should one not be.
                None => {
                    self.tasks.insert(id, task);
                }
            }
        }
    }

    /// Aborts every task in the set (see [`JoinHandle::abort`]); they stay in it, and
    /// [`join_next`](JoinSet::join_next) gives their outcomes:
    /// [`JoinError::Aborted`] for those that had not finished.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let aborted = runtime.block_on(async {
    ///     let mut set = pagekeep_executor::JoinSet::new();
    ///     for _ in 0..3 {
    ///         set.spawn(std::future::pending::<()>());
    ///     }
    ///     set.abort_all();
    ///     let mut aborted = 0;
    ///     while let Some(result) = set.join_next().await {
    ///         aborted += usize::from(result.unwrap_err().is_cancelled());
    ///     }
    ///     aborted
    /// });
    /// assert_eq!(aborted, 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort_all(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }

    /// Aborts every task and waits until all have finished, discarding their outcomes;
    /// the set is empty afterwards.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// runtime.block_on(async {
    ///     let mut set = pagekeep_executor::JoinSet::new();
    ///     set.spawn(std::future::pending::<()>());
    ///     set.shutdown().await;
    ///     assert!(set.is_empty());
    /// });
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().await.is_some() {}
    }

    /// Removes every task from the set without aborting it: they run on, detached, as
    /// if their [`JoinHandle`]s were dropped.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let (sender, receiver) = std::sync::mpsc::channel();
    /// runtime.block_on(async move {
    ///     let mut set = pagekeep_executor::JoinSet::new();
    ///     set.spawn(async move {
    ///         pagekeep_executor::sleep(std::time::Duration::from_millis(10)).await;
    ///         sender.send("ran on").unwrap();
    ///     });
    ///     set.detach_all();
    ///     assert!(set.is_empty());
    /// });
    /// assert_eq!(receiver.recv_timeout(std::time::Duration::from_secs(10)), Ok("ran on"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn detach_all(&mut self) {
        self.clear();
    }
}

impl<T> JoinSet<T> {
    /// Empties the set: unregisters its wakers from the tasks (so finished tasks queue
    /// nothing more) and drops their handles and the queued ids.
    fn clear(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.state().clear_waker();
        }
        let ids = std::mem::take(&mut lock(&self.ready.inner).ids);
        drop(ids);
    }
}

impl<T> Drop for JoinSet<T> {
    /// Aborts every task still in the set; their futures are dropped on their workers.
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
        self.clear();
    }
}
