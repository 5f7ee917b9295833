//! The allocation limit changed at run time, including below what is allocated.

use core::alloc::Layout;

use allocator_api2::vec::Vec;
use pagekeep_arena::{Arena, ArenaConfig};

#[test]
fn raising_and_removing_the_limit_admits_more() {
    let mut arena = Arena::with_config(ArenaConfig::new().limit_bytes(1000));
    assert_eq!(arena.allocation_limit(), Some(1000));
    assert!(arena.try_alloc_slice_fill_copy(1000, 1u8).is_ok());
    assert!(arena.try_alloc(1u8).is_err());
    arena.set_allocation_limit(Some(2000));
    assert_eq!(arena.allocation_limit(), Some(2000));
    assert!(arena.try_alloc_slice_fill_copy(1000, 2u8).is_ok());
    assert!(arena.try_alloc(1u8).is_err());
    arena.set_allocation_limit(None);
    assert_eq!(arena.allocation_limit(), None);
    assert!(arena.try_alloc_slice_fill_copy(100_000, 3u8).is_ok());
    arena.set_allocation_limit(Some(usize::MAX));
    assert_eq!(arena.allocation_limit(), None);
    arena.check_invariants();
}

#[test]
fn a_limit_set_before_the_first_chunk_holds() {
    let mut arena = Arena::new();
    arena.set_allocation_limit(Some(100));
    assert!(arena.try_alloc([0u8; 101]).is_err());
    assert!(arena.try_alloc([0u8; 100]).is_ok());
    assert!(arena.try_alloc(0u8).is_err());
    arena.check_invariants();
}

#[test]
fn a_limit_below_what_is_allocated_keeps_it_and_stops_growth() {
    let mut arena = Arena::new();
    let kept = arena.alloc_slice_fill_copy(3000, 7u8) as *const [u8];
    arena.set_allocation_limit(Some(1000));
    arena.check_invariants();
    assert_eq!(arena.stats().allocated_bytes, 3000);
    // SAFETY: the slice lives until the arena is reset, rewound or dropped.
    assert!(unsafe { &*kept }.iter().all(|&byte| byte == 7));
    assert!(arena.try_alloc(0u64).is_err());
    assert!(arena.try_alloc_layout(Layout::new::<u8>()).is_err());
    // A vector pushed past its first allocation cannot grow.
    {
        let mut vec: Vec<u8, _> = Vec::new_in(&arena);
        assert!(vec.try_reserve(1).is_err());
    }
    arena.check_invariants();
    assert_eq!(arena.stats().allocated_bytes, 3000);
    // After a reset the new limit holds as usual.
    arena.reset();
    assert!(arena.try_alloc_slice_fill_copy(1000, 1u8).is_ok());
    assert!(arena.try_alloc(0u8).is_err());
    arena.check_invariants();
}

#[test]
fn a_limit_below_what_is_allocated_lets_the_latest_allocation_be_taken_again() {
    let mut arena = Arena::new();
    arena.alloc_slice_fill_copy(2000, 0u8);
    let layout = Layout::array::<u8>(500).unwrap();
    let latest = arena.alloc_layout(layout);
    arena.set_allocation_limit(Some(1000));
    // SAFETY: `latest` is the latest allocation, made with `layout`, and unused.
    unsafe { arena.dealloc(latest, layout) };
    assert_eq!(arena.stats().allocated_bytes, 2000);
    // The freed 500 bytes may be taken again, but never more.
    assert!(arena.try_alloc_layout(layout).is_ok());
    assert!(arena.try_alloc(0u8).is_err());
    assert_eq!(arena.stats().allocated_bytes, 2500);
    arena.check_invariants();
}

#[test]
fn rewinding_under_a_lowered_limit_restores_it() {
    let mut arena = Arena::new();
    arena.alloc_slice_fill_copy(100, 0u8);
    let mark = arena.checkpoint();
    arena.alloc_slice_fill_copy(5000, 0u8);
    arena.set_allocation_limit(Some(600));
    assert!(arena.try_alloc(0u8).is_err());
    arena.rewind(mark).unwrap();
    assert_eq!(arena.stats().allocated_bytes, 100);
    assert!(arena.try_alloc_slice_fill_copy(500, 1u8).is_ok());
    assert!(arena.try_alloc(1u8).is_err());
    arena.check_invariants();
}

#[test]
fn zero_limit_refuses_everything_but_zero_sized_values() {
    let mut arena = Arena::new();
    arena.set_allocation_limit(Some(0));
    assert!(arena.try_alloc(1u8).is_err());
    assert!(arena.try_alloc(()).is_ok());
    assert!(arena.try_alloc_slice_fill_copy(0, 1u64).is_ok());
    assert_eq!(arena.stats().allocated_bytes, 0);
    arena.check_invariants();
}

#[test]
fn lowering_the_limit_of_a_multi_chunk_arena() {
    let config = ArenaConfig::new()
        .chunk_bytes(8192)
        .commit_step_bytes(4096)
        .oversize_bytes(2048);
    let mut arena = Arena::with_config(config);
    for _ in 0..10 {
        arena.alloc_slice_fill_copy(1500, 0u8); // several ordinary chunks
    }
    arena.alloc_slice_fill_copy(3000, 0u8); // an oversize chunk
    let allocated = arena.stats().allocated_bytes;
    arena.set_allocation_limit(Some(allocated - 1));
    assert!(arena.try_alloc(0u8).is_err());
    assert!(arena.try_alloc([0u8; 3000]).is_err());
    arena.check_invariants();
    arena.set_allocation_limit(Some(allocated + 10));
    assert!(arena.try_alloc([0u8; 10]).is_ok());
    assert!(arena.try_alloc(0u8).is_err());
    arena.check_invariants();
}
