//! The router: routes by thread and address, spills over budget, caps, guards.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig, in_arena, outside_arena};

static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

fn static_pool(config: PoolConfig) -> &'static ArenaPool {
    ArenaPool::new(config).unwrap().into_static().unwrap()
}

#[test]
fn allocations_outside_any_arena_go_to_the_fallback() {
    let layout = Layout::new::<u64>();
    assert!(!in_arena());
    // SAFETY: non-zero layout; freed below.
    let ptr = unsafe { ROUTER.alloc(layout) };
    assert!(!ptr.is_null());
    // SAFETY: allocated above.
    unsafe { ROUTER.dealloc(ptr, layout) };
}

#[test]
fn over_budget_spills_to_the_fallback_then_hits_the_hard_cap() {
    let pool = static_pool(PoolConfig::new(1, 64 << 10).spill_limit_bytes(256 << 10));
    let lease = pool.try_acquire().unwrap();
    let big = Layout::from_size_align(100 << 10, 8).unwrap();
    lease.run(|| {
        // SAFETY: non-zero layouts; every block is freed below.
        unsafe {
            let spilled = ROUTER.alloc(big);
            assert!(!spilled.is_null());
            assert_eq!(pool.arena_index_of(spilled.addr()), None);
            assert!(lease.is_over_budget());
            assert_eq!(lease.spilled_bytes(), 100 << 10);
            let second = ROUTER.alloc(big);
            assert!(!second.is_null());
            // Beyond the hard cap: null, and the allocator stays usable.
            assert!(ROUTER.alloc(big).is_null());
            let small = ROUTER.alloc(Layout::new::<u64>());
            assert_eq!(pool.arena_index_of(small.addr()), Some(0));
            ROUTER.dealloc(small, Layout::new::<u64>());
            ROUTER.dealloc(spilled, big);
            ROUTER.dealloc(second, big);
        }
    });
    drop(lease);
    let lease = pool.try_acquire().unwrap();
    assert!(!lease.is_over_budget(), "the flag is per lease");
}

#[test]
fn guards_nest_and_restore_in_order() {
    let pool = static_pool(PoolConfig::new(2, 64 << 10));
    let outer = pool.try_acquire().unwrap();
    let inner = pool.try_acquire().unwrap();
    let layout = Layout::new::<u32>();
    let outer_guard = outer.enter();
    let inner = {
        let inner_guard = inner.enter();
        // SAFETY: non-zero layout, freed below.
        let ptr = unsafe { ROUTER.alloc(layout) };
        assert_eq!(pool.arena_index_of(ptr.addr()), Some(inner_guard.index()));
        // SAFETY: allocated above.
        unsafe { ROUTER.dealloc(ptr, layout) };
        outside_arena(|| assert!(!in_arena()));
        assert!(in_arena());
        inner_guard.exit()
    };
    // SAFETY: as above.
    let ptr = unsafe { ROUTER.alloc(layout) };
    assert_eq!(pool.arena_index_of(ptr.addr()), Some(outer_guard.index()));
    // SAFETY: as above.
    unsafe { ROUTER.dealloc(ptr, layout) };
    drop(outer_guard);
    assert!(!in_arena());
    drop(inner);
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn frees_go_to_the_arena_that_holds_the_block_whichever_is_entered() {
    // Two adjacent arenas of one pool (64 KiB, a power of two: no gap between them) and
    // one of a second pool: a thread entered in one frees blocks of all three.
    let pool = static_pool(PoolConfig::new(2, 64 << 10));
    let other_pool = static_pool(PoolConfig::new(1, 64 << 10));
    let layout = Layout::from_size_align(48, 16).unwrap();
    // The entered arena is the pool's first, so the other one lies just above it.
    let guard = pool.try_acquire().unwrap().enter();
    let first = pool.try_acquire().unwrap();
    let other = other_pool.try_acquire().unwrap();
    // SAFETY: a non-zero layout; both blocks are freed once, below.
    let (kept, latest) = first.run(|| unsafe { (ROUTER.alloc(layout), ROUTER.alloc(layout)) });
    // SAFETY: as above.
    let elsewhere = other.run(|| unsafe { ROUTER.alloc(layout) });
    // SAFETY: as above.
    let mine = unsafe { ROUTER.alloc(layout) };
    assert_eq!(pool.arena_index_of(mine.addr()), Some(guard.index()));
    assert_eq!(pool.arena_index_of(kept.addr()), Some(guard.index() + 1));
    let before = guard.stats().allocated_bytes;
    // Blocks of the other arenas, freed while this one is entered: each counts against
    // its own arena, and this arena neither moves its bump pointer nor forgets `mine`.
    // SAFETY: allocated above with this layout, freed once.
    unsafe { ROUTER.dealloc(latest, layout) };
    // SAFETY: as above.
    unsafe { ROUTER.dealloc(elsewhere, layout) };
    assert_eq!(first.live_routed_allocations(), 1);
    assert_eq!(other.live_routed_allocations(), 0);
    assert_eq!(guard.live_routed_allocations(), 1);
    assert_eq!(guard.stats().allocated_bytes, before);
    // The entered arena's latest block: the bump pointer goes back over it.
    // SAFETY: as above.
    unsafe { ROUTER.dealloc(mine, layout) };
    assert_eq!(guard.live_routed_allocations(), 0);
    assert_eq!(guard.stats().allocated_bytes, before - layout.size());
    // SAFETY: as above.
    unsafe { ROUTER.dealloc(kept, layout) };
    assert_eq!(first.live_routed_allocations(), 0);
    drop((guard, first, other));
    assert_eq!((pool.stats().free, other_pool.stats().free), (2, 1));
}

#[test]
fn guard_dropped_out_of_order_switches_routing_off() {
    let pool = static_pool(PoolConfig::new(2, 64 << 10));
    let first_guard = pool.try_acquire().unwrap().enter();
    let second_guard = pool.try_acquire().unwrap().enter();
    drop(first_guard);
    assert!(!in_arena(), "never routes to an arena whose guard is gone");
    drop(second_guard);
    assert!(!in_arena());
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn guard_restored_when_the_body_panics() {
    let pool = static_pool(PoolConfig::new(1, 64 << 10));
    let lease = pool.try_acquire().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lease.run(|| {
            assert!(in_arena());
            panic!("handler failed");
        })
    }));
    assert!(result.is_err());
    assert!(!in_arena());
}

