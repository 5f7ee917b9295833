//! [`JoinHandle`] and [`AbortHandle`]: the result of a spawned task, delivered across
//! threads, and the permission to stop it.
//!
//! The task and its handles share one small record, [`JoinState`]: a mutex over the
//! result slot and the handle's waker, plus two atomics for aborts. The task fills the
//! slot when it finishes, panics (the panic is caught at the poll and carried as
//! [`JoinError::Panicked`]), is aborted ([`JoinError::Aborted`]) or is dropped
//! unfinished at runtime shutdown ([`JoinError::Cancelled`]). Dropping the handle
//! detaches the task.
//!
//! # Aborting
//! An abort never touches the future: the future belongs to its worker thread, and may
//! be neither `Sync` nor safe to drop elsewhere. [`JoinState::abort`] raises the
//! `aborted` flag and wakes the task; the task reads the flag (one atomic load) before
//! every poll, and when it is set drops its future in place, on its worker, and reports
//! [`JoinError::Aborted`]. To wake a task that nothing else would ever wake (one awaiting
//! a future that never completes), the task publishes its waker word (the integer that
//! names it, see `waker.rs`) at its first poll; an abort that finds it wakes the task
//! through the worker table, which is generation-checked, so a stale word (the task has
//! finished, its slot reused) wakes nothing. An abort that comes before the first poll
//! needs no wake-up: a task is queued to run when it is spawned. The flag and the word
//! are published with sequentially consistent operations on both sides, so at least one
//! side sees the other: either the first poll sees the flag, or the abort sees the word.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::sync::{Unwinds, replace_waker};

/// Why a task produced no value.
#[non_exhaustive]
pub enum JoinError {
    /// The task panicked; the payload is what it panicked with.
    Panicked(Box<dyn Any + Send + 'static>),
    /// The task was dropped unfinished because its runtime shut down (or was already
    /// gone when the task was spawned, or its worker died).
    Cancelled,
    /// The task was aborted ([`JoinHandle::abort`], [`AbortHandle::abort`], a
    /// [`JoinSet`](crate::JoinSet) aborting its tasks) before it finished.
    Aborted,
    /// There was no memory to store the task; it never ran.
    OutOfMemory,
    /// The runtime's task table was full (as many tasks alive as
    /// [`Builder::max_tasks`](crate::Builder::max_tasks) allows); the task never ran.
    TaskTableFull,
}

impl JoinError {
    /// Whether the task panicked.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let error = runtime
    ///     .block_on(async { pagekeep_executor::spawn(async { panic!("on purpose") }).await })
    ///     .unwrap_err();
    /// assert!(error.is_panic());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// Whether the task was stopped before it finished: aborted, or dropped by its
    /// runtime's shutdown ([`Aborted`](Self::Aborted) or [`Cancelled`](Self::Cancelled)),
    /// as tokio's `JoinError::is_cancelled` says of both.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let error = runtime
    ///     .block_on(async {
    ///         let task = pagekeep_executor::spawn(std::future::pending::<()>());
    ///         task.abort();
    ///         task.await
    ///     })
    ///     .unwrap_err();
    /// assert!(error.is_cancelled());
    /// assert!(matches!(error, pagekeep_executor::JoinError::Aborted));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled | Self::Aborted)
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(_) => f.write_str("JoinError::Panicked(..)"),
            Self::Cancelled => f.write_str("JoinError::Cancelled"),
            Self::Aborted => f.write_str("JoinError::Aborted"),
            Self::OutOfMemory => f.write_str("JoinError::OutOfMemory"),
            Self::TaskTableFull => f.write_str("JoinError::TaskTableFull"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked(_) => f.write_str("task panicked"),
            Self::Cancelled => {
                f.write_str("task cancelled: its runtime shut down or its worker stopped")
            }
            Self::Aborted => f.write_str("task aborted"),
            Self::OutOfMemory => f.write_str("no memory to store the task; it never ran"),
            Self::TaskTableFull => {
                f.write_str("the runtime's task table is full; the task never ran")
            }
        }
    }
}

impl std::error::Error for JoinError {}

struct Slot<T> {
    result: Option<Result<T, JoinError>>,
    waker: Option<Waker>,
    /// The task has finished and its result is gone: taken by the handle, or dropped
    /// because the handle is gone.
    taken: bool,
    /// The handle is gone: an outcome recorded from now on is dropped at once (on the
    /// task's side, its destructor's panic contained), as nobody will take it.
    detached: bool,
}

