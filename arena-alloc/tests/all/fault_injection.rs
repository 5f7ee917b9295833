//! A failing page source makes allocations fail cleanly; the arena keeps working.

use pagekeep_arena::{Arena, ArenaConfig};
use pagekeep_mmap::{FailingSource, HeapPages};

fn failing_arena() -> Arena<FailingSource<HeapPages>> {
    let config = ArenaConfig::new()
        .chunk_bytes(64 << 10)
        .commit_step_bytes(4096);
    Arena::with_source(FailingSource::new(HeapPages), config)
}

#[test]
fn first_chunk_failure_is_an_error_then_recovery_works() {
    let arena = failing_arena();
    arena.source().set_failing(true);
    assert!(arena.try_alloc(1u64).is_err());
    assert!(arena.try_alloc_str("x").is_err());
    arena.source().recover();
    assert_eq!(*arena.try_alloc(5u64).unwrap(), 5);
    arena.check_invariants();
}

#[test]
fn every_nth_request_failing_never_corrupts_contents() {
    // Under miri fewer bytes are allocated, so fewer requests reach the source.
    for n in 1..if cfg!(miri) { 4 } else { 6 } {
        let arena = failing_arena();
        arena.source().fail_nth(n);
        let mut kept = std::vec::Vec::new();
        for i in 0..if cfg!(miri) { 100 } else { 2000u32 } {
            if let Ok(slot) = arena.try_alloc_slice_fill_with(16, |_| i) {
                kept.push((slot as *mut [u32], i));
            }
        }
        assert_eq!(arena.source().injected_failures(), 1, "n = {n}");
        for (slot, i) in kept {
            // SAFETY: the slices live as long as the arena, which is alive.
            assert!(unsafe { &*slot }.iter().all(|&x| x == i));
        }
        arena.check_invariants();
    }
}

#[test]
fn commit_failure_while_growing_in_place_falls_back_or_errors() {
    let arena = failing_arena();
    let mut vec = allocator_api2::vec::Vec::new_in(&arena);
    vec.push(1u8);
    arena.source().set_failing(true);
    let grew = vec.try_reserve(100_000);
    assert!(grew.is_err());
    assert_eq!(vec, [1]);
    arena.source().recover();
    vec.try_reserve(100_000).unwrap();
}

// The pool over a failing source: its reservation and its arenas' commits go through
// the source, so running out of memory is an error, never an abort, and the pool keeps
// working once memory is back.

mod pool {
    use core::alloc::{GlobalAlloc, Layout};
    use std::alloc::System;

