//! Unit tests of the heap and its handles (also run under miri:
//! `cargo +nightly miri test -p pagekeep-slab --lib async_heap`).

use core::alloc::Layout;
use core::future::Future;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use std::sync::Arc;
use std::task::Wake;

use super::*;

/// Wakes a parked thread.
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking between polls.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Polls once with a waker that does nothing.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Counts its drops.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn box_holds_and_gives_back_its_bytes() {
    let heap = AsyncHeap::new(256);
    let boxed = block_on(heap.alloc([7u8; 100]));
    assert_eq!(boxed[99], 7);
    assert_eq!(
        heap.available(),
        256 - heap.charge(Layout::new::<[u8; 100]>()).unwrap()
    );
    drop(boxed);
    assert_eq!(heap.available(), 256);
}

/// The future of `alloc` owns its value until it returns the box: dropped unpolled, or
/// dropped while it waits, it drops the value once; served after a wait, the value is in
/// the box, dropped once with it.
#[test]
fn an_alloc_future_drops_its_value_once_whenever_it_is_dropped() {
    let drops = AtomicUsize::new(0);
    let heap = AsyncHeap::new(64);
    drop(heap.alloc(Counted(&drops)));
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    let full = heap.try_alloc([0u8; 64]).unwrap_or_else(|_| panic!("room"));
    {
        let mut waiting = pin!(heap.alloc(Counted(&drops)));
        assert!(poll_once(waiting.as_mut()).is_pending());
        assert_eq!(heap.waiters(), 1);
    }
    assert_eq!(drops.load(Ordering::Relaxed), 2);
    assert_eq!(heap.waiters(), 0);
    let mut waiting = pin!(heap.alloc(Counted(&drops)));
    assert!(poll_once(waiting.as_mut()).is_pending());
    drop(full);
    let Poll::Ready(boxed) = poll_once(waiting.as_mut()) else {
        panic!("served by the free");
    };
    assert_eq!(drops.load(Ordering::Relaxed), 2);
    drop(boxed);
    assert_eq!(drops.load(Ordering::Relaxed), 3);
    assert_eq!(heap.available(), 64);
}

#[test]
fn box_drops_its_value_once() {
    let drops = AtomicUsize::new(0);
    let heap = AsyncHeap::new(256);
    let boxed = block_on(heap.alloc(Counted(&drops)));
    drop(boxed);
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    let boxed = heap
        .try_alloc(Counted(&drops))
        .unwrap_or_else(|_| panic!("room"));
    let value = HeapBox::into_inner(boxed);
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    drop(value);
    assert_eq!(drops.load(Ordering::Relaxed), 2);
    assert_eq!(heap.available(), 256);
}

#[test]
fn slices_zero_sized_values_and_raw_round_trips() {
    let heap = AsyncHeap::new(1024);
    let slice = block_on(heap.alloc_slice_copy(&[1u32, 2, 3]));
    assert_eq!(&*slice, &[1, 2, 3]);
    let empty = block_on(heap.alloc_slice_copy::<u64>(&[]));
    assert!(empty.is_empty());
    let unit = block_on(heap.alloc(()));
    assert_eq!(*unit, ());
    let raw = HeapBox::into_raw(slice);
    // SAFETY: taken back once from the box given up above.
    let slice = unsafe { HeapBox::from_raw(&heap, raw) };
    assert_eq!(slice.len(), 3);
    drop((slice, empty, unit));
    assert_eq!(heap.available(), 1024);
}

#[test]
fn alloc_with_gives_the_block_back_when_the_closure_panics() {
    let heap = AsyncHeap::new(1024);
    let result = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
        block_on(heap.alloc_with::<u64>(|| panic!("halfway")))
    }));
    assert!(result.is_err());
    assert_eq!(heap.available(), 1024);
    let built = block_on(heap.alloc_with(|| [3u16; 8]));
    assert_eq!(built[7], 3);
}

