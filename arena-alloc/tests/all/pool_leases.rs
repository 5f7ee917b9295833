//! Leases: exhaustion, reuse, address to arena, blocking waits.

use std::time::Duration;

use pagekeep_arena::{ArenaPool, PoolConfig, PoolError};

fn pool(arenas: usize) -> ArenaPool {
    ArenaPool::new(PoolConfig::new(arenas, 64 << 10).warm_bytes(4096)).unwrap()
}

#[test]
fn exhausted_pool_refuses_try_acquire_then_reuses_released_arenas() {
    let pool = pool(3);
    let leases: Vec<_> = (0..3).map(|_| pool.try_acquire().unwrap()).collect();
    assert!(pool.try_acquire().is_none());
    assert_eq!(pool.stats().in_use, 3);
    assert_eq!(pool.stats().free, 0);
    let index = leases[1].index();
    drop(leases);
    assert_eq!(pool.stats().free, 3);
    let again: Vec<_> = (0..3).map(|_| pool.try_acquire().unwrap()).collect();
    assert!(again.iter().any(|lease| lease.index() == index));
}

#[test]
fn released_arena_starts_empty_and_keeps_its_address() {
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    let first = lease.alloc(1u64) as *mut u64 as usize;
    lease.alloc_layout(core::alloc::Layout::array::<u8>(20_000).unwrap());
    drop(lease);
    let lease = pool.try_acquire().unwrap();
    assert_eq!(lease.stats().allocated_bytes, 0);
    assert_eq!(lease.alloc(2u64) as *mut u64 as usize, first);
}

#[test]
fn address_maps_to_its_arena() {
    let pool = pool(4);
    let leases: Vec<_> = (0..4).map(|_| pool.try_acquire().unwrap()).collect();
    for lease in &leases {
        let address = lease.alloc(0u32) as *mut u32 as usize;
        assert_eq!(pool.arena_index_of(address), Some(lease.index()));
    }
    assert_eq!(pool.arena_index_of(&pool as *const _ as usize), None);
}

#[test]
fn arena_capacity_is_a_hard_limit_for_direct_allocations() {
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    let layout = |bytes| core::alloc::Layout::array::<u8>(bytes).unwrap();
    assert!(lease.try_alloc_layout(layout(60 << 10)).is_ok());
    assert!(lease.try_alloc_layout(layout(8 << 10)).is_err());
    assert!(lease.try_alloc(1u8).is_ok());
}

#[test]
fn blocking_acquire_wakes_when_another_thread_releases() {
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| pool.acquire().index());
        while pool.stats().waiting == 0 {
            std::thread::yield_now();
        }
        drop(lease);
        assert_eq!(waiter.join().unwrap(), 0);
    });
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn acquire_timeout_gives_up_and_leaves_no_waiter_behind() {
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    assert!(pool.acquire_timeout(Duration::from_millis(20)).is_none());
    assert_eq!(pool.stats().waiting, 0);
    drop(lease);
    assert!(pool.acquire_timeout(Duration::from_millis(20)).is_some());
}

#[test]
fn many_threads_share_a_small_pool_without_losing_arenas() {
    let pool = pool(2);
    let rounds = if cfg!(miri) { 5 } else { 200 };
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for i in 0..rounds {
                    let lease = pool.acquire();
                    let value = lease.alloc(i);
                    assert_eq!(*value, i);
                }
            });
        }
    });
    let stats = pool.stats();
    assert_eq!((stats.free, stats.in_use, stats.waiting), (2, 0, 0));
}

#[test]
fn invalid_configurations_are_errors() {
    assert_eq!(
        ArenaPool::new(PoolConfig::new(0, 4096)).err(),
        Some(PoolError::InvalidConfig)
    );
    assert_eq!(
        ArenaPool::new(PoolConfig::new(4, 0)).err(),
        Some(PoolError::InvalidConfig)
    );
    assert_eq!(
        ArenaPool::new(PoolConfig::new(usize::MAX, 1 << 20)).err(),
        Some(PoolError::InvalidConfig)
    );
}
