//! Tasks: the wrapper that connects a spawned future to its [`JoinHandle`], the
//! worker-local [`store`] that owns them, and the `spawn` entry points.

pub(crate) mod store;
pub(crate) mod task_box;

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::join::{JoinError, JoinHandle, JoinState};
use task_box::TaskBox;

/// A spawned future plus the record its [`JoinHandle`] reads.
struct TaskCell<F: Future> {
    /// Structurally pinned: never moved out of the (boxed, pinned) cell.
    future: F,
    join: Arc<JoinState<F::Output>>,
    done: bool,
}

impl<F: Future> Future for TaskCell<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `future` is structurally pinned: it is never moved out of the cell, and
        // neither `Drop` below nor anything else hands out `&mut F` outside a `Pin`. The
        // other fields are not pinned and are only read or written in place.
        let this = unsafe { self.get_unchecked_mut() };
        if this.done {
            return Poll::Ready(());
        }
        // SAFETY: see above; `this.future` stays where it is until the cell is dropped.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        // A panicking task must not take its worker down: catch it at the poll boundary,
        // report it to the handle, and never poll the future again.
        let outcome = catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
        let result = match outcome {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(JoinError::Panicked(payload)),
        };
        this.done = true;
        this.join.complete(result);
        Poll::Ready(())
    }
}

impl<F: Future> Drop for TaskCell<F> {
    fn drop(&mut self) {
        if !self.done {
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
    let cell = TaskCell {
        future,
        join: Arc::clone(&join),
        done: false,
    };
    let task = match TaskBox::new(cell) {
        Ok(task) => Some(task),
        Err(mut cell) => {
            cell.join.complete(Err(JoinError::OutOfMemory));
            cell.done = true;
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
    crate::worker::with_local(move |local| {
        if let Some(task) = task {
            local.spawn(task);
        }
    })
    .expect("pagekeep_executor::spawn called outside an executor worker thread");
    handle
}

/// The process-wide index of the worker running the current thread (the index task
/// wakers carry; unique among live workers of all runtimes), or `None` off worker
/// threads.
pub fn current_worker() -> Option<usize> {
    crate::worker::with_local(|local| local.shared.index())
}
