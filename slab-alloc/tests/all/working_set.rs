//! The working-set bound on empty slabs, and its hysteresis.

use mmap_alloc::{FailingSource, HeapPages};
use slab_alloc::{CacheConfig, SlabCache};

#[test]
fn empty_slabs_are_bounded_and_ping_pong_makes_no_source_calls() {
    let source = FailingSource::new(HeapPages);
    let mut config = CacheConfig::new(4096, 4096);
    config.max_empty_slabs = 4;
    config.magazines = false; // frees go straight to the slabs
    let cache = SlabCache::with_config(config, &source).unwrap();
    let per_slab = cache.stats().objects_per_slab;
    let all: Vec<_> = (0..per_slab * 8).map(|_| cache.alloc()).collect();
    assert_eq!(cache.stats().slabs_full, 8);
    for object in all {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
    }
    let stats = cache.stats();
    assert!(stats.slabs_empty <= 4, "{stats:?}");
    assert!(stats.slabs_released >= 4, "{stats:?}");
    cache.check_invariants();

    // Ping-pong a whole slab's worth across the bound: no request to the source.
    let requests = source.requests();
    for _ in 0..50 {
        let batch: Vec<_> = (0..per_slab).map(|_| cache.alloc()).collect();
        for object in batch {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
    }
    assert_eq!(
        source.requests(),
        requests,
        "ping-pong at the bound asked the source for slabs"
    );
    cache.trim();
    assert_eq!(cache.stats().slabs_empty, 0);
}