#[test]
fn arc_is_shared_and_freed_by_the_last_reference() {
    let drops = AtomicUsize::new(0);
    let heap = AsyncHeap::new(1024);
    let first = block_on(HeapArc::new(&heap, Counted(&drops)));
    let second = first.clone();
    assert!(HeapArc::ptr_eq(&first, &second));
    assert_eq!(HeapArc::references(&first), 2);
    std::thread::scope(|scope| {
        scope.spawn(move || drop(second));
    });
    assert_eq!(drops.load(Ordering::Relaxed), 0);
    drop(first);
    assert_eq!(drops.load(Ordering::Relaxed), 1);
    assert_eq!(heap.available(), 1024);

    let mut only = HeapArc::try_new(&heap, 5u32).unwrap();
    *HeapArc::get_mut(&mut only).unwrap() += 1;
    let other = only.clone();
    assert!(HeapArc::get_mut(&mut only).is_none());
    let only = HeapArc::try_unwrap(only).unwrap_err();
    drop(other);
    assert_eq!(HeapArc::try_unwrap(only).ok(), Some(6));
    assert_eq!(heap.available(), 1024);
}

#[test]
fn vec_grows_keeps_its_elements_and_frees_its_buffers() {
    let drops = AtomicUsize::new(0);
    let heap = AsyncHeap::new(4096);
    block_on(async {
        let mut vec = HeapVec::new(&heap);
        for _ in 0..40 {
            vec.push(Counted(&drops)).await;
        }
        assert_eq!(vec.len(), 40);
        vec.truncate(30);
        assert_eq!(drops.load(Ordering::Relaxed), 10);
        let mut numbers = HeapVec::with_capacity(&heap, 3).await;
        numbers.extend_from_slice(&[1u8, 2, 3]).await;
        assert_eq!(numbers.capacity(), 3);
        numbers.try_push(4).unwrap();
        assert_eq!(&*numbers, &[1, 2, 3, 4]);
        assert_eq!(numbers.pop(), Some(4));
    });
    assert_eq!(drops.load(Ordering::Relaxed), 40);
    assert_eq!(heap.available(), 4096);
}

#[test]
fn vec_of_zero_sized_values_never_allocates() {
    let heap = AsyncHeap::new(64);
    let mut vec = HeapVec::new(&heap);
    for _ in 0..1000 {
        vec.try_push(()).unwrap();
    }
    assert_eq!(vec.len(), 1000);
    assert_eq!(heap.available(), 64);
}

#[test]
fn a_full_heap_makes_the_next_request_wait_until_a_free() {
    let heap = AsyncHeap::new(128);
    let first = heap.try_alloc([0u8; 128]).unwrap();
    assert!(heap.try_alloc(1u8).is_err());
    let mut waiting = pin!(heap.alloc(9u64));
    assert!(poll_once(waiting.as_mut()).is_pending());
    assert_eq!(heap.waiters(), 1);
    drop(first);
    assert_eq!(heap.waiters(), 0);
    let Poll::Ready(second) = poll_once(waiting.as_mut()) else {
        panic!("the free served the waiter")
    };
    assert_eq!(*second, 9);
}

#[test]
fn waiters_are_served_in_order_and_a_big_head_is_not_overtaken() {
    let heap = AsyncHeap::new(256);
    let held = heap.try_alloc([0u8; 256]).unwrap();
    let mut big = pin!(heap.alloc([1u8; 256]));
    let mut small = pin!(heap.alloc(2u8));
    assert!(poll_once(big.as_mut()).is_pending());
    assert!(poll_once(small.as_mut()).is_pending());
    drop(held);
    // The big one is served first; the small one waits behind it, room or not.
    let Poll::Ready(big) = poll_once(big.as_mut()) else {
        panic!("head first")
    };
    assert!(poll_once(small.as_mut()).is_pending());
    assert!(heap.try_alloc(3u8).is_err(), "try_alloc overtook a waiter");
    drop(big);
    assert!(poll_once(small.as_mut()).is_ready());
}

#[test]
fn a_dropped_waiter_gives_its_place_and_its_granted_bytes_back() {
    let heap = AsyncHeap::new(128);
    let held = heap.try_alloc([0u8; 128]).unwrap();
    let mut first = Box::pin(heap.alloc([1u8; 128]));
    let mut second = Box::pin(heap.alloc([2u8; 64]));
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    // Cancelled while waiting: its place goes to the next.
    drop(first);
    assert_eq!(heap.waiters(), 1);
    drop(held);
    // The second was granted its bytes by the free, but is dropped before it runs.
    assert_eq!(heap.waiters(), 0);
    assert_eq!(heap.available(), 64);
    drop(second);
    assert_eq!(heap.available(), 128);
}

