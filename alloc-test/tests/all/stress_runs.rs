//! The multi-threaded stress against every thread-safe allocator.

use pagekeep_alloc_test::stress;
use pagekeep_mmap::MmapAlloc;

fn scale(count: usize) -> usize {
    if cfg!(miri) { count / 100 } else { count }
}

#[test]
fn system_survives_the_stress() {
    let system = std::alloc::System;
    stress::producer_consumer(&system, scale(20_000)).unwrap();
    stress::churn(&system, 4, scale(20_000)).unwrap();
    stress::exiting_threads(&system, scale(200).max(2), 32).unwrap();
}

#[test]
#[cfg(feature = "peers")]
#[cfg_attr(miri, ignore = "C code")]
fn mimalloc_survives_the_stress() {
    let mimalloc = mimalloc::MiMalloc;
    stress::producer_consumer(&mimalloc, 20_000).unwrap();
    stress::churn(&mimalloc, 4, 20_000).unwrap();
    stress::exiting_threads(&mimalloc, 200, 32).unwrap();
}

#[test]
#[cfg(feature = "peers")]
#[cfg_attr(miri, ignore = "C code")]
fn jemalloc_survives_the_stress() {
    let jemalloc = tikv_jemallocator::Jemalloc;
    stress::producer_consumer(&jemalloc, 20_000).unwrap();
    stress::churn(&jemalloc, 4, 20_000).unwrap();
    stress::exiting_threads(&jemalloc, 200, 32).unwrap();
}

#[test]
fn mmap_alloc_survives_the_stress() {
    // Every block is a mapping: fewer of them.
    stress::producer_consumer(&MmapAlloc, scale(2_000)).unwrap();
    stress::churn(&MmapAlloc, 2, scale(2_000)).unwrap();
    stress::exiting_threads(&MmapAlloc, scale(20).max(2), 8).unwrap();
}

#[test]
fn slab_heap_survives_the_stress() {
    static HEAP: pagekeep_slab::SlabHeap = pagekeep_slab::SlabHeap::new();
    stress::producer_consumer(&HEAP, scale(20_000)).unwrap();
    stress::churn(&HEAP, 4, scale(20_000)).unwrap();
    stress::exiting_threads(&HEAP, scale(200).max(2), 32).unwrap();
}

#[test]
fn arena_router_survives_frees_from_other_threads() {
    use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};
    static ROUTER: ArenaRouter<std::alloc::System> = ArenaRouter::new(std::alloc::System);
    let arena_bytes = if cfg!(miri) { 1 << 20 } else { 16 << 20 };
    let pool = ArenaPool::new(PoolConfig::new(2, arena_bytes))
        .unwrap()
        .into_static()
        .unwrap();
    for _ in 0..3 {
        // The producer leases an arena, allocates inside it and releases the lease while
        // the consumer still holds blocks: the arena stays quarantined until the last is
        // freed, and must then rejoin the pool.
        stress::producer_consumer_in(&ROUTER, scale(5_000), |produce| {
            let lease = pool.acquire();
            lease.run(produce);
        })
        .unwrap();
    }
    let stats = pool.stats();
    assert_eq!((stats.free, stats.quarantined), (2, 0), "{stats:?}");
    stress::churn(&ROUTER, 4, scale(10_000)).unwrap();
}
