//! Operation programs on `SlabCache`: alloc / free in random order, checked for
//! alignment, overlap and contents.

use pagekeep_mmap::DefaultPages;
use pagekeep_slab::{CacheConfig, SlabCache};
use proptest::prelude::*;

use crate::{assert_disjoint, check, config, fill};

#[derive(Clone, Debug)]
enum Op {
    Alloc,
    /// Free the live object at this index (modulo the count).
    Free(usize),
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Alloc),
        4 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Trim),
    ]
}

fn run(size: usize, align: usize, magazines: bool, ops: &[Op]) {
    let mut config = CacheConfig::new(size, align);
    config.magazines = magazines;
    config.max_empty_slabs = 1;
    let cache = SlabCache::with_config(config, DefaultPages::default()).unwrap();
    let mut live: Vec<(std::ptr::NonNull<u8>, u64)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Alloc => {
                let object = cache.try_alloc().unwrap();
                assert_eq!(object.addr().get() % align, 0, "misaligned {object:p}");
                // SAFETY: a fresh object of `size` bytes.
                unsafe { fill(object.as_ptr(), size, step as u64) };
                live.push((object, step as u64));
            }
            Op::Free(index) if !live.is_empty() => {
                let (object, seed) = live.swap_remove(index % live.len());
                // SAFETY: a live object we filled.
                unsafe { check(object.as_ptr(), size, seed) };
                // SAFETY: allocated from this cache, freed once.
                unsafe { cache.free(object) };
            }
            Op::Free(_) => {}
            Op::Trim => cache.trim(),
        }
    }
    let mut blocks: Vec<_> = live.iter().map(|(p, _)| (p.addr().get(), size)).collect();
    assert_disjoint(&mut blocks);
    cache.check_invariants();
    for (object, seed) in live.drain(..) {
        // SAFETY: live objects we filled; each freed once.
        unsafe {
            check(object.as_ptr(), size, seed);
            cache.free(object);
        }
    }
    let stats = cache.stats();
    assert_eq!(stats.objects_live, 0, "{stats:?}");
    cache.trim();
    cache.check_invariants();
    assert_eq!(cache.stats().slabs_partial + cache.stats().slabs_full, 0);
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn programs_keep_objects_aligned_disjoint_and_intact(
        size in 1usize..600,
        align_log in 0u32..7,
        magazines in any::<bool>(),
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 30 } else { 400 }),
    ) {
        run(size, 1 << align_log, magazines, &ops);
    }
}

#[test]
fn a_slab_worth_of_objects_and_more_round_trips() {
    let count = if cfg!(miri) { 100 } else { 20_000 };
    let ops: Vec<Op> = (0..count)
        .map(|_| Op::Alloc)
        .chain((0..count).map(|_| Op::Free(0)))
        .collect();
    run(64, 8, true, &ops);
}

#[test]
fn unsupported_layouts_are_refused() {
    assert!(SlabCache::new(8, 3).is_err());
    assert!(SlabCache::new(pagekeep_slab::SLAB_BYTES, 8).is_err());
    assert!(SlabCache::new(64, 1 << 20).is_err());
}

#[test]
fn stats_count_slabs_and_hits() {
    let cache = SlabCache::new(128, 16).unwrap();
    let objects: Vec<_> = (0..1000).map(|_| cache.alloc()).collect();
    let stats = cache.stats();
    assert_eq!(stats.objects_live, 1000);
    assert!(stats.slabs_full + stats.slabs_partial >= 1000 / stats.objects_per_slab);
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
    }
    for _ in 0..100 {
        let object = cache.alloc();
        // SAFETY: just allocated.
        unsafe { cache.free(object) };
    }
    let stats = cache.stats();
    assert_eq!(stats.objects_live, 0);
    assert!(
        stats.magazine_hits > 0 && stats.magazine_hit_rate() > 0.5,
        "{stats:?}"
    );
}

/// Every operation of a thread served by its loaded magazine alone is a hit, also past
/// the free fast path's looks at the decay clock (one per 16,384 hits, each taking all
/// but one of them off the thread's count, to be credited to the cache): through the cache's
/// own free and through a heap's free by address. Hits and misses add up to the
/// operations.
#[test]
fn magazine_hits_are_all_counted_across_the_looks_at_the_clock() {
    // Under miri, fewer than one look's worth.
    let rounds: u64 = if cfg!(miri) { 300 } else { 100_000 };
    let cache = SlabCache::new(128, 16).unwrap();
    for _ in 0..rounds {
        let object = cache.alloc();
        // SAFETY: just allocated, freed once.
        unsafe { cache.free(object) };
    }
    // The thread's count goes to the cache's statistics with its magazines.
    cache.flush_thread_cache();
    let stats = cache.stats();
    assert_eq!(
        stats.magazine_hits + stats.magazine_misses,
        2 * rounds,
        "{stats:?}"
    );

    let heap = pagekeep_slab::SlabHeap::new();
    for _ in 0..rounds {
        let block = heap.alloc_aligned_16(100).unwrap();
        // SAFETY: a block of this heap, freed once by its address.
        assert!(unsafe { heap.free_small_block(block) });
    }
    heap.flush_thread_cache();
    let stats = heap.stats().small;
    assert_eq!(
        stats.magazine_hits + stats.magazine_misses,
        2 * rounds,
        "{stats:?}"
    );
}

/// A thread whose work on a class is all served by its loaded magazine stays busy at
/// the decay passes that its frees' looks at the clock run: the passes leave it its
/// magazines (they take an idle cache's, with its depot and empty slabs), so its
/// operations go on hitting them. Runs through five decay intervals.
#[test]
#[cfg_attr(miri, ignore = "runs for five decay intervals")]
fn work_served_by_the_magazines_alone_keeps_them_across_decay_passes() {
    let heap = pagekeep_slab::SlabHeap::new();
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < pagekeep_slab::DECAY_INTERVAL * 5 {
        for _ in 0..10_000 {
            let block = heap.alloc_aligned_16(100).unwrap();
            // SAFETY: a block of this heap, freed once by its address.
            assert!(unsafe { heap.free_small_block(block) });
        }
        rounds += 10_000;
    }
    heap.flush_thread_cache();
    let stats = heap.stats().small;
    assert_eq!(
        stats.magazine_hits + stats.magazine_misses,
        2 * rounds,
        "{stats:?}"
    );
    // The first allocation's miss, which loads the magazine, and none after.
    assert_eq!(stats.magazine_misses, 1, "{stats:?}");
}
