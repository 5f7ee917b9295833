//! The budget guarantee, with the router as the `#[global_allocator]` and a 1 MiB arena:
//! requests that go far over their arena without ever yielding (a `Vec` grown to 20 MiB,
//! one 17 MiB allocation, 2 MiB buffers churned 1,000 times) are each served from the
//! fallback, charged in live bytes and flagged over budget, and the process lives.
//! Beyond the hard cap a fallible request gets an error, not an abort.

use std::alloc::System;
use std::hint::black_box;

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};

#[global_allocator]
static GLOBAL: ArenaRouter<System> = ArenaRouter::new(System);

/// Sizes shrink under miri, keeping their ratios to the arena.
const MIB: usize = if cfg!(miri) { 16 << 10 } else { 1 << 20 };
const CHURN_ROUNDS: usize = if cfg!(miri) { 30 } else { 1_000 };

fn pool() -> &'static ArenaPool {
    ArenaPool::new(PoolConfig::new(2, MIB).warm_bytes(0))
        .unwrap()
        .into_static()
        .unwrap()
}

#[test]
fn a_vec_grown_to_twenty_times_the_arena_without_yielding_is_served() {
    let pool = pool();
    let lease = pool.try_acquire().unwrap();
    let sum = lease.run(|| {
        let mut numbers: Vec<u64> = Vec::new();
        while numbers.len() * 8 < 20 * MIB {
            numbers.push(numbers.len() as u64);
        }
        assert!(lease.spilled_bytes() >= 20 * MIB, "charged in live bytes");
        numbers.iter().sum::<u64>()
    });
    let count = (20 * MIB / 8) as u64;
    assert_eq!(sum, count * (count - 1) / 2);
    assert!(
        lease.is_over_budget(),
        "an executor cancels it at its next poll"
    );
    assert_eq!(lease.spilled_bytes(), 0, "freed: credited back");
    drop(lease);
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn one_allocation_of_seventeen_times_the_arena_is_served() {
    let pool = pool();
    let lease = pool.try_acquire().unwrap();
    let last = lease.run(|| {
        let mut block = vec![0u8; 17 * MIB];
        block[17 * MIB - 1] = 7;
        black_box(&mut block);
        block[17 * MIB - 1]
    });
    assert_eq!(last, 7);
    assert!(lease.is_over_budget());
    assert_eq!(lease.spilled_bytes(), 0);
}

#[test]
fn churning_buffers_twice_the_arena_a_thousand_times_is_served() {
    let pool = pool();
    let lease = pool.try_acquire().unwrap();
    lease.run(|| {
        for round in 0..CHURN_ROUNDS {
            let mut buffer = vec![round as u8; 2 * MIB];
            black_box(&mut buffer);
            assert_eq!(buffer[2 * MIB - 1], round as u8);
        }
    });
    assert!(lease.is_over_budget());
    assert_eq!(lease.spilled_bytes(), 0);
}

#[test]
fn past_the_hard_cap_a_fallible_request_gets_an_error_and_the_arena_goes_on() {
    let pool = ArenaPool::new(PoolConfig::new(1, MIB).spill_limit_bytes(4 * MIB))
        .unwrap()
        .into_static()
        .unwrap();
    let lease = pool.try_acquire().unwrap();
    lease.run(|| {
        let mut big: Vec<u8> = Vec::new();
        assert!(big.try_reserve_exact(8 * MIB).is_err(), "over the cap");
        assert!(big.try_reserve_exact(3 * MIB).is_ok(), "under it");
        let small: Vec<u8> = (0..100).collect();
        assert_eq!(pool.arena_index_of(small.as_ptr().addr()), Some(0));
    });
    assert!(lease.is_over_budget());
}
