//! Integration tests of pagekeep-slab, one module per topic.

mod alloc_by_class;
mod async_heap_deadlock;
mod async_heap_in_a_region;
mod async_heap_lost_wake_up;
mod async_heap_panicking_wakers;
mod async_heap_region_runs_short;
mod async_heap_region_too_small;
mod async_heap_shared_region;
mod async_heap_sizing_rule_for_large_classes;
mod async_heap_space_returns_without_a_free;
mod async_support;
mod child_process;
mod corruption;
mod decay_hook_only_in_allocations;
mod exhaustion;
mod extreme_settings;
// Unix only: Windows has no `fork`.
#[cfg(unix)]
mod fork_from_allocating_threads;
#[cfg(unix)]
mod fork_handlers_that_allocate;
mod free_by_address;
mod freed_peak_stays_resident;
mod heap_programs;
mod large_blocks_without_syscalls;
mod many_caches;
mod object_cache_programs;
mod panicking_decay_hook;
mod realloc_in_place_provenance;
mod realloc_past_the_requested_size;
mod requests_beyond_memory;
mod slab_cache_programs;
mod threads;
mod working_set;

/// Proptest configuration: fewer cases under miri, and no failure-persistence file
/// there (finding it needs `getcwd`, which miri's isolation forbids).
pub fn config(normal_cases: u32) -> proptest::test_runner::Config {
    let mut config =
        proptest::test_runner::Config::with_cases(if cfg!(miri) { 3 } else { normal_cases });
    if cfg!(miri) {
        config.failure_persistence = None;
    }
    config
}

/// Fills `len` bytes at `ptr` with a pattern derived from `seed`.
///
/// # Safety
/// - `ptr` is valid for writes of `len` bytes.
pub unsafe fn fill(ptr: *mut u8, len: usize, seed: u64) {
    for i in sampled(len) {
        // SAFETY: inside the block (caller).
        unsafe { ptr.add(i).write(pattern(seed, i)) };
    }
}

/// Checks the pattern written by [`fill`]; panics naming the first wrong byte.
///
/// # Safety
/// - `ptr` is valid for reads of `len` bytes.
pub unsafe fn check(ptr: *const u8, len: usize, seed: u64) {
    // SAFETY: forwarded.
    unsafe { check_prefix(ptr, len, len, seed) }
}

/// Checks the first `kept` bytes of a block that [`fill`] wrote `filled` bytes of (a
/// block that shrank or moved): the bytes `fill` sampled for `filled`, below `kept`.
///
/// # Safety
/// - `ptr` is valid for reads of `kept` bytes.
pub unsafe fn check_prefix(ptr: *const u8, filled: usize, kept: usize, seed: u64) {
    for i in sampled(filled).take_while(|&i| i < kept) {
        // SAFETY: inside the block (caller).
        let byte = unsafe { ptr.add(i).read() };
        assert_eq!(
            byte,
            pattern(seed, i),
            "block {ptr:p} byte {i} (seed {seed}) corrupted"
        );
    }
}

/// Every byte index, or under miri (where each byte costs microseconds) the first and
/// last 32 bytes and every 61st in between, generated without visiting the others (a
/// filter over every index made a 16 KiB block cost seconds).
pub fn sampled(len: usize) -> impl Iterator<Item = usize> {
    let (head, step) = if cfg!(miri) {
        (len.min(32), 61)
    } else {
        (len, 1)
    };
    let tail = len.saturating_sub(32).max(head);
    let middle = (head.next_multiple_of(step)..tail).step_by(step);
    (0..head).chain(middle).chain(tail..len)
}

fn pattern(seed: u64, i: usize) -> u8 {
    (seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i as u64 * 31)
        >> 7) as u8
}

/// Panics if any two `(address, len)` ranges overlap.
pub fn assert_disjoint(blocks: &mut [(usize, usize)]) {
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        assert!(
            pair[0].0 + pair[0].1 <= pair[1].0,
            "blocks {:#x}+{} and {:#x}+{} overlap",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
}
