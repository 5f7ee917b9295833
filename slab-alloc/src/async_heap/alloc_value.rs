//! [`AllocValue`]: the future of [`AsyncHeap::alloc`], written by hand so that the value
//! stays where the future was built until its block is there, and is moved once, into
//! the block.
//!
//! An `async fn` moves its arguments into the body's own locals at its first poll (a
//! second copy of the value, besides the one into the future) and carries a state
//! machine around the fast attempt. This future tries the fast path
//! ([`AsyncHeap::try_alloc_layout`]) at its first poll, writes the value straight from its
//! field into the block, and builds the waiting future
//! ([`AsyncHeap::alloc_layout`]) only when there is no room at once.

use core::alloc::Layout;
use core::fmt;
use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll};

use pagekeep_mmap::PageSource;

use super::{AsyncHeap, HeapBlock, HeapBox};

/// The future of [`AsyncHeap::alloc`]: a `T` moved into the heap, waiting for room.
///
/// `wait` makes the waiting future (`AsyncHeap::alloc_layout`, passed as a function item,
/// zero-sized and `Copy`, so that the future's type can be named here) from the heap and
/// `T`'s layout.
///
/// Pinning: `future` (of [`State::Waiting`]) is pinned with the whole; `value` is not
/// (it is moved out, into the block, and never handed out pinned).
pub(super) struct AllocValue<'h, T, S: PageSource + Clone, W, F> {
    heap: &'h AsyncHeap<S>,
    /// The value, owned by this future while `state` is not [`State::Done`]; moved into
    /// its block (and `state` set to `Done`) by the poll that returns `Ready`.
    value: ManuallyDrop<T>,
    state: State<W, F>,
}

/// Where an [`AllocValue`] is.
enum State<W, F> {
    /// Not polled yet.
    Start(W),
    /// Waiting for room: the future of `alloc_layout`.
    Waiting(F),
    /// The value is in its block and the box was returned.
    Done,
}

impl<'h, T, S: PageSource + Clone, W, F> AllocValue<'h, T, S, W, F>
where
    W: FnOnce(&'h AsyncHeap<S>, Layout) -> F + Copy,
    F: Future<Output = HeapBlock<'h, S>>,
{
    /// A future that moves `value` into `heap`, waiting (with the future `wait` makes)
    /// when there is no room at once.
    #[inline(always)]
    pub(super) fn new(heap: &'h AsyncHeap<S>, value: T, wait: W) -> Self {
        AllocValue {
            heap,
            value: ManuallyDrop::new(value),
            state: State::Start(wait),
        }
    }
}

impl<'h, T, S: PageSource + Clone, W, F> Future for AllocValue<'h, T, S, W, F>
where
    W: FnOnce(&'h AsyncHeap<S>, Layout) -> F + Copy,
    F: Future<Output = HeapBlock<'h, S>>,
{
    type Output = HeapBox<'h, T, S>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: nothing below moves the future of `State::Waiting` out of its place: it
        // is polled through a `Pin` made from its place, and dropped in place when
        // `state` is overwritten. `value` is not pinned (see the type's docs), and no
        // other field is.
        let this = unsafe { self.get_unchecked_mut() };
        let block = match &mut this.state {
            State::Start(_) => match this.heap.try_alloc_layout(Layout::new::<T>()) {
                Ok(block) => block,
                Err(_) => {
                    let State::Start(wait) = this.state else {
                        unreachable!("the state was just seen")
                    };
                    this.state = State::Waiting(wait(this.heap, Layout::new::<T>()));
                    let State::Waiting(future) = &mut this.state else {
                        unreachable!("the state was just set")
                    };
                    // SAFETY: the future is in its place in the pinned whole (above).
                    match unsafe { Pin::new_unchecked(future) }.poll(cx) {
                        Poll::Ready(block) => block,
                        Poll::Pending => return Poll::Pending,
                    }
                }
            },
            // SAFETY: as above.
            State::Waiting(future) => match unsafe { Pin::new_unchecked(future) }.poll(cx) {
                Poll::Ready(block) => block,
                Poll::Pending => return Poll::Pending,
            },
            State::Done => panic!("`AsyncHeap::alloc` polled after it returned its box"),
        };
        // The waiting future (if any) is done with: dropped here, before the value leaves
        // this future, so that no unwinding can find the value both moved out and still
        // owned. Should that drop panic, the assignment still writes `Done` (an
        // assignment writes the new value whether the old one's drop unwinds or not):
        // the block, in `block`, is freed by the unwinding and the value stays here,
        // leaked, never dropped twice.
        this.state = State::Done;
        // SAFETY: `state` was not `Done` when this poll began, so the value is still here;
        // it is read once: with `state` now `Done`, neither a later poll (it panics) nor
        // the drop touches it.
        let value = unsafe { ManuallyDrop::take(&mut this.value) };
        Poll::Ready(HeapBox::write(block, value))
    }
}

impl<T, S: PageSource + Clone, W, F> Drop for AllocValue<'_, T, S, W, F> {
    fn drop(&mut self) {
        if !matches!(self.state, State::Done) {
            // SAFETY: `state` is not `Done`: the value is still owned here, and this is
            // its only drop (the future goes away).
            unsafe { ManuallyDrop::drop(&mut self.value) };
        }
        // `state` (the waiting future, if any) is dropped in place after this.
    }
}

impl<T, S: PageSource + Clone, W, F> fmt::Debug for AllocValue<'_, T, S, W, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start(_) => "start",
            State::Waiting(_) => "waiting",
            State::Done => "done",
        };
        f.debug_struct("AllocValue")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