#[test]
fn wakers_run_outside_the_lock() {
    /// A waker that uses the heap (taking its lock) when woken.
    struct Reentrant<'a>(&'a AsyncHeap, AtomicUsize);
    impl Reentrant<'_> {
        fn wake(&self) {
            // Would spin forever if woken under the queue's lock.
            let _ = self.0.waiters();
            drop(self.0.try_alloc(0u8));
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }
    let heap = AsyncHeap::new(64);
    let waker_state = Reentrant(&heap, AtomicUsize::new(0));
    let held = heap.try_alloc([0u8; 64]).unwrap();
    let mut waiting = pin!(heap.alloc([0u8; 64]));
    let raw = core::task::RawWaker::new(
        (&raw const waker_state).cast(),
        &core::task::RawWakerVTable::new(
            |data| core::task::RawWaker::new(data, reentrant_vtable()),
            |_| unreachable!("only woken by reference"),
            // SAFETY: (test) `data` is `waker_state`, alive for the whole test.
            |data| unsafe { (*data.cast::<Reentrant<'_>>()).wake() },
            |_| {},
        ),
    );
    fn reentrant_vtable() -> &'static core::task::RawWakerVTable {
        &core::task::RawWakerVTable::new(
            |data| core::task::RawWaker::new(data, reentrant_vtable()),
            // SAFETY: (test) `data` is the test's `Reentrant`, alive for the whole test.
            |data| unsafe { (*data.cast::<Reentrant<'_>>()).wake() },
            // SAFETY: as above.
            |data| unsafe { (*data.cast::<Reentrant<'_>>()).wake() },
            |_| {},
        )
    }
    // SAFETY: (test) the vtable's functions are sound for `waker_state`, which outlives
    // every clone (the future is dropped first).
    let waker = unsafe { Waker::from_raw(raw) };
    assert!(
        waiting
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    drop(held);
    assert_eq!(waker_state.1.load(Ordering::Relaxed), 1);
    assert!(poll_once(waiting.as_mut()).is_ready());
}

#[test]
fn large_blocks_come_from_the_source_in_whole_pages() {
    let heap = AsyncHeap::new(1 << 20);
    let layout = Layout::from_size_align(200 * 1024, 4096).unwrap();
    assert_eq!(heap.charge(layout), Some(200 * 1024));
    let block = block_on(heap.alloc_layout(layout));
    assert_eq!(block.as_ptr().addr().get() % 4096, 0);
    // SAFETY: the block holds `layout.size()` bytes.
    unsafe { block.as_ptr().write_bytes(5, layout.size()) };
    assert_eq!(heap.available(), (1 << 20) - 200 * 1024);
    drop(block);
    assert_eq!(heap.available(), 1 << 20);
}

#[test]
#[should_panic(expected = "more than the heap's capacity")]
fn a_request_beyond_the_capacity_panics_instead_of_waiting_forever() {
    let heap = AsyncHeap::new(64);
    drop(block_on(heap.alloc([0u8; 65])));
}

#[test]
fn handles_are_send_and_sync_as_their_values() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AsyncHeap>();
    send_sync::<HeapBox<'static, u32>>();
    send_sync::<HeapArc<'static, u32>>();
    send_sync::<HeapVec<'static, u32>>();
    send_sync::<HeapBlock<'static>>();
    send_sync::<RegionPages>();
    // The allocation futures, for tasks of multi-threaded executors.
    fn send<T: Send>(_: &T) {}
    let heap = AsyncHeap::new(64);
    send(&heap.alloc(1u32));
    send(&heap.alloc_layout(Layout::new::<u32>()));
}

/// The credit of a thread that exited is taken back for a request that needs it: the
/// first poll of a request for the whole capacity is served, and `try_alloc` of the
/// whole capacity succeeds.
#[test]
fn credits_of_exited_threads_are_taken_back() {
    let capacity = 64 * 1024;
    let heap = AsyncHeap::new(capacity);
    std::thread::scope(|scope| {
        scope.spawn(|| drop(heap.try_alloc(0u64).expect("room")));
    });
    assert_eq!(heap.available(), capacity, "credits count as available");
    let layout = Layout::from_size_align(capacity, 1).unwrap();
    let mut whole = pin!(heap.alloc_layout(layout));
    let Poll::Ready(block) = poll_once(whole.as_mut()) else {
        panic!("the exited thread's credit was not taken back");
    };
    assert_eq!(heap.available(), 0);
    drop(block);
    std::thread::scope(|scope| {
        scope.spawn(|| drop(heap.try_alloc(0u64).expect("room")));
    });
    let block = heap.try_alloc_layout(layout).expect("credits taken back");
    drop(block);
    assert_eq!(heap.available(), capacity);
}

/// A waiter for the whole capacity is served when a thread that keeps a credit frees
/// its block, whatever the thread does afterwards (here: nothing more with the heap).
#[test]
fn a_waiter_gets_the_credit_of_a_thread_that_frees() {
    let capacity = 64 * 1024;
    let heap = AsyncHeap::new(capacity);
    let (taken_sender, taken) = std::sync::mpsc::channel();
    let (free_sender, free) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let heap = &heap;
        scope.spawn(move || {
            let block = heap.try_alloc([0u8; 64]).expect("room");
            taken_sender.send(()).unwrap();
            free.recv().unwrap();
            drop(block);
            // Stays alive, idle, until the waiter is served.
            free.recv().ok();
        });
        taken.recv().unwrap();
        let layout = Layout::from_size_align(capacity, 1).unwrap();
        let mut whole = pin!(heap.alloc_layout(layout));
        assert!(poll_once(whole.as_mut()).is_pending(), "a block is live");
        free_sender.send(()).unwrap();
        let block = block_on(whole);
        assert_eq!(heap.available(), 0);
        drop(block);
        drop(free_sender);
    });
    assert_eq!(heap.available(), capacity);
}

/// A heap over a source that fails on demand (heap pages, so it runs under miri).
fn failing_heap(
    source: &pagekeep_mmap::FailingSource<pagekeep_mmap::HeapPages>,
) -> AsyncHeap<&pagekeep_mmap::FailingSource<pagekeep_mmap::HeapPages>> {
    AsyncHeap::with_source(source, 1 << 20)
}

/// Issue 21: a request whose bytes are granted but whose block the source cannot supply
/// waits (it aborted the process), retries once per free and no more (no busy loop),
/// and completes once a free comes after the source recovers. Frees of short blocks go
/// past the magazines during the shortage (`free_to_slab`, with the slab's provenance).
#[test]
fn a_starved_request_retries_once_per_free_then_completes() {
    let source = pagekeep_mmap::FailingSource::new(pagekeep_mmap::HeapPages);
    let heap = failing_heap(&source);
    let mut boxes: Vec<_> = (0..4u8)
        .map(|value| heap.try_alloc(value).unwrap())
        .collect();
    let available = heap.available();
    source.set_failing(true);
    // A class never used: it needs a slab from the source.
    assert!(heap.try_alloc([0u8; 100]).is_err(), "the source fails");
    assert_eq!(heap.available(), available, "the bytes went back");
    let mut starved = pin!(heap.alloc([7u8; 100]));
    assert!(poll_once(starved.as_mut()).is_pending());
    assert_eq!(heap.waiters(), 1);
    assert!(heap.try_alloc(1u8).is_err(), "someone waits");
    let requests = source.requests();
    for _ in 0..3 {
        assert!(poll_once(starved.as_mut()).is_pending());
    }
    assert_eq!(source.requests(), requests, "no attempt without a free");
    drop(boxes.pop());
    assert!(poll_once(starved.as_mut()).is_pending());
    let after_one_free = source.requests();
    assert!(after_one_free > requests, "a free brings an attempt");
    source.set_failing(false);
    assert!(poll_once(starved.as_mut()).is_pending());
    assert_eq!(source.requests(), after_one_free, "one attempt per free");
    drop(boxes.pop());
    let Poll::Ready(block) = poll_once(starved.as_mut()) else {
        panic!("the free after the source recovered did not serve the request");
    };
    assert_eq!(*block, [7u8; 100]);
    assert_eq!(heap.waiters(), 0);
    drop((block, boxes));
    assert_eq!(heap.available(), heap.capacity());
}

/// A starved request dropped while it waits leaves no entry and no bytes behind; one
/// granted by a free and dropped before it runs gives its bytes back. Large blocks
/// starve and come back the same way (their free counts an event).
#[test]
fn starved_requests_cancel_cleanly_and_large_blocks_starve_too() {
    let source = pagekeep_mmap::FailingSource::new(pagekeep_mmap::HeapPages);
    let heap = failing_heap(&source);
    let keep = heap.try_alloc(1u64).unwrap();
    let large = heap
        .try_alloc_layout(Layout::from_size_align(200 << 10, 8).unwrap())
        .unwrap();
    source.set_failing(true);
    {
        let mut starved = pin!(heap.alloc([0u8; 300]));
        assert!(poll_once(starved.as_mut()).is_pending());
    }
    assert_eq!(heap.waiters(), 0, "the dropped request left");
    {
        let mut starved = pin!(heap.alloc_layout(Layout::from_size_align(300 << 10, 8).unwrap()));
        assert!(poll_once(starved.as_mut()).is_pending());
        // Granted its bytes by this free's event, dropped before it runs.
        drop(large);
    }
    assert_eq!(heap.waiters(), 0);
    source.set_failing(false);
    drop(keep);
    assert_eq!(heap.available(), heap.capacity(), "every byte came back");
    assert!(heap.try_alloc([0u8; 300]).is_ok(), "the heap stays usable");
}

/// A starved request's waker that panics when a free's event serves it: the free
/// re-raises the panic once its block and bytes are back, and the request, granted,
/// completes on its next poll; the heap is whole afterwards.
#[test]
fn a_starved_request_whose_waker_panics_leaves_the_heap_whole() {
    struct Panics;
    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("a starved request's waker panics");
        }
    }
    let source = pagekeep_mmap::FailingSource::new(pagekeep_mmap::HeapPages);
    let heap = failing_heap(&source);
    let mut boxes: Vec<_> = (0..2u8)
        .map(|value| heap.try_alloc(value).unwrap())
        .collect();
    source.set_failing(true);
    let mut starved = pin!(heap.alloc([3u8; 100]));
    let panicking = Waker::from(Arc::new(Panics));
    assert!(
        starved
            .as_mut()
            .poll(&mut Context::from_waker(&panicking))
            .is_pending()
    );
    source.set_failing(false);
    let freed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(boxes.pop())));
    assert!(
        freed.is_err(),
        "the waker's panic reaches the freeing thread"
    );
    let Poll::Ready(block) = poll_once(starved.as_mut()) else {
        panic!("the granted request did not complete");
    };
    assert_eq!(*block, [3u8; 100]);
    drop((block, boxes));
    assert_eq!((heap.available(), heap.waiters()), (heap.capacity(), 0));
}