/// Shared between a task and its [`JoinHandle`] (and [`AbortHandle`]s). See the module
/// docs.
pub(crate) struct JoinState<T> {
    slot: Mutex<Slot<T>>,
    /// Raised by the first abort; read by the task before every poll.
    aborted: AtomicBool,
    /// The task's waker word (`waker::encode`), valid once `task_published` is set.
    task_word: AtomicUsize,
    /// The task has published `task_word` (at its first poll on a worker).
    task_published: AtomicBool,
}

impl<T> JoinState<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            slot: Mutex::new(Slot {
                result: None,
                waker: None,
                taken: false,
                detached: false,
            }),
            aborted: AtomicBool::new(false),
            task_word: AtomicUsize::new(0),
            task_published: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        crate::sync::lock(&self.slot)
    }

    /// Records the outcome (the first one wins) and wakes the handle. An outcome nobody
    /// will take (a second one, or the handle is gone) is dropped here, after the lock,
    /// a panic of its destructor contained.
    pub(crate) fn complete(&self, result: Result<T, JoinError>) {
        let waker = {
            let mut slot = self.lock();
            if slot.result.is_some() || slot.taken || slot.detached {
                // Finished all the same (for `is_finished` and aborts).
                slot.taken = true;
                drop(slot);
                crate::sync::drop_contained(result);
                return;
            }
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the task has finished (its outcome is recorded or was taken).
    pub(crate) fn is_finished(&self) -> bool {
        let slot = self.lock();
        slot.result.is_some() || slot.taken
    }

    /// Whether an abort was requested; the task reads it before every poll.
    #[inline]
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Publishes the word of the task's waker so that an abort can wake it (see the
    /// module docs); called by the task at its first poll.
    pub(crate) fn publish_task(&self, word: usize) {
        self.task_word.store(word, Ordering::Relaxed);
        self.task_published.store(true, Ordering::SeqCst);
    }

    /// Requests the task's abort and wakes it. Does nothing when the task has finished
    /// or an abort was already requested. Never runs user code: the task drops its own
    /// future on its worker.
    pub(crate) fn abort(&self) {
        if self.is_finished() || self.aborted.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.task_published.load(Ordering::SeqCst) {
            let (worker, key) = crate::waker::decode(self.task_word.load(Ordering::Relaxed));
            crate::scheduler::wake_task(worker, key);
        }
    }

    /// Makes `waker` the one woken when the task finishes; wakes it at once when the
    /// task has finished already. For [`JoinSet`](crate::JoinSet), which never polls
    /// the handle.
    pub(crate) fn register_waker(&self, waker: Waker) {
        let replaced = {
            let mut slot = self.lock();
            if slot.result.is_some() {
                Err(waker)
            } else {
                Ok(slot.waker.replace(waker))
            }
        };
        match replaced {
            // The old waker is dropped here, outside the lock.
            Ok(old) => drop(old),
            Err(waker) => waker.wake(),
        }
    }

    /// The handle's drop: forgets its waker and drops an outcome waiting to be taken,
    /// both after the lock, the outcome's destructor's panic contained (it is the task's
    /// output, or a panic's payload: user code); an outcome recorded later is dropped by
    /// [`complete`](Self::complete).
    fn detach(&self) {
        let (result, waker) = {
            let mut slot = self.lock();
            slot.detached = true;
            let result = slot.result.take();
            slot.taken |= result.is_some();
            (result, slot.waker.take())
        };
        let mut unwinds = Unwinds::new();
        unwinds.run(|| drop(waker));
        crate::sync::drop_contained(result);
        unwinds.finish();
    }

    /// Forgets the registered waker (dropped outside the lock).
    pub(crate) fn clear_waker(&self) {
        let old = self.lock().waker.take();
        drop(old);
    }

    /// Takes the outcome if the task has finished.
    pub(crate) fn take_result(&self) -> Option<Result<T, JoinError>> {
        let mut slot = self.lock();
        let result = slot.result.take();
        slot.taken |= result.is_some();
        result
    }
}

/// What an [`AbortHandle`] needs of a task's state, whatever its output type.
trait TaskControl: Send + Sync {
    fn abort(&self);
    fn is_finished(&self) -> bool;
}

impl<T: Send> TaskControl for JoinState<T> {
    fn abort(&self) {
        JoinState::abort(self);
    }
    fn is_finished(&self) -> bool {
        JoinState::is_finished(self)
    }
}

/// Owned permission to await a spawned task's output. Dropping it detaches the task;
/// an output nobody took (now, or when the task finishes later) is dropped with a panic
/// of its destructor contained.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let handle: pagekeep_executor::JoinHandle<u32> = runtime.spawn(async { 7 });
/// assert_eq!(runtime.block_on(handle).unwrap(), 7);
/// # Ok::<(), std::io::Error>(())
/// ```
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

    pub(crate) fn state(&self) -> &Arc<JoinState<T>> {
        &self.state
    }

    /// Whether the task has finished (its output is waiting to be taken).
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let pending = runtime.spawn(std::future::pending::<()>());
    /// assert!(!pending.is_finished());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// Aborts the task: unless it has finished, it is not polled again, its future is
    /// dropped on a worker thread of its runtime at the next opportunity (it is woken for that,
    /// even if nothing else would ever wake it) and this handle resolves to
    /// [`JoinError::Aborted`]. A task that has finished keeps its output. A task aborted
    /// while it is being polled (by itself, say) is stopped before its next poll; if it
    /// finishes in that poll, it keeps its output. Aborting twice is the same as once.
    ///
    /// A [`spawn_blocking`](crate::spawn_blocking) closure cannot be interrupted: an
    /// abort only stops one that has not started yet.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let forever = runtime.spawn(std::future::pending::<()>());
    /// forever.abort();
    /// assert!(matches!(
    ///     runtime.block_on(forever),
    ///     Err(pagekeep_executor::JoinError::Aborted)
    /// ));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort(&self) {
        self.state.abort();
    }
}

