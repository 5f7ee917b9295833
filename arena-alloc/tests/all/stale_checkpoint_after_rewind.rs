//! A checkpoint taken after a point the arena was rewound past is refused, even when the
//! arena has grown back to the same number of chunks: rewinding to it would restore
//! accounting that no longer matches the chunks alive.

use core::alloc::Layout;

use pagekeep_arena::{Arena, ArenaConfig, CheckpointError};

fn oversize(bytes: usize) -> Layout {
    Layout::from_size_align(bytes, 8).unwrap()
}

#[test]
fn a_mark_past_an_earlier_rewind_is_refused() {
    // A small commit step, so that the oversize requests do not fit the committed part
    // of the ordinary chunk and get chunks of their own.
    let mut arena = Arena::with_config(
        ArenaConfig::new()
            .oversize_bytes(4096)
            .commit_step_bytes(4096),
    );
    arena.alloc(1u8);
    let b = arena.checkpoint();
    arena.alloc_layout(oversize(8 << 10));
    let a = arena.checkpoint();
    arena.rewind(b).unwrap();
    arena.alloc_layout(oversize(90 << 10));
    let before = arena.stats().allocated_bytes;
    assert!(before > 90 << 10);
    assert_eq!(arena.rewind(a), Err(CheckpointError::Ahead));
    assert_eq!(
        arena.stats().allocated_bytes,
        before,
        "a refused rewind leaves the arena unchanged"
    );
    arena.check_invariants();
    // The mark on the path is still good.
    arena.rewind(b).unwrap();
    assert_eq!(arena.stats().oversize_chunks, 0);
    arena.check_invariants();
}

#[test]
fn a_mark_in_an_ordinary_chunk_replaced_after_a_rewind_is_refused() {
    let mut arena = Arena::with_config(ArenaConfig::new().chunk_bytes(16 << 10));
    arena.alloc(1u8);
    let b = arena.checkpoint();
    // Fill the first chunk so the next allocation starts a second one.
    while arena.stats().chunks == 1 {
        arena.alloc([0u8; 1024]);
    }
    let a = arena.checkpoint();
    arena.rewind(b).unwrap();
    while arena.stats().chunks == 1 {
        arena.alloc([0u8; 1024]);
    }
    assert_eq!(arena.rewind(a), Err(CheckpointError::Ahead));
    arena.check_invariants();
    arena.rewind(b).unwrap();
    arena.check_invariants();
}

#[test]
fn nested_marks_rewind_innermost_first() {
    let mut arena = Arena::with_config(ArenaConfig::new().oversize_bytes(4096));
    let outer = arena.checkpoint();
    arena.alloc_layout(oversize(8 << 10));
    let inner = arena.checkpoint();
    arena.alloc_layout(oversize(8 << 10));
    arena.rewind(inner).unwrap();
    assert_eq!(arena.stats().oversize_chunks, 1);
    arena.rewind(outer).unwrap();
    assert_eq!(arena.stats().allocated_bytes, 0);
}
