//! A commit step of `usize::MAX` (or anything past the last page): the whole chunk is
//! committed at once, as a step larger than the chunk means. (The step was rounded up
//! to pages before being clamped to the chunk, which overflowed, so every chunk was
//! refused and the arena could allocate nothing.)

use pagekeep_arena::{Arena, ArenaConfig, ArenaPool, PoolConfig};

#[test]
fn an_arena_whose_commit_step_is_usize_max_commits_whole_chunks() {
    for step in [usize::MAX, usize::MAX - 100, usize::MAX / 2 + 1] {
        let arena = Arena::with_config(
            ArenaConfig::new()
                .chunk_bytes(64 << 10)
                .commit_step_bytes(step),
        );
        let values = arena
            .try_alloc([7u64; 20])
            .unwrap_or_else(|_| panic!("commit step {step} refused the first chunk"));
        assert_eq!(values[19], 7);
        let stats = arena.stats();
        assert_eq!(stats.committed_bytes, stats.reserved_bytes);
        arena.check_invariants();
    }
}

#[test]
fn a_pool_whose_commit_step_is_usize_max_serves_its_leases() {
    let pool = ArenaPool::new(PoolConfig::new(2, 64 << 10).commit_step_bytes(usize::MAX)).unwrap();
    let lease = pool.try_acquire().unwrap();
    assert_eq!(lease.try_alloc([3u8; 1000]).map(|bytes| bytes[999]), Ok(3));
    lease.check_invariants();
    drop(lease);
    assert_eq!(pool.stats().free, 2);
}
