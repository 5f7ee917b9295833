//! Reset and rewind free what they should, keep what they should, and refuse stale marks.

use core::alloc::Layout;

use pagekeep_arena::{Arena, ArenaConfig, CheckpointError};

#[test]
fn reset_reuses_the_same_memory_from_the_start() {
    let mut arena = Arena::new();
    let first = arena.alloc(1u64) as *mut u64 as usize;
    arena.alloc_slice_fill_with(10_000, |i| i as u32);
    arena.reset();
    assert_eq!(arena.stats().allocated_bytes, 0);
    let again = arena.alloc(2u64) as *mut u64 as usize;
    assert_eq!(first, again);
    assert!(arena.stats().peak_bytes >= 40_008);
}

#[test]
fn reset_keeps_the_warm_watermark_and_decommits_the_rest() {
    let config = ArenaConfig::new().warm_bytes(64 << 10).chunk_bytes(4 << 20);
    let mut arena = Arena::with_config(config);
    let len = if cfg!(miri) { 24 << 10 } else { 1 << 20 };
    let block = arena.alloc_slice_fill_with(len, |i| i as u8);
    assert_eq!(block[12345], (12345 % 256) as u8);
    let committed = arena.stats().committed_bytes;
    arena.reset();
    // Decommitted pages stay committed (read-write), so the next fill is cheap.
    assert_eq!(arena.stats().committed_bytes, committed);
    let block = arena.alloc_slice_fill_with(len, |_| 9u8);
    assert!(block.iter().all(|&b| b == 9));
}

#[test]
fn rewind_frees_only_what_came_after_the_checkpoint() {
    let mut arena = Arena::with_config(
        ArenaConfig::new()
            .chunk_bytes(64 << 10)
            .oversize_bytes(16 << 10),
    );
    arena.alloc(1u32);
    let mark = arena.checkpoint();
    let before = arena.stats();
    for _ in 0..7 {
        // 70 KB in all: past the 64 KiB chunk, into a new one.
        arena.alloc_layout(Layout::array::<u8>(10_000).unwrap());
    }
    // Oversize, and more than the chunk has committed: a dedicated chunk.
    arena.alloc_layout(Layout::array::<u8>(100_000).unwrap());
    assert_eq!(arena.stats().chunks, before.chunks + 1);
    assert_eq!(arena.stats().oversize_chunks, 1);
    arena.rewind(mark).unwrap();
    let after = arena.stats();
    assert_eq!(after.allocated_bytes, before.allocated_bytes);
    assert_eq!(after.chunks, before.chunks);
    assert_eq!(after.oversize_chunks, 0);
    arena.check_invariants();
}

#[test]
fn nested_checkpoints_rewind_inner_then_outer() {
    let mut arena = Arena::new();
    let outer = arena.checkpoint();
    arena.alloc(1u64);
    let inner = arena.checkpoint();
    arena.alloc(2u64);
    arena.rewind(inner).unwrap();
    assert_eq!(arena.stats().allocated_bytes, 8);
    arena.rewind(outer).unwrap();
    assert_eq!(arena.stats().allocated_bytes, 0);
    // The inner mark is now ahead of the state: rewinding to it frees nothing more and
    // marks nothing as allocated again.
    arena.rewind(inner).unwrap();
    assert_eq!(arena.stats().allocated_bytes, 0);
}

#[test]
fn stale_and_foreign_checkpoints_are_refused() {
    let mut arena = Arena::new();
    let mut other = Arena::new();
    arena.alloc(1u8);
    let mark = arena.checkpoint();
    assert_eq!(other.rewind(mark), Err(CheckpointError::OtherArena));
    arena.reset();
    assert_eq!(arena.rewind(mark), Err(CheckpointError::Stale));
    let _ = other.alloc(1u8);
}

#[test]
fn scope_frees_its_allocations_even_on_panic() {
    let mut arena = Arena::new();
    arena.alloc(1u64);
    let sum = arena.scope(|arena| {
        arena
            .alloc_slice_fill_with(100, |i| i as u32)
            .iter()
            .sum::<u32>()
    });
    assert_eq!(sum, 4950);
    assert_eq!(arena.stats().allocated_bytes, 8);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        arena.scope(|arena| {
            arena.alloc([0u8; 1000]);
            panic!("inside the scope");
        })
    }));
    assert!(result.is_err());
    assert_eq!(arena.stats().allocated_bytes, 8);
}

#[test]
#[cfg_attr(miri, ignore = "counts real madvise calls")]
fn steady_usage_is_not_decommitted_every_cycle_but_a_spike_is() {
    use pagekeep_mmap::{OsPages, syscall_counters};

    let config = ArenaConfig::new()
        .warm_bytes(64 << 10)
        .chunk_bytes(16 << 20);
    let mut arena = Arena::<OsPages>::with_source(OsPages, config);
    let mut cycle = |bytes: usize| {
        arena.alloc_slice_fill_with(bytes, |i| i as u8);
        let before = syscall_counters::snapshot();
        arena.reset();
        syscall_counters::snapshot().since(&before).madvise
    };
    assert_eq!(
        cycle(1 << 20),
        1,
        "the first cycle gives back what is above the warm mark"
    );
    assert_eq!(cycle(1 << 20), 0, "steady usage stays committed");
    assert_eq!(cycle(1 << 20), 0);
    assert_eq!(cycle(8 << 20), 1, "a spike is given back at once");
    assert_eq!(cycle(1 << 20), 0);
    assert_eq!(
        cycle(100 << 10),
        0,
        "a drop in usage is given back one cycle later"
    );
    assert_eq!(cycle(100 << 10), 1);
}

#[test]
#[cfg_attr(miri, ignore = "counts real system calls")]
fn default_config_fill_of_1_mib_then_reset_makes_no_system_call_in_steady_state() {
    use pagekeep_mmap::{OsPages, syscall_counters};

    let mut arena = Arena::<OsPages>::with_source(OsPages, ArenaConfig::new());
    let mut cycle = || {
        let before = syscall_counters::snapshot();
        for i in 0..1024 {
            arena.alloc([i as u8; 1024]);
        }
        arena.reset();
        syscall_counters::snapshot().since(&before)
    };
    let first = cycle();
    assert_eq!(first.mmap, 1, "one reservation for the chunk");
    assert_eq!(
        first.madvise, 1,
        "the first reset gives back what is above the 256 KiB warm mark"
    );
    // From then on the previous cycle's usage stays committed and untouched: the fill
    // reuses the same pages and the reset is a few stores.
    for round in 0..5 {
        assert_eq!(cycle().total(), 0, "round {round}");
    }
    assert_eq!(arena.stats().chunks, 1);
}
