//! The spill cap counts live bytes: freeing a spilled block credits it, and reallocating
//! one charges only the difference. A request that churns buffers larger than its arena,
//! never holding more than one, never reaches the cap.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};

static ROUTER: ArenaRouter<System> = ArenaRouter::new(System);

fn static_pool(config: PoolConfig) -> &'static ArenaPool {
    ArenaPool::new(config).unwrap().into_static().unwrap()
}

const ROUNDS: usize = if cfg!(miri) { 20 } else { 1_000 };

#[test]
fn churning_two_mib_buffers_in_a_one_mib_arena_never_fails() {
    // The default cap: 16 times the arena.
    let pool = static_pool(PoolConfig::new(1, 1 << 20));
    let lease = pool.try_acquire().unwrap();
    let buffer = Layout::from_size_align(2 << 20, 8).unwrap();
    lease.run(|| {
        for round in 0..ROUNDS {
            // SAFETY: a non-zero layout; freed at once.
            unsafe {
                let block = ROUTER.alloc(buffer);
                assert!(!block.is_null(), "round {round}: a 2 MiB spill was refused");
                block.write_bytes(round as u8, 64);
                ROUTER.dealloc(block, buffer);
            }
        }
    });
    assert!(lease.is_over_budget());
    assert_eq!(lease.spilled_bytes(), 0, "every spill was credited back");
}

#[test]
fn growing_a_spilled_block_charges_only_the_difference() {
    let pool = static_pool(PoolConfig::new(1, 64 << 10).spill_limit_bytes(10 << 20));
    let lease = pool.try_acquire().unwrap();
    let start = Layout::from_size_align(1 << 20, 8).unwrap();
    lease.run(|| {
        // SAFETY: non-zero layouts; the block is reallocated with its current layout and
        // freed once.
        unsafe {
            let mut block = ROUTER.alloc(start);
            assert!(!block.is_null());
            block.write_bytes(0x5A, 16);
            let mut size = start.size();
            // 1 + 2 + 4 + 8 MiB is over the 10 MiB cap; 8 MiB live is not.
            while size < 8 << 20 {
                let grown =
                    ROUTER.realloc(block, Layout::from_size_align(size, 8).unwrap(), size * 2);
                assert!(
                    !grown.is_null(),
                    "growing to {} bytes was refused",
                    size * 2
                );
                block = grown;
                size *= 2;
                assert_eq!(lease.spilled_bytes(), size);
            }
            assert_eq!(*block.add(15), 0x5A);
            let shrunk = ROUTER.realloc(block, Layout::from_size_align(size, 8).unwrap(), 4 << 20);
            assert!(!shrunk.is_null());
            assert_eq!(lease.spilled_bytes(), 4 << 20);
            ROUTER.dealloc(shrunk, Layout::from_size_align(4 << 20, 8).unwrap());
        }
    });
    assert_eq!(lease.spilled_bytes(), 0);
}

#[test]
fn a_spill_freed_after_its_lease_ended_does_not_credit_the_next_lease() {
    let pool = static_pool(PoolConfig::new(1, 64 << 10).spill_limit_bytes(1 << 20));
    let big = Layout::from_size_align(512 << 10, 8).unwrap();
    let lease = pool.try_acquire().unwrap();
    // SAFETY: a non-zero layout; freed below.
    let escaped = lease.run(|| unsafe { ROUTER.alloc(big) });
    assert!(!escaped.is_null());
    drop(lease);
    let lease = pool.try_acquire().unwrap();
    assert_eq!(lease.spilled_bytes(), 0);
    // SAFETY: as above.
    let held = lease.run(|| unsafe { ROUTER.alloc(big) });
    assert!(!held.is_null());
    assert_eq!(lease.spilled_bytes(), 512 << 10);
    // SAFETY: allocated above through the router with `big`.
    unsafe { ROUTER.dealloc(escaped, big) };
    assert_eq!(
        lease.spilled_bytes(),
        512 << 10,
        "credited to its own lease only"
    );
    // SAFETY: as above.
    unsafe { ROUTER.dealloc(held, big) };
    assert_eq!(lease.spilled_bytes(), 0);
}

/// 8 KiB blocks: spills of a 4 KiB arena large enough for the table to record.
const BIG: Layout = match Layout::from_size_align(8192, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("bad layout"),
};

/// A pool of one 4 KiB arena whose first lease spilled a `BIG` block that is still live
/// (returned), followed by 2^16 - 1 leases each charged a small spill (under the size
/// the table records, so it stays charged until its lease ends): the account's 16-bit
/// generation is back where it was at the first lease.
fn a_spill_live_across_a_generation_wrap() -> (&'static ArenaPool, *mut u8) {
    let pool = static_pool(PoolConfig::new(1, 4096).spill_limit_bytes(1 << 20));
    let lease = pool.try_acquire().unwrap();
    // SAFETY: a non-zero layout; the caller frees it.
    let escaped = lease.run(|| unsafe { ROUTER.alloc(BIG) });
    assert!(!escaped.is_null());
    drop(lease);
    let small = Layout::from_size_align(4090, 8).unwrap();
    for round in 0..(1u32 << 16) - 1 {
        let lease = pool.try_acquire().unwrap();
        assert_eq!(lease.spilled_bytes(), 0, "round {round}");
        // SAFETY: a non-zero layout; freed at once.
        lease.run(|| unsafe {
            let block = ROUTER.alloc(small);
            assert!(!block.is_null());
            ROUTER.dealloc(block, small);
        });
        assert_eq!(lease.spilled_bytes(), 4090, "small spills stay charged");
    }
    (pool, escaped)
}

#[test]
#[cfg_attr(miri, ignore = "65,536 leases")]
fn a_spill_of_a_lease_two_to_the_sixteen_leases_back_does_not_credit_the_current_one() {
    let (pool, escaped) = a_spill_live_across_a_generation_wrap();
    let lease = pool.try_acquire().unwrap();
    // SAFETY: a non-zero layout; freed below.
    let held = lease.run(|| unsafe { ROUTER.alloc(BIG) });
    assert!(!held.is_null());
    assert_eq!(lease.spilled_bytes(), 8192);
    // SAFETY: allocated through the router with `BIG`, freed once.
    unsafe { ROUTER.dealloc(escaped, BIG) };
    assert_eq!(
        lease.spilled_bytes(),
        8192,
        "a spill of an earlier lease credited the current one"
    );
    // SAFETY: as above.
    unsafe { ROUTER.dealloc(held, BIG) };
    assert_eq!(lease.spilled_bytes(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "65,536 leases")]
fn a_spill_of_a_lease_two_to_the_sixteen_leases_back_moved_by_the_current_one_is_charged_in_full() {
    let (pool, escaped) = a_spill_live_across_a_generation_wrap();
    let lease = pool.try_acquire().unwrap();
    // SAFETY: allocated through the router with `BIG`; not used again.
    let moved = lease.run(|| unsafe { ROUTER.realloc(escaped, BIG, 16384) });
    assert!(!moved.is_null());
    assert_eq!(
        lease.spilled_bytes(),
        16384,
        "the moved block, now this lease's, is charged in full"
    );
    let grown = Layout::from_size_align(16384, 8).unwrap();
    // SAFETY: reallocated above to this layout, freed once.
    lease.run(|| unsafe { ROUTER.dealloc(moved, grown) });
    assert_eq!(lease.spilled_bytes(), 0);
}