/// Issue 21: a thread's exit is a source event. Blocks another thread freed before the
/// shortage sit in its magazines; when it exits they go back to their class, and the
/// starved request is granted an attempt (whose trim releases the emptied slab). It
/// used to wait for the next free of the heap instead.
#[test]
fn a_thread_exit_grants_a_starved_request_an_attempt() {
    let source = pagekeep_mmap::FailingSource::new(pagekeep_mmap::HeapPages);
    let heap = failing_heap(&source);
    // Live, of another class than the exiting thread's blocks.
    let held = heap.try_alloc([1u8; 200]).unwrap();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let heap = &heap;
        let thread = scope.spawn(move || {
            let boxes: Vec<_> = (0..8u64)
                .map(|value| heap.try_alloc(value).unwrap())
                .collect();
            drop(boxes);
            freed_tx.send(()).unwrap();
            let _ = exit_rx.recv();
        });
        freed_rx.recv().unwrap();
        source.set_failing(true);
        let mut starved = pin!(heap.alloc([7u8; 100]));
        assert!(poll_once(starved.as_mut()).is_pending());
        let requests = source.requests();
        assert!(poll_once(starved.as_mut()).is_pending());
        assert_eq!(source.requests(), requests, "no attempt without an event");
        drop(exit_tx);
        thread.join().unwrap();
        assert!(poll_once(starved.as_mut()).is_pending());
        assert!(
            source.requests() > requests,
            "the thread's exit brought an attempt"
        );
        source.set_failing(false);
        drop(held);
        let Poll::Ready(block) = poll_once(starved.as_mut()) else {
            panic!("the free after the source recovered did not serve the request");
        };
        assert_eq!(*block, [7u8; 100]);
    });
    assert_eq!((heap.available(), heap.waiters()), (heap.capacity(), 0));
}
