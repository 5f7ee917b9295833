//! Checkpoints rewound to out of order, across ordinary and oversize chunks, and under
//! an allocation limit lowered below what is allocated: a mark that is no longer on the
//! arena's path is refused, every other rewind keeps the invariants.

use pagekeep_arena::{Arena, ArenaConfig, ArenaString};

#[test]
fn marks_across_chunks_rewound_out_of_order() {
    let mut arena = Arena::with_config(
        ArenaConfig::new()
            .chunk_bytes(8192)
            .commit_step_bytes(4096)
            .oversize_bytes(4096),
    );
    let start = arena.checkpoint();
    arena.alloc([1u8; 3000]);
    let one_chunk = arena.checkpoint();
    arena.alloc([2u8; 3000]);
    arena.alloc([3u8; 3000]);
    let two_chunks = arena.checkpoint();
    arena.alloc([0u8; 10_000]); // a chunk of its own
    let with_oversize = arena.checkpoint();
    assert_eq!(arena.rewind(one_chunk), Ok(()));
    arena.check_invariants();
    assert!(arena.rewind(two_chunks).is_err());
    assert!(arena.rewind(with_oversize).is_err());
    // The same numbers of chunks again, but other chunks: still refused.
    arena.alloc([4u8; 3000]);
    arena.alloc([5u8; 3000]);
    arena.alloc([0u8; 10_000]);
    arena.check_invariants();
    assert!(arena.rewind(two_chunks).is_err());
    assert!(arena.rewind(with_oversize).is_err());
    assert_eq!(arena.rewind(start), Ok(()));
    assert_eq!(arena.stats().allocated_bytes, 0);
    arena.check_invariants();
    let _ = arena.rewind(one_chunk);
    arena.check_invariants();
    assert_eq!(*arena.alloc(9u64), 9);
    arena.check_invariants();
}

#[test]
fn rewinds_under_a_limit_lowered_below_what_is_allocated() {
    let mut arena = Arena::new();
    let start = arena.checkpoint();
    arena.alloc([0u8; 100]);
    let middle = arena.checkpoint();
    arena.alloc([0u8; 100]);
    arena.set_allocation_limit(Some(50));
    arena.check_invariants();
    assert!(arena.try_alloc(1u8).is_err());
    assert_eq!(arena.rewind(middle), Ok(()));
    arena.check_invariants();
    assert!(arena.try_alloc(1u8).is_err(), "still above the limit");
    assert_eq!(arena.rewind(start), Ok(()));
    arena.check_invariants();
    assert!(arena.try_alloc([0u8; 50]).is_ok());
    assert!(arena.try_alloc(1u8).is_err());
    arena.set_allocation_limit(Some(0));
    arena.check_invariants();
    assert!(arena.try_alloc(()).is_ok());
    arena.set_allocation_limit(Some(usize::MAX));
    arena.check_invariants();
    arena.alloc(1u8);
    arena.set_allocation_limit(None);
    arena.reset();
    arena.set_allocation_limit(Some(1));
    arena.check_invariants();
    assert!(arena.try_alloc(1u8).is_ok());
    assert!(arena.try_alloc(1u8).is_err());
    let mut text = ArenaString::new_in(&arena);
    assert!(text.try_push_str("x").is_err());
    drop(text);
    arena.check_invariants();
}
