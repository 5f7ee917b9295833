//! A failing page source makes allocations fail cleanly; the arena keeps working.

use arena_alloc::{Arena, ArenaConfig};
use mmap_alloc::{FailingSource, HeapPages};

fn failing_arena() -> Arena<FailingSource<HeapPages>> {
    let config = ArenaConfig::new()
        .chunk_bytes(64 << 10)
        .commit_step_bytes(4096);
    Arena::with_source(FailingSource::new(HeapPages), config)
}

#[test]
fn first_chunk_failure_is_an_error_then_recovery_works() {
    let arena = failing_arena();
    arena.source().set_failing(true);
    assert!(arena.try_alloc(1u64).is_err());
    assert!(arena.try_alloc_str("x").is_err());
    arena.source().recover();
    assert_eq!(*arena.try_alloc(5u64).unwrap(), 5);
    arena.check_invariants();
}

#[test]
fn every_nth_request_failing_never_corrupts_contents() {
    // Under miri fewer bytes are allocated, so fewer requests reach the source.
    for n in 1..if cfg!(miri) { 4 } else { 6 } {
        let arena = failing_arena();
        arena.source().fail_nth(n);
        let mut kept = std::vec::Vec::new();
        for i in 0..if cfg!(miri) { 100 } else { 2000u32 } {
            if let Ok(slot) = arena.try_alloc_slice_fill_with(16, |_| i) {
                kept.push((slot as *mut [u32], i));
            }
        }
        assert_eq!(arena.source().injected_failures(), 1, "n = {n}");
        for (slot, i) in kept {
            // SAFETY: the slices live as long as the arena, which is alive.
            assert!(unsafe { &*slot }.iter().all(|&x| x == i));
        }
        arena.check_invariants();
    }
}

#[test]
fn commit_failure_while_growing_in_place_falls_back_or_errors() {
    let arena = failing_arena();
    let mut vec = allocator_api2::vec::Vec::new_in(&arena);
    vec.push(1u8);
    arena.source().set_failing(true);
    let grew = vec.try_reserve(100_000);
    assert!(grew.is_err());
    assert_eq!(vec, [1]);
    arena.source().recover();
    vec.try_reserve(100_000).unwrap();
}
