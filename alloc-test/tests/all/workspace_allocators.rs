//! Every allocator of the workspace passes, through each interface it offers.

use pagekeep_alloc_test::{
    AllocatorSubject, ArenaSubject, GlobalSubject, MeteredPages, ObjectCacheSubject,
    PooledArenaSubject, Promises, RouterSubject, SlabCacheSubject, check,
};
use pagekeep_arena::ArenaConfig;
use pagekeep_mmap::MmapAlloc;
use pagekeep_slab::SlabHeap;

fn mmap_promises() -> Promises {
    Promises {
        max_align: 1 << 30,
        ..Promises::default()
    }
}

#[test]
fn mmap_alloc_passes_as_global_alloc() {
    check(|| GlobalSubject::new("MmapAlloc (GlobalAlloc)", MmapAlloc, mmap_promises())).unwrap();
}

#[test]
fn mmap_alloc_passes_as_allocator() {
    check(|| AllocatorSubject::new("MmapAlloc (Allocator)", MmapAlloc, mmap_promises())).unwrap();
}

#[test]
fn arena_passes() {
    check(|| ArenaSubject::new(ArenaConfig::new())).unwrap();
}

#[test]
fn arena_with_a_limit_honours_it() {
    check(|| ArenaSubject::new(ArenaConfig::new().limit_bytes(64 << 10))).unwrap();
}

#[test]
fn pooled_arena_passes() {
    check(PooledArenaSubject::new).unwrap();
}

#[test]
fn arena_router_passes() {
    check(RouterSubject::new).unwrap();
}

#[test]
fn slab_cache_passes() {
    check(|| SlabCacheSubject::new(256, 16)).unwrap();
    check(|| SlabCacheSubject::new(24, 8)).unwrap();
}

#[test]
fn object_cache_passes() {
    check(ObjectCacheSubject::new).unwrap();
}

/// What a heap holds: its slabs' reservations and its large blocks, live and kept for reuse.
fn slab_heap_footprint(heap: &SlabHeap<MeteredPages>) -> usize {
    let stats = heap.stats();
    heap.source().held_bytes() + stats.large_bytes + stats.large_bytes_kept
}

fn slab_heap_promises() -> Promises {
    Promises {
        max_align: 1 << 16,
        ..Promises::default()
    }
}

#[test]
fn slab_heap_passes_as_global_alloc() {
    check(|| {
        let heap = SlabHeap::with_source(MeteredPages::default());
        GlobalSubject::new("SlabHeap (GlobalAlloc)", heap, slab_heap_promises())
            .with_footprint(slab_heap_footprint)
    })
    .unwrap();
}

#[test]
fn slab_heap_passes_as_allocator() {
    check(|| {
        let heap = SlabHeap::with_source(MeteredPages::default());
        AllocatorSubject::new("SlabHeap (Allocator)", heap, slab_heap_promises())
            .with_footprint(slab_heap_footprint)
    })
    .unwrap();
}
