//! Zero-sized requests of a large alignment: they need no memory, so they are served
//! under any limit (zero included) and reserve or commit nothing. (They were charged the
//! padding a fresh chunk would need: refused at limit 0 from alignment 128 on, and served
//! otherwise by reserving and committing a chunk of the alignment's size, 512 MiB for
//! 2^29.)

use core::alloc::Layout;

use allocator_api2::alloc::Allocator;
use pagekeep_arena::{Arena, ArenaConfig};

const LARGEST_ALIGNMENT_LOG: u32 = 29;

#[repr(align(4096))]
struct PageAligned;

#[test]
fn every_alignment_is_served_under_a_zero_limit() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(0));
    for log in 0..=LARGEST_ALIGNMENT_LOG {
        let layout = Layout::from_size_align(0, 1 << log).unwrap();
        let block = arena
            .try_alloc_layout(layout)
            .unwrap_or_else(|_| panic!("{layout:?} refused"));
        assert_eq!(block.addr().get() % layout.align(), 0, "{layout:?}");
        let block = (&arena).allocate(layout).unwrap().cast::<u8>();
        assert_eq!(block.addr().get() % layout.align(), 0, "{layout:?}");
        arena.check_invariants();
    }
    let typed: *const PageAligned = arena.alloc(PageAligned);
    assert_eq!(typed.addr() % 4096, 0);
    assert_eq!(arena.stats().allocated_bytes, 0);
}

#[test]
fn zero_sized_requests_reserve_and_commit_nothing() {
    let arena = Arena::new();
    for log in 0..=LARGEST_ALIGNMENT_LOG {
        let layout = Layout::from_size_align(0, 1 << log).unwrap();
        let block = arena.try_alloc_layout(layout).unwrap();
        assert_eq!(block.addr().get() % layout.align(), 0, "{layout:?}");
    }
    let stats = arena.stats();
    assert_eq!(
        (stats.chunks, stats.reserved_bytes, stats.committed_bytes),
        (0, 0, 0)
    );
    arena.check_invariants();
}

#[test]
fn zero_sized_requests_after_real_ones_leave_the_bump_pointer_alone() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(64));
    let first = arena.alloc(1u8);
    let before = arena.stats().allocated_bytes;
    for log in 0..=LARGEST_ALIGNMENT_LOG {
        let layout = Layout::from_size_align(0, 1 << log).unwrap();
        let block = arena.try_alloc_layout(layout).unwrap();
        assert_eq!(block.addr().get() % layout.align(), 0, "{layout:?}");
        // SAFETY: a zero-sized block of this arena with its layout, not used again.
        unsafe { arena.dealloc(block, layout) };
    }
    assert_eq!(arena.stats().allocated_bytes, before);
    let second = arena.alloc(2u8);
    assert_eq!((*first, *second), (1, 2));
    arena.check_invariants();
}
