//! The working-set bound on empty slabs, and its hysteresis.

use pagekeep_mmap::{FailingSource, HeapPages};
use pagekeep_slab::{CacheConfig, SlabCache};

#[test]
fn empty_slabs_beyond_the_working_set_are_released_and_ping_pong_makes_no_source_calls() {
    let source = FailingSource::new(HeapPages);
    let mut config = CacheConfig::new(4096, 4096);
    config.max_empty_slabs = 4;
    config.magazines = false; // every operation reaches the slab layer
    let cache = SlabCache::with_config(config, &source).unwrap();
    let per_slab = cache.stats().objects_per_slab;
    let all: Vec<_> = (0..per_slab * 8).map(|_| cache.alloc()).collect();
    assert_eq!(cache.stats().slabs_full, 8);
    for object in all {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
    }
    // Just emptied: kept for now (they were in use during this epoch). Under miri, whose
    // clock counts the work done, a whole epoch can pass while they are freed: the
    // slabs emptied before it went unused all that epoch and go back (no floor is kept
    // for an epoch that never drew on its empty slabs).
    let stats = cache.stats();
    assert_eq!(
        stats.slabs_empty + usize::try_from(stats.slabs_released).unwrap(),
        8,
        "{stats:?}"
    );
    if !cfg!(miri) {
        assert_eq!(stats.slabs_empty, 8, "{stats:?}");
    }

    // Ping-pong a whole slab's worth across the bound: no request to the source.
    let requests = source.requests();
    // Two epochs: each needs 1024 locked operations and half a second.
    let rounds = 2 * 1024 / (2 * per_slab) + 2;
    for round in 0..rounds {
        if round % (rounds / 2) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(600));
        }
        let batch: Vec<_> = (0..per_slab).map(|_| cache.alloc()).collect();
        for object in batch {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
    }
    assert_eq!(
        source.requests(),
        requests,
        "ping-pong asked the source for slabs"
    );
    // The slabs unused for a whole epoch went back; the bound (and the one slab in use
    // by the ping-pong) stayed.
    let stats = cache.stats();
    assert!(stats.slabs_empty <= 5, "{stats:?}");
    assert!(stats.slabs_released >= 3, "{stats:?}");
    cache.check_invariants();
    cache.trim();
    assert_eq!(cache.stats().slabs_empty, 0);
}

#[test]
fn a_burst_beyond_the_hard_cap_is_trimmed_at_once() {
    let mut config = CacheConfig::new(8192, 8);
    config.max_empty_slabs = 1; // hard cap: 16 empty slabs
    config.magazines = false;
    let cache = SlabCache::with_config(config, HeapPages).unwrap();
    let per_slab = cache.stats().objects_per_slab;
    let all: Vec<_> = (0..per_slab * 20).map(|_| cache.alloc()).collect();
    for object in all {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
    }
    let stats = cache.stats();
    assert!(stats.slabs_empty <= 16, "{stats:?}");
    assert!(stats.slabs_released >= 4, "{stats:?}");
    cache.check_invariants();
}
