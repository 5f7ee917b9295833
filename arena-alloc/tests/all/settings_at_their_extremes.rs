//! Every setting at zero, one and `usize::MAX`, alignments up to 2^29, slices no
//! allocation can hold, `Duration::MAX`: each is served or refused with an error, never a
//! panic or an abort, and the arena (or pool) stays consistent and usable. (Zero-sized
//! requests: `zero_sized_requests_need_no_memory`; a commit step of `usize::MAX`:
//! `commit_step_of_usize_max`.)

use core::alloc::Layout;
use std::time::Duration;

use pagekeep_arena::{Arena, ArenaConfig, ArenaPool, PoolConfig, PoolError};

const LARGEST_ALIGNMENT_LOG: u32 = 29;

/// Requests of every size and alignment, a slice no allocation can hold, a reset: each
/// either succeeds (aligned) or is an error, and the invariants hold throughout. An arena
/// whose chunks can be reserved serves a small request after the reset.
fn exercise(arena: &mut Arena, reservable: bool) {
    let sizes: &[usize] = if cfg!(miri) {
        &[0, 7, 4096]
    } else {
        &[0, 1, 7, 64, 4096, 100_000]
    };
    for &size in sizes {
        let align_logs: &[u32] = if cfg!(miri) {
            &[0, 12, LARGEST_ALIGNMENT_LOG]
        } else {
            &[0, 3, 12, 16, 20, LARGEST_ALIGNMENT_LOG]
        };
        for &align_log in align_logs {
            let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
            if let Ok(block) = arena.try_alloc_layout(layout) {
                assert_eq!(block.addr().get() % layout.align(), 0, "{layout:?}");
            }
            arena.check_invariants();
        }
    }
    assert!(
        arena
            .try_alloc_slice_fill_copy(usize::MAX / 2, 0u16)
            .is_err()
    );
    let _ = arena.try_alloc(1u8);
    arena.check_invariants();
    arena.reset();
    arena.check_invariants();
    let config = *arena.config();
    if reservable && arena.allocation_limit().is_none_or(|limit| limit >= 160) {
        assert_eq!(
            arena.try_alloc([7u64; 20]).map(|values| values[19]),
            Ok(7),
            "{config:?}"
        );
    }
    arena.check_invariants();
}

#[test]
fn arena_settings_at_their_extremes_are_errors_not_aborts() {
    // Fewer combinations under miri, each still at zero, a page and the maximum.
    let (sizes, oversizes, limits): (&[usize], &[usize], &[usize]) = if cfg!(miri) {
        (
            &[0, 4096, usize::MAX],
            &[0, usize::MAX],
            &[0, 1 << 20, usize::MAX],
        )
    } else {
        (
            &[0, 1, 4096, usize::MAX / 2, usize::MAX],
            &[0, 1, usize::MAX],
            &[0, 1, 1 << 20, usize::MAX],
        )
    };
    for &chunk in sizes {
        for &step in sizes {
            for &oversize in oversizes {
                for &limit in limits {
                    let config = ArenaConfig::new()
                        .chunk_bytes(chunk)
                        .commit_step_bytes(step)
                        .oversize_bytes(oversize)
                        .warm_bytes(usize::MAX)
                        .limit_bytes(limit);
                    exercise(&mut Arena::with_config(config), chunk <= 4096);
                }
            }
        }
    }
}

#[test]
fn capacities_at_their_extremes_are_errors_not_aborts() {
    for bytes in [0, 1, 4095, usize::MAX / 2, isize::MAX as usize, usize::MAX] {
        match Arena::try_with_capacity(bytes) {
            Ok(mut arena) => exercise(&mut arena, true),
            Err(_) => assert!(bytes > 1 << 40, "{bytes} bytes refused"),
        }
    }
}

#[test]
fn pool_settings_at_their_extremes_are_errors_not_aborts() {
    let arena_sizes: &[usize] = if cfg!(miri) {
        &[0, 1, 4096, usize::MAX]
    } else {
        &[0, 1, 4095, 4096, 1 << 20, isize::MAX as usize, usize::MAX]
    };
    for arenas in [0, 1, 3, usize::MAX / 2, usize::MAX] {
        for &bytes in arena_sizes {
            for spill in [0, 1, usize::MAX] {
                let config = PoolConfig::new(arenas, bytes)
                    .spill_limit_bytes(spill)
                    .warm_bytes(usize::MAX)
                    .commit_step_bytes(usize::MAX);
                let Ok(pool) = ArenaPool::new(config) else {
                    continue;
                };
                if let Some(lease) = pool.try_acquire() {
                    let _ = lease.try_alloc([0u8; 100]);
                    let huge = Layout::from_size_align(1, 1 << LARGEST_ALIGNMENT_LOG).unwrap();
                    assert!(lease.try_alloc_layout(huge).is_err());
                    lease.check_invariants();
                }
                assert_eq!(pool.stats().free, pool.stats().arenas);
            }
        }
    }
}

#[test]
fn acquire_timeout_of_zero_one_nanosecond_and_duration_max() {
    let pool = ArenaPool::new(PoolConfig::new(1, 64 << 10)).unwrap();
    let lease = pool.try_acquire().unwrap();
    assert!(pool.acquire_timeout(Duration::ZERO).is_none());
    assert!(pool.acquire_timeout(Duration::from_nanos(1)).is_none());
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| pool.acquire_timeout(Duration::MAX).map(|l| l.index()));
        while pool.stats().waiting == 0 {
            std::thread::yield_now();
        }
        drop(lease);
        assert_eq!(waiter.join().unwrap(), Some(0));
    });
    assert!(pool.acquire_timeout(Duration::ZERO).is_some());
    assert_eq!((pool.stats().free, pool.stats().waiting), (1, 0));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "miri aborts on huge host allocations instead of failing them"
)]
fn a_pool_of_more_arenas_than_memory_can_describe_is_an_error() {
    // 2^30 arenas of one page: 4 TiB of address space, which the OS reserves, but a slot
    // table far beyond this machine's memory.
    assert_eq!(
        ArenaPool::new(PoolConfig::new(1 << 30, 4096)).err(),
        Some(PoolError::OutOfMemory)
    );
    // The pool's allocator and the address space are intact: a small pool is made.
    assert!(ArenaPool::new(PoolConfig::new(4, 4096)).is_ok());
}
