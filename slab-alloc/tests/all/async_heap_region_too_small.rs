//! Issue 21: a region too small for the heap's bookkeeping, or for the slab or run a
//! request needs, served nothing, and a waiting request waited for ever with nothing
//! live (no free could ever come). Such a request now fails at once: `try_alloc`
//! returns an error and the waiting calls panic, naming the cause.

use core::alloc::Layout;
use std::time::Duration;

use pagekeep_mmap::Region;
use pagekeep_slab::SLAB_BYTES;
use pagekeep_slab::async_heap::{AsyncHeap, RegionPages};

use crate::async_support::block_on_for;

fn heap_over(region: usize, capacity: usize) -> AsyncHeap<RegionPages> {
    let pages =
        RegionPages::from_region(Region::reserve_committed(region, SLAB_BYTES).unwrap()).unwrap();
    AsyncHeap::with_source(pages, capacity)
}

/// Runs the waiting allocation of `layout` for up to 5 s and returns its panic message:
/// it must fail at once, not wait (the old code waited for ever: `None` here).
fn waiting_allocation_panics(heap: &AsyncHeap<RegionPages>, layout: Layout) -> String {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on_for(heap.alloc_layout(layout), Duration::from_secs(5)).map(drop)
    }));
    match outcome {
        Ok(Some(())) => panic!("the region served a block it has no room for"),
        Ok(None) => panic!("the request waited although nothing could ever free"),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            assert!(
                message.contains("cannot supply"),
                "the panic names the cause: {message}"
            );
            message
        }
    }
}

/// The heap is whole after the failed request: nothing held, nobody waiting.
fn assert_whole(heap: &AsyncHeap<RegionPages>) {
    assert_eq!((heap.available(), heap.waiters()), (heap.capacity(), 0));
}

/// 1 MiB: less than the heap's bookkeeping (its classes' headers and depots, about
/// 1.6 MiB, taken from the source at the first small allocation).
#[test]
#[cfg_attr(miri, ignore = "a wait with a deadline")]
fn a_region_below_the_bookkeeping_fails_small_requests_at_once() {
    let heap = heap_over(1 << 20, 1 << 20);
    assert!(heap.try_alloc(1u64).is_err());
    waiting_allocation_panics(&heap, Layout::new::<u64>());
    assert_whole(&heap);
}

/// 1.75 MiB: the bookkeeping fits, an aligned 256 KiB slab after it does not.
#[test]
#[cfg_attr(miri, ignore = "a wait with a deadline")]
fn a_region_without_room_for_a_slab_fails_small_requests_at_once() {
    let heap = heap_over(7 * SLAB_BYTES, 1 << 20);
    assert!(heap.try_alloc(1u64).is_err());
    waiting_allocation_panics(&heap, Layout::new::<u64>());
    assert_whole(&heap);
}

/// A large block longer than the whole region (its charge within the capacity).
#[test]
#[cfg_attr(miri, ignore = "a wait with a deadline")]
fn a_block_longer_than_the_region_fails_at_once() {
    let heap = heap_over(4 << 20, 64 << 20);
    let layout = Layout::from_size_align(8 << 20, 8).unwrap();
    assert!(heap.try_alloc_layout(layout).is_err());
    waiting_allocation_panics(&heap, layout);
    assert_whole(&heap);
    // The heap still serves what fits.
    let block = block_on_for(heap.alloc(7u64), Duration::from_secs(5)).expect("served");
    assert_eq!(*block, 7);
}

/// A request the region cannot supply while blocks are live is no such failure: it
/// waits for their frees, and completes.
#[test]
#[cfg_attr(miri, ignore = "a wait with a deadline")]
fn a_request_waits_while_something_live_may_free() {
    let heap = heap_over(4 << 20, 64 << 20);
    let layout = Layout::from_size_align(1 << 20, 8).unwrap();
    let mut held = Vec::new();
    while let Ok(block) = heap.try_alloc([0u8; 2048]) {
        held.push(block);
    }
    let mut waiting = Box::pin(heap.alloc_layout(layout));
    let noop = core::task::Waker::noop();
    assert!(
        core::future::Future::poll(waiting.as_mut(), &mut core::task::Context::from_waker(noop))
            .is_pending()
    );
    drop(held);
    assert!(block_on_for(waiting, Duration::from_secs(5)).is_some());
    assert_whole(&heap);
}

/// Review of issue 21: a large block longer than the whole region waited for ever as
/// soon as anything was live (a block still held, or one given to `mem::forget`), as
/// the heap did not hold "nothing but its bookkeeping". The region's length bounds
/// every reservation, so such a request fails at once whatever is live.
fn a_block_longer_than_the_region_fails_at_once_with_a_block(leaked: bool) {
    let heap = heap_over(4 << 20, 64 << 20);
    let live = heap.try_alloc(1u64).unwrap();
    let live = if leaked {
        core::mem::forget(live);
        None
    } else {
        Some(live)
    };
    let layout = Layout::from_size_align(8 << 20, 4096).unwrap();
    let available = heap.available();
    assert!(heap.try_alloc_layout(layout).is_err());
    waiting_allocation_panics(&heap, layout);
    assert_eq!((heap.available(), heap.waiters()), (available, 0));
    // The heap still serves what fits.
    let block = block_on_for(heap.alloc(7u64), Duration::from_secs(5)).expect("served");
    assert_eq!(*block, 7);
    assert!(live.is_none_or(|live| *live == 1));
}

#[test]
#[cfg_attr(miri, ignore = "a wait with a deadline")]
fn a_block_longer_than_the_region_fails_at_once_while_a_block_is_leaked() {
    a_block_longer_than_the_region_fails_at_once_with_a_block(true);
}

#[test]
#[cfg_attr(miri, ignore = "a wait with a deadline")]
fn a_block_longer_than_the_region_fails_at_once_while_a_block_is_live() {
    a_block_longer_than_the_region_fails_at_once_with_a_block(false);
}
