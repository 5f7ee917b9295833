//! The allocation limit is an error, never an abort, and the arena stays usable.

use core::alloc::Layout;

use allocator_api2::vec::Vec;
use pagekeep_arena::{Arena, ArenaConfig};

#[test]
fn try_alloc_past_the_limit_is_an_error_and_the_arena_recovers() {
    let mut arena = Arena::with_config(ArenaConfig::new().limit_bytes(4096));
    let mut count = 0;
    while arena.try_alloc([0u8; 100]).is_ok() {
        count += 1;
    }
    assert_eq!(count, 40);
    assert!(arena.stats().allocated_bytes <= 4096);
    // Smaller requests still fit in what is left.
    assert!(arena.try_alloc([0u8; 96]).is_ok());
    assert!(arena.try_alloc_layout(Layout::new::<u8>()).is_err());
    arena.reset();
    assert!(arena.try_alloc([0u8; 100]).is_ok());
}

#[test]
fn growing_a_vec_past_the_limit_reports_try_reserve_error() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(10_000));
    let mut vec: Vec<u8, _> = Vec::new_in(&arena);
    assert!(vec.try_reserve(5_000).is_ok());
    assert!(vec.try_reserve(20_000).is_err());
    vec.extend_from_slice(&[1; 5_000]);
    assert_eq!(vec.len(), 5_000);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "miri aborts on huge host allocations instead of failing them"
)]
fn absurd_requests_are_errors() {
    let arena = Arena::new();
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 4096).unwrap();
    assert!(arena.try_alloc_layout(huge).is_err());
    let aligned = Layout::from_size_align(8, 1 << 62).unwrap();
    assert!(arena.try_alloc_layout(aligned).is_err());
    assert!(
        arena
            .try_alloc_slice_fill_with(usize::MAX / 2, |_| 0u64)
            .is_err()
    );
    assert_eq!(*arena.alloc(3u8), 3);
}

#[test]
fn oversize_chunks_count_against_the_limit() {
    let config = ArenaConfig::new().oversize_bytes(1024).limit_bytes(8192);
    let arena = Arena::with_config(config);
    assert!(
        arena
            .try_alloc_layout(Layout::array::<u8>(6000).unwrap())
            .is_ok()
    );
    assert!(
        arena
            .try_alloc_layout(Layout::array::<u8>(3000).unwrap())
            .is_err()
    );
    assert!(
        arena
            .try_alloc_layout(Layout::array::<u8>(1000).unwrap())
            .is_ok()
    );
}
