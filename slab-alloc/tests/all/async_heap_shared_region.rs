//! Review of issue 21: two heaps over clones of one `RegionPages`. While heap A held the
//! whole region, a request of heap B (which held nothing of it: no bookkeeping yet)
//! panicked as one the region "cannot supply even with nothing live", though A's frees
//! would give the region back. The verdict now needs what the heap holds of the region
//! plus the reservation refused to exceed the region's length, which no other user of
//! the region can change.

use core::alloc::Layout;
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Waker};

use pagekeep_mmap::Region;
use pagekeep_slab::SLAB_BYTES;
use pagekeep_slab::async_heap::{AsyncHeap, RegionPages};

/// Heap A fills a region shared with heap B (fresh: nothing allocated on it yet); B's
/// request for a small block then waits, without panicking, and leaves cleanly when
/// dropped.
#[test]
#[cfg_attr(miri, ignore = "an 8 MiB region")]
fn a_heap_over_a_region_another_heap_holds_waits_instead_of_panicking() {
    let region =
        RegionPages::from_region(Region::reserve_committed(8 << 20, SLAB_BYTES).unwrap()).unwrap();
    let a = AsyncHeap::with_source(region.clone(), 64 << 20);
    let b = AsyncHeap::with_source(region.clone(), 64 << 20);
    let big = Layout::from_size_align(256 << 10, 4096).unwrap();
    let mut held = Vec::new();
    while let Ok(block) = a.try_alloc_layout(big) {
        held.push(block);
    }
    assert!(
        held.len() >= 30,
        "A holds the region: {} blocks",
        held.len()
    );
    assert!(
        b.try_alloc(0xABCDu64).is_err(),
        "B finds no room for its bookkeeping"
    );
    {
        let mut request = pin!(b.alloc(0xABCDu64));
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            request
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        }));
        assert!(
            matches!(polled, Ok(true)),
            "B's request waits for the region A holds (a panic here is the false verdict)"
        );
        assert_eq!(b.waiters(), 1);
    }
    assert_eq!((b.available(), b.waiters()), (b.capacity(), 0));
    // Once A gives the region back, B is served (a new request: A's frees are no
    // events of B's: a region serves one heap, see `RegionPages`' docs).
    drop(held);
    assert_eq!(*b.try_alloc(0xABCDu64).unwrap(), 0xABCD);
}
