//! [`TaskBox`]: where a spawned task's future lives: a block of the runtime's own slab
//! heap, not of the global allocator.
//!
//! Futures of every type are spawned, so tasks are type-erased and come in many sizes:
//! pagekeep-slab's `SlabHeap`, a set of slab caches by size class with per-thread
//! magazines, is the slab that fits (an `ObjectCache` holds one type). A dedicated heap
//! keeps task memory apart from request arenas and from the rest of the process: a
//! connection's task is allocated and freed on its worker's thread, from that
//! thread's magazine, in slabs shared only with other tasks.

use std::alloc::Layout;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use pagekeep_slab::SlabHeap;

/// The runtime's task heap, shared by every worker.
static TASK_HEAP: SlabHeap = SlabHeap::new();

/// A type-erased task future in [`TASK_HEAP`]; pinned for its whole life (it is never
/// moved out of its block).
pub(crate) struct TaskBox {
    future: NonNull<dyn Future<Output = ()> + Send>,
}

// SAFETY: the box owns a `Send` future; nothing else refers to its block.
unsafe impl Send for TaskBox {}

/// The block layout for a value of `layout` (zero-sized futures still get a block).
fn block_layout(layout: Layout) -> Layout {
    // The padded size is a multiple of a valid alignment and never overflows: it is at
    // most `max(size, align)` of an existing layout.
    Layout::from_size_align(layout.size().max(layout.align()), layout.align())
        .expect("a block for an existing layout")
}

impl TaskBox {
    /// Moves `future` into a block of the task heap; gives it back when the heap is out
    /// of memory.
    pub(crate) fn new<F>(future: F) -> Result<TaskBox, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let layout = block_layout(Layout::new::<F>());
        let Ok(block) = TASK_HEAP.allocate(layout) else {
            return Err(future);
        };
        let typed = block.cast::<F>();
        // SAFETY: the block is fresh, large and aligned enough for `F`.
        unsafe { typed.as_ptr().write(future) };
        Ok(TaskBox { future: typed })
    }

    /// The future, pinned: it stays in its block until the box is dropped.
    pub(crate) fn as_mut(&mut self) -> Pin<&mut (dyn Future<Output = ()> + Send)> {
        // SAFETY: the block holds a live future that is never moved (the box hands out
        // only pinned references and drops it in place).
        unsafe { Pin::new_unchecked(self.future.as_mut()) }
    }
}

impl Drop for TaskBox {
    /// Drops the future (a finished task's leftovers, its output when its handle is
    /// gone, or an unfinished task being cancelled): user code, so a panic in it is
    /// contained here and the worker goes on. The block is freed either way.
    fn drop(&mut self) {
        // SAFETY: the future is live; its layout comes from its own vtable.
        let layout = block_layout(Layout::for_value(unsafe { self.future.as_ref() }));
        let future = self.future.as_ptr();
        // SAFETY: dropped exactly once, in place, as pinning requires; a destructor that
        // panics still counts as the drop (`drop_in_place` drops the remaining fields
        // while unwinding) and the block is not touched again but to be freed.
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe {
            std::ptr::drop_in_place(future)
        }));
        if let Err(payload) = dropped {
            crate::sync::discard_panic(payload);
        }
        // SAFETY: the block came from `TASK_HEAP` with this layout and is dead now.
        unsafe { TASK_HEAP.deallocate(self.future.cast(), layout) };
    }
}

impl std::fmt::Debug for TaskBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBox").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    struct CountsDrops(Arc<AtomicUsize>, [u64; 5]);

    impl Future for CountsDrops {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            assert_eq!(self.1, [1, 2, 3, 4, 5], "contents survive in the block");
            Poll::Ready(())
        }
    }

    impl Drop for CountsDrops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn polls_and_drops_the_future_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut task = TaskBox::new(CountsDrops(Arc::clone(&drops), [1, 2, 3, 4, 5]))
            .unwrap_or_else(|_| panic!("task heap exhausted"));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(task.as_mut().poll(&mut cx).is_ready());
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop(task);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_destructor_that_panics_is_contained_and_the_rest_dropped() {
        struct PanicsOnDrop;
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("a destructor panics on purpose");
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let counted = CountsDrops(Arc::clone(&drops), [1, 2, 3, 4, 5]);
        let guard = PanicsOnDrop;
        let task = TaskBox::new(async move {
            let _first = guard;
            let _second = counted;
            std::future::pending::<()>().await;
        })
        .unwrap_or_else(|_| panic!("task heap exhausted"));
        let mut task = task;
        let mut cx = Context::from_waker(Waker::noop());
        assert!(task.as_mut().poll(&mut cx).is_pending());
        // Unwinding out of a drop here would take the worker with it.
        drop(task);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "the other local was dropped"
        );
    }

    #[test]
    fn zero_sized_and_overaligned_futures_get_blocks() {
        #[repr(align(256))]
        struct Aligned(u8);
        impl Future for Aligned {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                assert_eq!(self.0, 1);
                Poll::Ready(())
            }
        }
        let mut empty = TaskBox::new(async {}).unwrap_or_else(|_| panic!("exhausted"));
        let mut aligned = TaskBox::new(Aligned(1)).unwrap_or_else(|_| panic!("exhausted"));
        assert_eq!(aligned.future.cast::<u8>().as_ptr().addr() % 256, 0);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(empty.as_mut().poll(&mut cx).is_ready());
        assert!(aligned.as_mut().poll(&mut cx).is_ready());
    }
}
