//! [`Handle`]: a cloneable way into a runtime, from any thread.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::blocking::BlockingPool;
use crate::join::JoinHandle;
use crate::runtime::Spawner;

/// A cloneable reference to a [`Runtime`](crate::Runtime) that spawns onto its workers
/// and its blocking pool from any thread: worker threads, blocking threads, and threads
/// the runtime knows nothing of.
///
/// A handle does not keep the runtime running: once the runtime is dropped, whatever is
/// spawned through a handle that outlived it is dropped at once, unpolled (on the
/// spawning thread), and its [`JoinHandle`] resolves to
/// [`JoinError::Cancelled`](crate::JoinError::Cancelled). Nothing panics and nothing
/// waits.
///
/// Cost: [`spawn`](Handle::spawn) is what [`Runtime::spawn`](crate::Runtime::spawn)
/// costs (the task block, its join record and, off the target worker, one push into its
/// inbox under a short lock plus at most one `eventfd` write per batch); cloning a
/// handle is one reference count.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(2).build()?;
/// let handle = runtime.handle().clone();
/// // A thread the runtime knows nothing of spawns onto it.
/// let task = std::thread::spawn(move || handle.spawn(async { 6 * 7 }))
///     .join()
///     .unwrap();
/// assert_eq!(runtime.block_on(task).unwrap(), 42);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    spawner: Spawner,
    blocking: BlockingPool,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("workers", &self.inner.spawner.worker_count())
            .field("blocking", &self.inner.blocking)
            .finish()
    }
}

/// The error of [`Handle::try_current`]: the calling thread belongs to no runtime.
///
/// # Examples
/// ```
/// let error = pagekeep_executor::Handle::try_current().unwrap_err();
/// assert!(error.to_string().contains("not a pagekeep-executor runtime thread"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryCurrentError(());

impl fmt::Display for TryCurrentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a pagekeep-executor runtime thread (a worker or a blocking-pool thread); \
             pass a Handle (Runtime::handle) to other threads",
        )
    }
}

impl std::error::Error for TryCurrentError {}

impl Handle {
    pub(crate) fn new(spawner: Spawner, blocking: BlockingPool) -> Self {
        Self {
            inner: Arc::new(HandleInner { spawner, blocking }),
        }
    }

    pub(crate) fn spawner(&self) -> &Spawner {
        &self.inner.spawner
    }

    pub(crate) fn blocking_pool(&self) -> &BlockingPool {
        &self.inner.blocking
    }

    /// The handle of the runtime the calling thread belongs to: one of its workers, or
    /// one of its blocking threads.
    ///
    /// # Panics
    /// On any other thread; [`try_current`](Handle::try_current) says so instead.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let workers = runtime.block_on(async {
    ///     let handle = pagekeep_executor::Handle::current();
    ///     handle.spawn(async { 1 }).await.unwrap()
    /// });
    /// assert_eq!(workers, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[track_caller]
    pub fn current() -> Self {
        match Self::try_current() {
            Ok(handle) => handle,
            Err(error) => panic!("Handle::current: {error}"),
        }
    }

    /// The handle of the runtime the calling thread belongs to, or an error off runtime
    /// threads.
    ///
    /// # Errors
    /// When the calling thread is neither a worker nor a blocking thread of a runtime.
    ///
    /// # Examples
    /// ```
    /// assert!(pagekeep_executor::Handle::try_current().is_err());
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// assert!(runtime.block_on(async { pagekeep_executor::Handle::try_current().is_ok() }));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_current() -> Result<Self, TryCurrentError> {
        crate::worker::with_local(|local| local.handle.clone())
            .or_else(crate::blocking::current_handle)
            .ok_or(TryCurrentError(()))
    }

    /// Spawns `future` onto the runtime from any thread: a worker of this runtime queues it
    /// itself (idle workers steal it), any other thread through the runtime's injector; see
    /// the type's docs for a runtime that is gone.
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(2).build()?;
    /// let handle = runtime.handle().clone();
    /// drop(runtime);
    /// // The runtime is gone: the task is dropped, its handle reports a cancellation.
    /// let task = handle.spawn(async { 1 });
    /// assert!(task.is_finished());
    /// let mut task = std::pin::pin!(task);
    /// let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    /// match task.as_mut().poll(&mut context) {
    ///     std::task::Poll::Ready(result) => assert!(result.unwrap_err().is_cancelled()),
    ///     std::task::Poll::Pending => unreachable!("a refused task is finished at once"),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.spawner.spawn(future)
    }

    /// Runs `work` on the runtime's blocking pool; see
    /// [`spawn_blocking`](crate::spawn_blocking).
    ///
    /// # Examples
    /// ```
    /// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    /// let task = runtime.handle().spawn_blocking(|| std::fs::metadata("/").is_ok());
    /// assert!(runtime.block_on(task).unwrap());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_blocking<W, R>(&self, work: W) -> JoinHandle<R>
    where
        W: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        crate::blocking::spawn(self, work)
    }
}
