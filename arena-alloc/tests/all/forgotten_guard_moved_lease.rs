//! `mem::forget` of an entered lease's guard, then another thread allocating from the
//! same pool at the same time: the forgotten guard keeps the lease, so the arena it
//! routes to is never handed to anyone else, and the threads never share an arena.
//! (Moving the lease itself to the other thread after the forget does not compile: see
//! the compile-fail example of `ArenaGuard`.) Run under miri, a shared arena would show
//! up as a data race in the bump pointer.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;
use std::sync::Barrier;

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig, in_arena};

static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

const ROUNDS: usize = if cfg!(miri) { 20 } else { 2_000 };

/// Allocates `ROUNDS` blocks through the router, writes a thread's mark into each, checks
/// none was overwritten, and returns the arena index of the first.
fn allocate_and_check(pool: &ArenaPool, mark: u8) -> Option<usize> {
    let layout = Layout::from_size_align(24, 8).unwrap();
    let mut blocks = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        // SAFETY: a non-zero layout; every block is checked and freed below.
        let block = unsafe { ROUTER.alloc(layout) };
        assert!(!block.is_null());
        // SAFETY: 24 writable bytes.
        unsafe { block.write_bytes(mark, 24) };
        blocks.push(block);
    }
    let index = pool.arena_index_of(blocks[0].addr());
    for &block in &blocks {
        // SAFETY: live blocks of 24 bytes, each freed once, with its layout.
        unsafe {
            assert!(
                core::slice::from_raw_parts(block, 24)
                    .iter()
                    .all(|&b| b == mark)
            );
            ROUTER.dealloc(block, layout);
        }
    }
    index
}

#[test]
fn a_forgotten_guard_keeps_its_arena_from_every_other_thread() {
    let pool: &'static ArenaPool = ArenaPool::new(PoolConfig::new(2, 256 << 10))
        .unwrap()
        .into_static()
        .unwrap();
    let start = Barrier::new(2);
    let (leaked, other) = std::thread::scope(|scope| {
        let leaker = scope.spawn(|| {
            let lease = pool.try_acquire().unwrap();
            let index = lease.index();
            core::mem::forget(lease.enter());
            assert!(in_arena(), "the forgotten guard's route stays");
            start.wait();
            assert_eq!(allocate_and_check(pool, 0xA1), Some(index));
            index
        });
        let other = scope.spawn(|| {
            start.wait();
            // The forgotten lease is still out: this thread gets the other arena.
            let lease = pool.try_acquire().expect("the second arena");
            lease.run(|| allocate_and_check(pool, 0xB2))
        });
        (leaker.join().unwrap(), other.join().unwrap())
    });
    assert_ne!(Some(leaked), other, "two threads never bump one arena");
    let stats = pool.stats();
    assert_eq!(
        (stats.free, stats.in_use),
        (1, 1),
        "the leaked arena is never reused"
    );
    let last = pool.try_acquire().expect("the other arena is back");
    assert!(pool.try_acquire().is_none());
    drop(last);
}

#[test]
fn a_guard_exits_with_its_lease_and_the_lease_moves_on() {
    let pool: &'static ArenaPool = ArenaPool::new(PoolConfig::new(1, 64 << 10))
        .unwrap()
        .into_static()
        .unwrap();
    let guard = pool.try_acquire().unwrap().enter();
    assert_eq!(allocate_and_check(pool, 0x11), Some(0));
    let lease = guard.exit();
    assert!(!in_arena());
    let index = std::thread::spawn(move || lease.run(|| allocate_and_check(pool, 0x22)))
        .join()
        .unwrap();
    assert_eq!(index, Some(0));
    assert_eq!(pool.stats().free, 1);
}
