//! Exhaustion through a failing page source: errors, never aborts, and recovery.

use core::alloc::{GlobalAlloc, Layout};

use allocator_api2::alloc::Allocator;
use pagekeep_mmap::{FailingSource, HeapPages};
use pagekeep_slab::{CacheConfig, CacheError, ObjectCache, SlabCache, SlabHeap};

#[test]
fn slab_cache_fails_and_recovers() {
    let source = FailingSource::new(HeapPages);
    let cache = SlabCache::with_config(CacheConfig::new(1024, 8), &source).unwrap();
    source.set_failing(true);
    assert!(cache.try_alloc().is_err(), "no slab can be made");
    source.recover();
    let object = cache.try_alloc().expect("usable again once memory is back");
    // Exhaust the slab it came from, then fail the next one.
    source.set_failing(true);
    let mut held = vec![object];
    while let Ok(object) = cache.try_alloc() {
        held.push(object);
        assert!(held.len() < 10_000, "the source never failed");
    }
    assert!(source.injected_failures() >= 2);
    source.recover();
    held.push(cache.try_alloc().unwrap());
    for object in held {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
    }
    cache.check_invariants();
    assert_eq!(cache.stats().objects_live, 0);
}

#[test]
fn cache_creation_reports_the_source_error() {
    let source = FailingSource::new(HeapPages);
    source.fail_nth(1);
    let error = SlabCache::with_config(CacheConfig::new(64, 8), &source).unwrap_err();
    assert!(matches!(error, CacheError::Source(_)), "{error:?}");
    assert!(
        ObjectCache::with_source(&source, None::<Box<dyn Fn() -> u8 + Send + Sync>>, 1).is_ok()
    );
}

#[test]
fn heap_returns_null_and_alloc_error_then_recovers() {
    let source = FailingSource::new(HeapPages);
    let heap = SlabHeap::with_source(&source);
    let layout = Layout::from_size_align(100, 8).unwrap();
    source.set_failing(true);
    // SAFETY: non-zero size.
    let failed = unsafe { heap.alloc(layout) };
    assert!(failed.is_null(), "no classes can be built");
    assert!(heap.allocate(layout).is_err());
    source.recover();
    // SAFETY: non-zero size.
    let block = unsafe { heap.alloc(layout) };
    assert!(!block.is_null());
    source.set_failing(true);
    let other = Layout::from_size_align(3000, 8).unwrap();
    assert!(heap.allocate(other).is_err(), "a class without slabs fails");
    // SAFETY: non-zero size; a class whose magazine already holds objects still serves.
    let again = unsafe { heap.alloc(layout) };
    assert!(!again.is_null());
    source.recover();
    let recovered = heap.allocate(other).expect("usable again");
    // SAFETY: live blocks, freed once.
    unsafe {
        heap.dealloc(block, layout);
        heap.dealloc(again, layout);
        heap.deallocate(recovered.cast(), other);
    }
    heap.check_invariants();
}

#[test]
fn object_cache_try_get_fails_cleanly() {
    let source = FailingSource::new(HeapPages);
    let cache = ObjectCache::with_source(&source, Some(Box::new(|| [1u32; 8])), 1).unwrap();
    source.set_failing(true);
    assert!(cache.try_get().is_err());
    source.recover();
    assert_eq!(*cache.try_get().unwrap(), [1; 8]);
}