    use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig, PoolError};
    use pagekeep_mmap::{Cause, DefaultPages, FailingSource, Operation};

    type Source = FailingSource<DefaultPages>;

    static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

    fn config(arenas: usize) -> PoolConfig {
        PoolConfig::new(arenas, 256 << 10)
            .commit_step_bytes(16 << 10)
            .warm_bytes(16 << 10)
    }

    fn failing_pool(arenas: usize) -> ArenaPool<Source> {
        ArenaPool::with_source(FailingSource::new(DefaultPages::default()), config(arenas)).unwrap()
    }

    /// Every arena is back in the pool and nothing waits.
    fn assert_all_free(stats: pagekeep_arena::PoolStats, arenas: usize) {
        assert_eq!(
            (stats.free, stats.in_use, stats.quarantined, stats.waiting),
            (arenas, 0, 0, 0),
            "{stats:?}"
        );
    }

    #[test]
    fn reservation_failure_at_new_is_an_error() {
        let source = FailingSource::new(DefaultPages::default());
        source.set_failing(true);
        let error = ArenaPool::with_source(source, config(4)).unwrap_err();
        let PoolError::Reserve(cause) = error else {
            panic!("expected a reservation error, got {error:?}");
        };
        assert_eq!(cause.cause(), Cause::Injected);
        assert_eq!(cause.operation(), Operation::Reserve);
        assert!(error.to_string().contains("reserving the pool failed"));

        // The same configuration works once the source does.
        let pool = failing_pool(4);
        assert_eq!(pool.source().requests(), 1, "one reservation for the pool");
        assert_all_free(pool.stats(), 4);
    }

    #[test]
    fn commit_failure_of_a_fresh_lease_is_an_error_and_the_arena_returns() {
        let pool = failing_pool(2);
        pool.source().set_failing(true);
        let lease = pool.try_acquire().unwrap();
        assert!(lease.try_alloc(1u64).is_err());
        assert!(lease.try_alloc_str("x").is_err());
        assert!(lease.try_alloc_layout(Layout::new::<u8>()).is_err());
        assert_eq!(lease.stats().allocated_bytes, 0);
        lease.check_invariants();
        assert_eq!(
            pool.stats().committed_bytes,
            0,
            "a failed commit counts nothing"
        );
        assert_eq!(pool.stats().in_use, 1);
        drop(lease);
        assert_all_free(pool.stats(), 2);

        pool.source().recover();
        let lease = pool.try_acquire().unwrap();
        assert_eq!(*lease.try_alloc(7u64).unwrap(), 7);
        assert_eq!(pool.stats().committed_bytes, 16 << 10);
        drop(lease);
        assert_all_free(pool.stats(), 2);
        assert!(pool.source().injected_failures() >= 3);
    }

    #[test]
    fn commit_failure_while_a_lease_grows_keeps_what_it_has() {
        let pool = failing_pool(1);
        let lease = pool.try_acquire().unwrap();
        let kept = lease.try_alloc_slice_fill_with(1000, |i| i as u32).unwrap();
        let committed = pool.stats().committed_bytes;
        assert_eq!(committed, 16 << 10);
        pool.source().set_failing(true);
        // Needs more than is committed: the commit fails, so the allocation does.
        assert!(
            lease
                .try_alloc_layout(Layout::array::<u8>(64 << 10).unwrap())
                .is_err()
        );
        // Growing a collection in place needs a commit too.
        let mut vec = allocator_api2::vec::Vec::<u8, _>::new_in(&*lease);
        vec.push(1);
        assert!(vec.try_reserve(100 << 10).is_err());
        assert_eq!(vec, [1]);
        drop(vec);
        // What fits in the committed pages still works without the source.
        assert_eq!(*lease.try_alloc(9u16).unwrap(), 9);
        assert!(kept.iter().enumerate().all(|(i, &x)| x == i as u32));
        assert_eq!(pool.stats().committed_bytes, committed);
        lease.check_invariants();

        pool.source().recover();
        let big = lease
            .try_alloc_slice_fill_with(64 << 10, |i| i as u8)
            .unwrap();
        assert!(big.iter().enumerate().all(|(i, &x)| x == i as u8));
        assert!(pool.stats().committed_bytes > committed);
        drop(lease);
        assert_all_free(pool.stats(), 1);
        let lease = pool.try_acquire().unwrap();
        assert_eq!(lease.stats().allocated_bytes, 0, "reset on return");
    }

    #[test]
    fn every_nth_request_failing_leaves_a_usable_pool() {
        // Commits start at one page and double: the first round of a lease makes at
        // least three requests (4, 8 and 16 KiB) even with miri's smaller sizes.
        let (rounds, pieces) = if cfg!(miri) { (3, 24) } else { (12, 200) };
        let config = config(2).commit_step_bytes(4096);
        for n in 1..=3 {
            let pool = ArenaPool::with_source(FailingSource::new(DefaultPages::default()), config)
                .unwrap();
            pool.source().fail_nth(n);
            let mut failures = 0;
            for round in 0..rounds {
                let lease = pool.try_acquire().unwrap();
                let mut kept = Vec::new();
                for piece in 0..pieces {
                    let len = 256 + (round * pieces + piece) * 37 % 512;
                    match lease.try_alloc_slice_fill_with(len, |_| piece as u16) {
                        Ok(slice) => kept.push((slice as *mut [u16], piece as u16)),
                        Err(_) => failures += 1,
                    }
                }
                for (slice, piece) in kept {
                    // SAFETY: the slices live until the lease is dropped below.
                    assert!(unsafe { &*slice }.iter().all(|&x| x == piece));
                }
                lease.check_invariants();
            }
            assert_eq!(pool.source().injected_failures(), 1, "n = {n}");
            assert!(
                failures >= 1,
                "n = {n}: the injected failure reached a caller"
            );
            assert_all_free(pool.stats(), 2);
        }
    }

    #[test]
    fn routed_allocations_spill_when_commits_fail_and_never_abort() {
        let pool = ArenaPool::with_source(
            FailingSource::new(DefaultPages::default()),
            config(1).spill_limit_bytes(64 << 10),
        )
        .unwrap()
        .into_static()
        .unwrap();
        let small = Layout::new::<u64>();
        let block = Layout::from_size_align(40 << 10, 16).unwrap();
        let lease = pool.try_acquire().unwrap();
        pool.source().set_failing(true);
        lease.run(|| {
            // SAFETY: non-zero layouts; every block is freed below.
            unsafe {
                // No page of the arena can be committed: the request spills.
                let spilled = ROUTER.alloc(small);
                assert!(!spilled.is_null());
                assert_eq!(pool.arena_index_of(spilled.addr()), None);
                assert!(lease.is_over_budget());
                assert_eq!(lease.spilled_bytes(), small.size());
                let zeroed = ROUTER.alloc_zeroed(block);
                assert!(!zeroed.is_null());
                assert_eq!(*zeroed.add(100), 0);
                // Beyond the hard cap: null, not an abort.
                assert!(ROUTER.alloc(block).is_null());
                assert_eq!(lease.spilled_bytes(), small.size() + block.size());
                // Memory is back: routed allocations come from the arena again.
                pool.source().recover();
                let routed = ROUTER.alloc(small);
                assert_eq!(pool.arena_index_of(routed.addr()), Some(lease.index()));
                ROUTER.dealloc(routed, small);
                ROUTER.dealloc(zeroed, block);
                ROUTER.dealloc(spilled, small);
            }
        });
        assert_eq!(lease.live_routed_allocations(), 0);
        drop(lease);
        assert_all_free(pool.stats(), 1);
        let lease = pool.try_acquire().unwrap();
        assert!(!lease.is_over_budget(), "the flag is per lease");
        assert_eq!(lease.spilled_bytes(), 0);
    }
}