#[test]
fn realloc_grows_in_place_and_moves_between_arena_and_fallback() {
    let pool = static_pool(PoolConfig::new(1, 64 << 10));
    let lease = pool.try_acquire().unwrap();
    let layout = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: non-zero layouts, each block freed once.
    unsafe {
        let outside = ROUTER.alloc(layout);
        outside.write_bytes(7, 16);
        let inside = lease.run(|| {
            let ptr = ROUTER.alloc(layout);
            ptr.write_bytes(9, 16);
            let grown = ROUTER.realloc(ptr, layout, 4096);
            assert_eq!(grown, ptr, "the latest allocation grows in place");
            // A fallback block reallocated inside the arena moves into it.
            let moved = ROUTER.realloc(outside, layout, 32);
            assert_eq!(pool.arena_index_of(moved.addr()), Some(0));
            assert_eq!(*moved.add(15), 7);
            ROUTER.dealloc(moved, Layout::from_size_align(32, 8).unwrap());
            grown
        });
        // Outside the arena, an arena block moves to the fallback.
        let out = ROUTER.realloc(inside, Layout::from_size_align(4096, 8).unwrap(), 8192);
        assert_eq!(pool.arena_index_of(out.addr()), None);
        assert_eq!(*out.add(15), 9);
        ROUTER.dealloc(out, Layout::from_size_align(8192, 8).unwrap());
    }
    assert_eq!(lease.live_routed_allocations(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "miri has no page residency")]
fn over_budget_arena_gives_back_its_warm_pages_on_release() {
    use pagekeep_mmap::{Decommit, sys};
    let warm = 128 << 10;
    let pool = static_pool(
        PoolConfig::new(1, 256 << 10)
            .warm_bytes(warm)
            .decommit(Decommit::Zero),
    );
    let written = Layout::from_size_align(96 << 10, 4096).unwrap();
    let residency = |lease: &pagekeep_arena::PooledArena<'static>, spill: bool| {
        let block = lease.run(|| {
            // SAFETY: non-zero layouts; the blocks are freed before the lease ends.
            unsafe {
                let block = ROUTER.alloc(written);
                block.write_bytes(1, written.size());
                if spill {
                    let big = Layout::from_size_align(512 << 10, 8).unwrap();
                    let spilled = ROUTER.alloc(big);
                    assert!(!spilled.is_null());
                    ROUTER.dealloc(spilled, big);
                }
                ROUTER.dealloc(block, written);
                block
            }
        });
        assert_eq!(lease.is_over_budget(), spill);
        core::ptr::NonNull::new(block).unwrap()
    };
    let pages = written.size() / sys::page_size();
    let resident = |block: core::ptr::NonNull<u8>| {
        // SAFETY: the range lies in the pool's reservation.
        unsafe { sys::resident_pages(block, written.size()) }.unwrap()
    };

    // A normal lease keeps its warm pages for the next one.
    let lease = pool.try_acquire().unwrap();
    let block = residency(&lease, false);
    drop(lease);
    assert_eq!(resident(block), pages);

    // One that went over budget leaves nothing resident behind.
    let lease = pool.try_acquire().unwrap();
    let block = residency(&lease, true);
    drop(lease);
    assert_eq!(resident(block), 0);

    // And the arena works as before.
    let lease = pool.try_acquire().unwrap();
    assert!(!lease.is_over_budget());
    let text = lease.run(|| format!("{}", 42));
    assert_eq!(text, "42");
}