impl<T: Send + 'static> JoinHandle<T> {
    /// A handle that aborts this task, which may be cloned, sent to other threads and
    /// kept after this handle is awaited or dropped.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let task = runtime.spawn(std::future::pending::<()>());
    /// let abort = task.abort_handle();
    /// std::thread::spawn(move || abort.abort()).join().unwrap();
    /// assert!(runtime.block_on(task).unwrap_err().is_cancelled());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            control: Arc::clone(&self.state) as Arc<dyn TaskControl>,
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // With the task's budget spent, the output stays in the join record.
        let coop = std::task::ready!(crate::coop::poll_proceed(cx));
        // Cloned before the lock: a clone may panic, and must not with the lock held.
        let waker = cx.waker().clone();
        let unused = {
            let mut slot = self.state.lock();
            if let Some(result) = slot.result.take() {
                slot.taken = true;
                drop(slot);
                drop(waker);
                coop.made_progress();
                return Poll::Ready(result);
            }
            if slot.taken {
                drop(slot);
                panic!("JoinHandle polled after completion");
            }
            replace_waker(&mut slot.waker, waker)
        };
        // The waker not kept is dropped outside the lock.
        drop(unused);
        Poll::Pending
    }
}

impl<T> Drop for JoinHandle<T> {
    /// Detaches the task; an output waiting to be taken is dropped here, a panic of its
    /// destructor contained.
    fn drop(&mut self) {
        self.state.detach();
    }
}

/// Aborts a spawned task without owning its output: see [`JoinHandle::abort`]. Cheap to
/// clone (a reference count); works from any thread, after the [`JoinHandle`] is gone,
/// and after the task or its runtime is gone (then it does nothing).
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let task = runtime.spawn(std::future::pending::<()>());
/// let abort = task.abort_handle();
/// drop(task); // detached; the abort handle still reaches it
/// assert!(!abort.is_finished());
/// abort.abort();
/// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
/// while !abort.is_finished() && std::time::Instant::now() < deadline {
///     std::thread::sleep(std::time::Duration::from_millis(1));
/// }
/// assert!(abort.is_finished());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct AbortHandle {
    control: Arc<dyn TaskControl>,
}

