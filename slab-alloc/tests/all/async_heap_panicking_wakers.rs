//! A free can re-raise the panic of a waiter's waker it wakes (the wake happens, the
//! other waiters are served, then the panic comes out of the free). The structures whose
//! operation frees must still be whole when it does.

use core::alloc::Layout;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::Wake;

use pagekeep_slab::async_heap::{AsyncHeap, HeapBox, HeapVec};

struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("a waiter's waker panics");
    }
}

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

/// A vector grows into a new buffer; freeing its old one serves a waiter whose waker
/// panics. The vector must own the new buffer by then: it used to keep pointing at the
/// freed old one, and dropping it dropped its elements there again (miri: a dangling
/// reference; natively, a crash).
#[test]
fn a_vector_whose_growth_panics_in_the_free_stays_whole() {
    let heap = AsyncHeap::new(4096);
    let noop = Waker::noop();
    let mut vector: HeapVec<String> =
        match poll_once(core::pin::pin!(HeapVec::with_capacity(&heap, 1)), noop) {
            Poll::Ready(vector) => vector,
            Poll::Pending => panic!("room for one element"),
        };
    vector.try_push("kept".repeat(10)).unwrap();
    let element_charge = heap.charge(Layout::array::<String>(1).unwrap()).unwrap();
    let mut fill: Vec<HeapBox<[u8; 24]>> = Vec::new();
    while let Ok(block) = heap.try_alloc([0u8; 24]) {
        fill.push(block);
    }
    let mut small = Vec::new();
    while let Ok(block) = heap.try_alloc([0u8; 8]) {
        small.push(block);
    }
    assert_eq!(heap.available(), 0);
    // The growth queues first, a waiter with a panicking waker behind it.
    let mut grow = Box::pin(vector.reserve(1));
    assert!(poll_once(grow.as_mut(), noop).is_pending());
    let panicking = Waker::from(Arc::new(PanickingWaker));
    let mut behind = Box::pin(heap.alloc_layout(Layout::from_size_align(24, 8).unwrap()));
    assert!(poll_once(behind.as_mut(), &panicking).is_pending());
    // Room for the growth only; the old buffer's free then serves the waiter behind.
    let needed = heap.charge(Layout::array::<String>(4).unwrap()).unwrap();
    let mut freed = 0;
    while freed < needed {
        drop(fill.pop());
        freed += element_charge;
    }
    let grown = catch_unwind(AssertUnwindSafe(|| poll_once(grow.as_mut(), noop)));
    assert!(
        grown.is_err(),
        "the waiter's waker panic comes out of the growth"
    );
    drop(grow);
    drop(behind);
    assert_eq!(vector.len(), 1);
    assert_eq!(vector[0], "kept".repeat(10));
    assert!(vector.capacity() > 1, "the vector owns its new buffer");
    drop(vector);
    drop(fill);
    drop(small);
    assert_eq!(heap.available(), heap.capacity(), "every byte came back");
}
