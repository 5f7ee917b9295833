//! Counted reuse: an allocation that outlives its lease keeps the arena quarantined until
//! it is freed, from whichever thread frees it.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};

static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

fn static_pool(arenas: usize) -> &'static ArenaPool {
    ArenaPool::new(PoolConfig::new(arenas, 64 << 10).warm_bytes(4096))
        .unwrap()
        .into_static()
        .unwrap()
}

/// An address as an integer, to move between threads (the test owns the block).
struct Escaped(*mut u8);
// SAFETY: the block is plain bytes handed over whole to the other thread.
unsafe impl Send for Escaped {}

#[test]
fn escaped_allocation_quarantines_until_freed_on_another_thread() {
    let pool = static_pool(1);
    let layout = Layout::from_size_align(100, 8).unwrap();
    let lease = pool.try_acquire().unwrap();
    // SAFETY: a non-zero layout.
    let escaped = lease.run(|| unsafe { ROUTER.alloc(layout) });
    assert_eq!(pool.arena_index_of(escaped.addr()), Some(0));
    // SAFETY: 100 writable bytes.
    unsafe { escaped.write_bytes(0x5A, 100) };
    assert_eq!(lease.live_routed_allocations(), 1);
    drop(lease);
    let stats = pool.stats();
    assert_eq!((stats.free, stats.quarantined), (0, 1));
    assert!(
        pool.try_acquire().is_none(),
        "memory is never reused while a block is live"
    );
    let escaped = Escaped(escaped);
    std::thread::spawn(move || {
        let escaped = escaped;
        // SAFETY: the block is still live: the arena was not reused.
        let bytes = unsafe { core::slice::from_raw_parts(escaped.0, 100) };
        assert!(bytes.iter().all(|&b| b == 0x5A));
        // SAFETY: the block was allocated through the router with `layout`.
        unsafe { ROUTER.dealloc(escaped.0, layout) };
    })
    .join()
    .unwrap();
    let stats = pool.stats();
    assert_eq!((stats.free, stats.quarantined), (1, 0));
    assert!(pool.try_acquire().is_some());
}

#[test]
fn blocks_freed_inside_the_arena_do_not_quarantine() {
    let pool = static_pool(1);
    let lease = pool.try_acquire().unwrap();
    lease.run(|| {
        let mut kept = Vec::new();
        for size in [8usize, 64, 1000, 24] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: a non-zero layout.
            kept.push((unsafe { ROUTER.alloc(layout) }, layout));
        }
        for (ptr, layout) in kept.into_iter().rev() {
            // SAFETY: allocated above with this layout.
            unsafe { ROUTER.dealloc(ptr, layout) };
        }
    });
    // Freed in reverse order: the bump pointer is back at the start.
    assert_eq!(lease.stats().allocated_bytes, 0);
    assert_eq!(lease.live_routed_allocations(), 0);
    drop(lease);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn frees_before_release_from_other_threads_are_counted() {
    let pool = static_pool(1);
    let layout = Layout::from_size_align(32, 8).unwrap();
    let lease = pool.try_acquire().unwrap();
    let blocks: Vec<_> = lease.run(|| {
        (0..3)
            // SAFETY: a non-zero layout.
            .map(|_| Escaped(unsafe { ROUTER.alloc(layout) }))
            .collect()
    });
    let mut blocks = blocks.into_iter();
    let first = blocks.next().unwrap();
    std::thread::spawn(move || {
        let first = first;
        // SAFETY: allocated through the router with `layout`.
        unsafe { ROUTER.dealloc(first.0, layout) }
    })
    .join()
    .unwrap();
    assert_eq!(lease.live_routed_allocations(), 2);
    drop(lease);
    assert_eq!(pool.stats().quarantined, 1);
    let rest: Vec<_> = blocks.collect();
    std::thread::spawn(move || {
        for block in rest {
            // SAFETY: as above.
            unsafe { ROUTER.dealloc(block.0, layout) };
        }
    })
    .join()
    .unwrap();
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn a_waiter_gets_the_arena_freed_by_the_last_escaped_block() {
    let pool = static_pool(1);
    let layout = Layout::from_size_align(16, 8).unwrap();
    let lease = pool.try_acquire().unwrap();
    // SAFETY: a non-zero layout.
    let escaped = Escaped(lease.run(|| unsafe { ROUTER.alloc(layout) }));
    drop(lease);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| pool.acquire().index());
        while pool.stats().waiting == 0 {
            std::thread::yield_now();
        }
        scope.spawn(move || {
            let escaped = escaped;
            // SAFETY: allocated through the router with `layout`.
            unsafe { ROUTER.dealloc(escaped.0, layout) };
        });
        assert_eq!(waiter.join().unwrap(), 0);
    });
}