impl AbortHandle {
    /// Aborts the task, as [`JoinHandle::abort`] does.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let task = runtime.spawn(std::future::pending::<()>());
    /// task.abort_handle().abort();
    /// assert!(runtime.block_on(task).unwrap_err().is_cancelled());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abort(&self) {
        self.control.abort();
    }

    /// Whether the task has finished: with its output, a panic, an abort or a
    /// cancellation.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let task = runtime.spawn(async { 1 });
    /// let abort = task.abort_handle();
    /// assert_eq!(runtime.block_on(task).unwrap(), 1);
    /// assert!(abort.is_finished());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.control.is_finished()
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// The join record and the task wrapper as state machines, without worker threads
/// (these also run under miri).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskCell;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts its drops; optionally panics in its destructor.
    struct Recorder {
        drops: Arc<AtomicUsize>,
        panic_on_drop: bool,
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
            if self.panic_on_drop {
                panic!("a destructor panics on purpose");
            }
        }
    }

    /// A task that never finishes, holding a [`Recorder`].
    fn forever(
        drops: &Arc<AtomicUsize>,
        panic_on_drop: bool,
    ) -> impl Future<Output = u32> + Send + 'static {
        let recorder = Recorder {
            drops: Arc::clone(drops),
            panic_on_drop,
        };
        async move {
            let _recorder = recorder;
            std::future::pending::<u32>().await
        }
    }

    fn poll_cell<F: Future>(cell: &mut Pin<Box<TaskCell<F>>>) -> Poll<()> {
        cell.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    fn outcome<T>(handle: JoinHandle<T>) -> Result<T, JoinError> {
        let mut handle = std::pin::pin!(handle);
        match handle
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("the task has not finished"),
        }
    }

    #[test]
    fn abort_before_the_first_poll_drops_the_future_then_reports_aborted() {
        let drops = Arc::new(AtomicUsize::new(0));
        let join = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let mut cell = Box::pin(TaskCell::new(forever(&drops, false), Arc::clone(&join)));
        handle.abort();
        assert!(!handle.is_finished(), "nothing happens until the task runs");
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "never dropped by the aborter"
        );
        assert!(poll_cell(&mut cell).is_ready());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(handle.is_finished());
        assert!(matches!(outcome(handle), Err(JoinError::Aborted)));
        drop(cell);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped once");
    }

    #[test]
    fn abort_of_a_pending_task_twice_and_after_the_handle_is_gone() {
        let drops = Arc::new(AtomicUsize::new(0));
        let join = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let mut cell = Box::pin(TaskCell::new(forever(&drops, false), Arc::clone(&join)));
        assert!(poll_cell(&mut cell).is_pending());
        let abort = handle.abort_handle();
        let copy = abort.clone();
        drop(handle);
        abort.abort();
        copy.abort();
        assert!(!abort.is_finished());
        assert!(poll_cell(&mut cell).is_ready());
        assert!(abort.is_finished());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // Polled again (a stale wake-up), it stays finished.
        assert!(poll_cell(&mut cell).is_ready());
        assert_eq!(
            format!("{abort:?}"),
            "AbortHandle { finished: true }",
            "Debug says it"
        );
    }

    #[test]
    fn abort_after_completion_keeps_the_value() {
        let join = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let mut cell = Box::pin(TaskCell::new(async { 5_u32 }, Arc::clone(&join)));
        assert!(poll_cell(&mut cell).is_ready());
        handle.abort();
        handle.abort();
        assert!(poll_cell(&mut cell).is_ready());
        assert_eq!(outcome(handle).ok(), Some(5));
    }

    #[test]
    fn a_task_that_aborts_itself_stops_before_its_next_poll() {
        let drops = Arc::new(AtomicUsize::new(0));
        let join: Arc<JoinState<u32>> = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let own = handle.abort_handle();
        let recorder = Recorder {
            drops: Arc::clone(&drops),
            panic_on_drop: false,
        };
        let mut cell = Box::pin(TaskCell::new(
            async move {
                let _recorder = recorder;
                own.abort();
                std::future::pending::<u32>().await
            },
            Arc::clone(&join),
        ));
        assert!(poll_cell(&mut cell).is_pending(), "the poll itself goes on");
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert!(poll_cell(&mut cell).is_ready());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(matches!(outcome(handle), Err(JoinError::Aborted)));
    }

    #[test]
    fn a_task_that_aborts_itself_and_finishes_in_the_same_poll_keeps_its_value() {
        let join: Arc<JoinState<u32>> = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let own = handle.abort_handle();
        let mut cell = Box::pin(TaskCell::new(
            async move {
                own.abort();
                7
            },
            Arc::clone(&join),
        ));
        assert!(poll_cell(&mut cell).is_ready());
        assert_eq!(outcome(handle).ok(), Some(7));
    }

    #[test]
    fn a_destructor_that_panics_during_an_abort_is_contained() {
        let drops = Arc::new(AtomicUsize::new(0));
        let join = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let mut cell = Box::pin(TaskCell::new(forever(&drops, true), Arc::clone(&join)));
        assert!(poll_cell(&mut cell).is_pending());
        handle.abort();
        assert!(poll_cell(&mut cell).is_ready());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(matches!(outcome(handle), Err(JoinError::Aborted)));
    }

    #[test]
    fn a_task_dropped_unfinished_drops_its_future_first_and_reports_cancelled() {
        let drops = Arc::new(AtomicUsize::new(0));
        let join = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let mut cell = Box::pin(TaskCell::new(forever(&drops, true), Arc::clone(&join)));
        assert!(poll_cell(&mut cell).is_pending());
        drop(cell);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let error = outcome(handle).unwrap_err();
        assert!(error.is_cancelled() && !error.is_panic());
        assert_eq!(
            error.to_string(),
            "task cancelled: its runtime shut down or its worker stopped"
        );
    }

    #[test]
    fn an_abort_wakes_the_published_task_through_a_generation_checked_word() {
        // A word naming a worker-table entry no worker holds: the wake goes nowhere,
        // harmlessly, as a stale word after the runtime is gone does.
        let join: Arc<JoinState<()>> = JoinState::new();
        let key = crate::task::store::TaskKey {
            slot: 3,
            generation: 9,
        };
        join.publish_task(crate::waker::encode(crate::waker::MAX_WORKERS - 1, key));
        join.abort();
        assert!(join.is_aborted());
        assert!(!join.is_finished());
    }

    struct CountsWakes(AtomicUsize);

    impl Wake for CountsWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_registered_waker_is_woken_once_at_completion_or_at_once_when_done() {
        let wakes = Arc::new(CountsWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let join: Arc<JoinState<u8>> = JoinState::new();
        join.register_waker(waker.clone());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        join.complete(Ok(1));
        join.complete(Ok(2));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the first outcome wins");
        join.register_waker(waker.clone());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2, "finished: woken at once");
        assert_eq!(join.take_result().and_then(Result::ok), Some(1));
        assert!(join.take_result().is_none());
        assert!(join.is_finished());

        let cleared: Arc<JoinState<u8>> = JoinState::new();
        cleared.register_waker(waker.clone());
        cleared.clear_waker();
        cleared.complete(Ok(3));
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            2,
            "a cleared waker is not woken"
        );
    }

    /// An outcome nobody took is dropped with its handle (or, once the handle is gone,
    /// when it is recorded), its destructor's panic contained: a task's output, a
    /// panic's payload, and with an `AbortHandle` outliving both.
    #[test]
    fn an_outcome_whose_destructor_panics_is_dropped_contained() {
        let drops = Arc::new(AtomicUsize::new(0));
        let recorder = || Recorder {
            drops: Arc::clone(&drops),
            panic_on_drop: true,
        };
        let join = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        join.complete(Ok(recorder()));
        drop(handle);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        let join: Arc<JoinState<u8>> = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        join.complete(Err(JoinError::Panicked(Box::new(recorder()))));
        drop(handle);
        assert_eq!(drops.load(Ordering::SeqCst), 2);

        let join = JoinState::new();
        let handle = JoinHandle::new(Arc::clone(&join));
        let abort = handle.abort_handle();
        drop(handle);
        join.complete(Ok(recorder()));
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert!(abort.is_finished());
        drop(join);
        drop(abort);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
    }

    /// A waker whose clone takes the join record's lock (and then panics): the clone is
    /// made before the lock is taken.
    #[test]
    fn a_waker_clone_runs_outside_the_lock() {
        let join: Arc<JoinState<u8>> = JoinState::new();
        let mut handle = JoinHandle::new(Arc::clone(&join));
        crate::sync::test_support::with_clone_hook(&|| assert!(!join.is_finished()), |waker| {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = Pin::new(&mut handle).poll(&mut Context::from_waker(waker));
            }));
            assert!(caught.is_err());
        });
        join.complete(Ok(4));
        assert_eq!(outcome(handle).ok(), Some(4));
    }
}
