//! Feature `fail-over-budget` with an allocation error hook that panics (nightly's
//! `alloc_error_hook`), and the router as the `#[global_allocator]`: a request whose
//! allocation would take it past its arena unwinds there, and catches the panic with
//! `catch_unwind`. Afterwards the arena and its lease are usable, what was allocated
//! before is intact, every routed allocation is accounted for, and the arena goes back
//! to the pool.
//!
//! Run with `cargo +nightly test -p pagekeep-arena --features fail-over-budget --test
//! over_budget_unwinds` (the test binary needs nightly for the hook).

#![feature(alloc_error_hook)]

use std::alloc::{Layout, System};
use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};

#[global_allocator]
static GLOBAL: ArenaRouter<System> = ArenaRouter::new(System);

const ARENA_BYTES: usize = 64 << 10;
/// The hard cap of live spilled bytes, well above what the runaway request asks for, so
/// that without the feature it would be served (spilled), not fail.
const SPILL_LIMIT_BYTES: usize = 64 * ARENA_BYTES;

/// What `-Zoom=panic` did in older nightlies: a failed infallible allocation panics
/// (outside the allocator, in `handle_alloc_error`) instead of aborting.
fn panic_on_allocation_failure(layout: Layout) {
    panic!("memory allocation of {} bytes failed", layout.size());
}

/// A panic hook that allocates far past the hard cap, as printing a backtrace does (its
/// symbolisation allocates megabytes): it runs on the panicking thread, still routed to
/// the arena. Quiet otherwise, so that the test does not depend on `RUST_BACKTRACE`.
fn allocating_panic_hook(_: &panic::PanicHookInfo<'_>) {
    let mut scratch = vec![0u8; 2 * SPILL_LIMIT_BYTES];
    black_box(&mut scratch);
}

#[test]
fn a_routed_allocation_past_the_arena_unwinds_and_the_arena_goes_on() {
    std::alloc::set_alloc_error_hook(panic_on_allocation_failure);
    panic::set_hook(Box::new(allocating_panic_hook));
    let config = PoolConfig::new(1, ARENA_BYTES)
        .warm_bytes(0)
        .spill_limit_bytes(SPILL_LIMIT_BYTES);
    let pool = ArenaPool::new(config).unwrap().into_static().unwrap();
    let lease = pool.try_acquire().expect("the arena is free");

    let (before, caught, after) = lease.run(|| {
        let before: Vec<u64> = (0..512).collect();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            // Far past the 64 KiB arena (within the hard cap), without yielding: fails,
            // and the hook panics.
            let mut runaway = vec![0u8; 16 * ARENA_BYTES];
            black_box(&mut runaway);
            runaway.len()
        }));
        // The thread is still routed to the arena, and it still serves.
        let after: Vec<u64> = (0..512).map(|n| n * 3).collect();
        (before, caught, after)
    });

    let payload = caught.expect_err("the allocation past the arena unwinds");
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert_eq!(
        message,
        format!("memory allocation of {} bytes failed", 16 * ARENA_BYTES)
    );
    assert!(
        lease.is_over_budget(),
        "an executor cancels it at its next poll"
    );

    // Nothing corrupted: what was allocated before and after the unwind is intact and in
    // the arena, and the arena's invariants hold.
    assert_eq!(before.iter().sum::<u64>(), 511 * 512 / 2);
    assert_eq!(after.iter().sum::<u64>(), 3 * 511 * 512 / 2);
    for block in [before.as_ptr().addr(), after.as_ptr().addr()] {
        assert_eq!(pool.arena_index_of(block), Some(lease.index()));
    }
    lease.check_invariants();

    // The lease stays usable: its own API, and routed allocations that fit. Past the
    // arena, a request already flagged spills (charged in live bytes) as without the
    // feature, so what it allocates to unwind and clean up does not fail again (and while
    // it panics, not even past the hard cap: the panic hook's spill was not charged).
    assert_eq!(*lease.alloc(7u32), 7);
    let spilled = lease.run(|| vec![1u8; 2 * ARENA_BYTES]);
    assert_eq!(pool.arena_index_of(spilled.as_ptr().addr()), None);
    assert!(lease.spilled_bytes() >= 2 * ARENA_BYTES);
    drop(spilled);
    assert!(
        lease.spilled_bytes() < 2 * ARENA_BYTES,
        "credited when freed"
    );

    // Nothing leaks: once the values are dropped no routed allocation is live, and the
    // released arena goes straight back to the pool (not into quarantine).
    drop((before, after, payload));
    assert_eq!(lease.live_routed_allocations(), 0);
    drop(lease);
    let stats = pool.stats();
    assert_eq!((stats.free, stats.quarantined), (1, 0));

    // The next lease of the same arena starts afresh: within budget, not flagged.
    let lease = pool.try_acquire().expect("the arena is back");
    let fits = lease.run(|| vec![5u8; ARENA_BYTES / 2]);
    assert_eq!(
        pool.arena_index_of(fits.as_ptr().addr()),
        Some(lease.index())
    );
    assert!(!lease.is_over_budget());
    drop(fits);
}
