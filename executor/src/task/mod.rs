//! Tasks: [`spawn`], [`current_worker`] and [`unconstrained`] (which opts a future out
//! of the cooperative budget; see the crate docs, Cooperative budget).
//!
//! Inside the crate: the wrapper that connects a spawned future to its [`JoinHandle`],
//! the worker-local store that owns them, and the type-erased task block.

pub(crate) mod store;
pub(crate) mod task_box;

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use crate::coop::{Unconstrained, unconstrained};
use crate::join::{JoinError, JoinHandle, JoinState};
use task_box::TaskBox;

/// A spawned future plus the record its [`JoinHandle`] reads.
pub(crate) struct TaskCell<F: Future> {
    /// Structurally pinned: never moved out of the (boxed, pinned) cell; dropped in
    /// place, once, by [`TaskCell::drop_future`] (when the task finishes, is aborted or
    /// is dropped), so that its destructors have run before the handle sees the outcome.
    future: ManuallyDrop<F>,
    join: Arc<JoinState<F::Output>>,
    /// The outcome is recorded; the future is never polled again.
    done: bool,
    /// `future` has been dropped.
    future_dropped: bool,
    /// The waker word has been published for aborts (first poll).
    published: bool,
}

impl<F: Future> TaskCell<F> {
    pub(crate) fn new(future: F, join: Arc<JoinState<F::Output>>) -> Self {
        Self {
            future: ManuallyDrop::new(future),
            join,
            done: false,
            future_dropped: false,
            published: false,
        }
    }

    /// Drops the future in place, once; a destructor's panic is contained (user code,
    /// on the worker).
    fn drop_future(&mut self) {
        if self.future_dropped {
            return;
        }
        self.future_dropped = true;
        let future = &mut self.future;
        // SAFETY: `future_dropped` was clear, so the future is live and this is its one
        // drop; it is dropped where it is, as pinning requires, and never touched again
        // (`poll` checks `done`, set by every caller before or right after this).
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { ManuallyDrop::drop(future) }));
        if let Err(payload) = dropped {
            crate::sync::discard_panic(payload);
        }
    }

    /// Records `result` after dropping the future.
    fn finish(&mut self, result: Result<F::Output, JoinError>) {
        self.done = true;
        self.drop_future();
        self.join.complete(result);
    }
}

impl<F: Future> Future for TaskCell<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `future` is structurally pinned: it is never moved out of the cell, and
        // nothing hands out `&mut F` outside a `Pin` (it is only dropped in place). The
        // other fields are not pinned and are only read or written in place.
        let this = unsafe { self.get_unchecked_mut() };
        if this.done {
            return Poll::Ready(());
        }
        if !this.published {
            this.published = true;
            // Only the runtime's own task wakers carry a word an abort can use; a task
            // polled with another waker (a unit test's) is simply not woken by aborts.
            if crate::waker::is_task_waker(cx.waker()) {
                this.join.publish_task(cx.waker().data().addr());
            }
        }
        if this.join.is_aborted() {
            this.finish(Err(JoinError::Aborted));
            return Poll::Ready(());
        }
        // SAFETY: see above; `this.future` is live (`done` is clear) and stays where it
        // is until it is dropped in place.
        let future = unsafe { Pin::new_unchecked(&mut *this.future) };
        // A panicking task must not take its worker down: catch it at the poll boundary,
        // report it to the handle, and never poll the future again.
        let outcome = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
        let result = match outcome {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(JoinError::Panicked(payload)),
        };
        this.finish(result);
        Poll::Ready(())
    }
}

impl<F: Future> Drop for TaskCell<F> {
    fn drop(&mut self) {
        self.drop_future();
        if !self.done {
            self.done = true;
            self.join.complete(Err(JoinError::Cancelled));
        }
    }
}

/// Puts `future` in a task block for a worker and makes its handle. Without memory for
/// the block, the future is dropped and the handle reports
/// [`JoinError::OutOfMemory`] instead of the process aborting.
pub(crate) fn package<F>(future: F) -> (Option<TaskBox>, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let join = JoinState::new();
    let cell = TaskCell::new(future, Arc::clone(&join));
    let task = match TaskBox::new(cell) {
        Ok(task) => Some(task),
        Err(mut cell) => {
            cell.finish(Err(JoinError::OutOfMemory));
            None
        }
    };
    (task, JoinHandle::new(join))
}

/// Spawns `future` on the current worker thread.
///
/// # Panics
/// Outside an executor worker thread; use [`Runtime::spawn`](crate::Runtime::spawn)
/// there.
///
/// # Examples
/// ```
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// let sum = runtime.block_on(async {
///     let child = pagekeep_executor::spawn(async { 20 + 1 });
///     child.await.unwrap() * 2
/// });
/// assert_eq!(sum, 42);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // A spawned task is not part of the request that spawns it: it may outlive it, so
    // its memory comes from outside the request's arena.
    let (task, handle) = pagekeep_arena::outside_arena(|| package(future));
    let scheduler = crate::worker::with_local(|local| Arc::clone(&local.scheduler))
        .expect("pagekeep_executor::spawn called outside an executor worker thread");
    if let Some(task) = task
        && let Err(refused) = scheduler.spawn(task, None)
    {
        refuse(&handle, refused);
    }
    handle
}

/// Drops a future the task table refused, its handle reporting why: a full table as
/// [`JoinError::TaskTableFull`], a runtime shutting down as a cancellation (what the
/// dropped task reports itself).
pub(crate) fn refuse<T>(handle: &JoinHandle<T>, refused: store::Refused) {
    if refused.reason == store::Refusal::Full {
        // The first outcome recorded wins: the dropped task's `Cancelled` is discarded.
        handle.state().complete(Err(JoinError::TaskTableFull));
    }
    drop(refused.future);
}

/// The process-wide index of the worker running the current thread (the index task
/// wakers carry; unique among live workers of all runtimes), or `None` off worker
/// threads.
pub fn current_worker() -> Option<usize> {
    crate::worker::with_local(|local| local.shared.index())
}
