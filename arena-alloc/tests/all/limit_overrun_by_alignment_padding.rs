//! Alignment padding counts against the limit: in a fresh chunk (whose data starts after
//! a header, so a page-aligned request needs padding) and at the start of a chunk after a
//! reset with a large `MIN_ALIGN`.

use core::alloc::Layout;

use pagekeep_arena::{Arena, ArenaConfig};
use pagekeep_mmap::DefaultPages;

#[test]
fn a_page_aligned_request_in_a_fresh_chunk_stays_within_the_limit() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(4096));
    let page = Layout::from_size_align(4096, 4096).unwrap();
    let result = arena.try_alloc_layout(page);
    assert!(
        arena.stats().allocated_bytes <= 4096,
        "{} bytes allocated under a limit of 4096 ({result:?})",
        arena.stats().allocated_bytes
    );
    assert!(
        result.is_err(),
        "the padding after the header does not fit too"
    );
    arena.check_invariants();
    // What fits with its padding is still served.
    let half = Layout::from_size_align(2048, 2048).unwrap();
    assert!(arena.try_alloc_layout(half).is_ok());
    assert!(arena.stats().allocated_bytes <= 4096);
    arena.check_invariants();
}

#[test]
fn every_alignment_in_a_fresh_chunk_respects_the_limit() {
    for shift in 0..=14 {
        let align = 1usize << shift;
        for limit in [align, align + 64, 2 * align, 4096] {
            let arena = Arena::with_config(ArenaConfig::new().limit_bytes(limit));
            let layout = Layout::from_size_align(align, align).unwrap();
            let _ = arena.try_alloc_layout(layout);
            assert!(
                arena.stats().allocated_bytes <= limit,
                "align {align}, limit {limit}: {} bytes",
                arena.stats().allocated_bytes
            );
            arena.check_invariants();
        }
    }
}

#[test]
fn reset_with_a_large_min_align_keeps_the_end_after_the_bump_pointer() {
    // The chunk's data starts 64 bytes after its page-aligned base, so with MIN_ALIGN 256
    // the bump pointer of an empty chunk starts 192 bytes in: past a limit of 100.
    let mut arena = Arena::<DefaultPages, 256>::with_source(
        DefaultPages::default(),
        ArenaConfig::new().limit_bytes(100),
    );
    // A zero-size request with a large alignment is what can make the chunk.
    let _ = arena.try_alloc_layout(Layout::from_size_align(0, 512).unwrap());
    arena.reset();
    arena.check_invariants();
    assert!(arena.try_alloc_layout(Layout::new::<u64>()).is_err());
    assert!(
        arena
            .try_alloc_layout(Layout::from_size_align(0, 1).unwrap())
            .is_ok()
    );
    arena.check_invariants();
}
