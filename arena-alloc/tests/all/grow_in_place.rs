//! The most recent allocation grows and shrinks in place: collections pushed one element
//! at a time never copy.

use core::alloc::Layout;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec;
use pagekeep_arena::{Arena, ArenaConfig};

#[test]
fn vec_pushed_one_at_a_time_never_moves() {
    let arena = Arena::new();
    let mut vec: Vec<u64, _> = Vec::new_in(&arena);
    vec.push(0);
    let first = vec.as_ptr();
    let count = if cfg!(miri) { 500 } else { 100_000 };
    for i in 1..count {
        vec.reserve_exact(1);
        vec.push(i);
        assert_eq!(vec.as_ptr(), first, "moved at element {i}");
    }
    assert_eq!(vec.iter().sum::<u64>(), count * (count - 1) / 2);
    // Capacity is exact: one chunk, no waste beyond the vector.
    assert_eq!(arena.stats().allocated_bytes, count as usize * 8);
}

#[test]
fn growth_across_commit_steps_stays_in_place() {
    let config = ArenaConfig::new()
        .chunk_bytes(1 << 20)
        .commit_step_bytes(4096);
    let arena = Arena::with_config(config);
    let mut vec: Vec<u8, _> = Vec::new_in(&arena);
    vec.push(1);
    let first = vec.as_ptr();
    vec.resize(if cfg!(miri) { 16 << 10 } else { 512 << 10 }, 7);
    assert_eq!(vec.as_ptr(), first);
    assert!(vec[1..].iter().all(|&b| b == 7));
}

#[test]
fn shrinking_the_last_allocation_gives_bytes_back() {
    let arena = Arena::new();
    let allocator = &arena;
    let layout = Layout::array::<u8>(1000).unwrap();
    let ptr = allocator.allocate(layout).unwrap().cast::<u8>();
    let before = arena.stats().allocated_bytes;
    let smaller = Layout::array::<u8>(10).unwrap();
    // SAFETY: `ptr` was allocated with `layout` by this allocator.
    let shrunk = unsafe { allocator.shrink(ptr, layout, smaller) }.unwrap();
    assert_eq!(shrunk.cast::<u8>(), ptr);
    assert_eq!(arena.stats().allocated_bytes, before - 990);
    // SAFETY: as above, now with the shrunk layout.
    unsafe { allocator.deallocate(ptr, smaller) };
    assert_eq!(arena.stats().allocated_bytes, before - 1000);
    assert_eq!(arena.stats().peak_bytes, before);
}

#[test]
fn growing_an_older_allocation_copies_its_contents() {
    let arena = Arena::new();
    let allocator = &arena;
    let old = Layout::array::<u8>(16).unwrap();
    let ptr = allocator.allocate(old).unwrap().cast::<u8>();
    // SAFETY: 16 writable bytes.
    unsafe { ptr.write_bytes(0xAB, 16) };
    let _blocker = arena.alloc(1u8);
    let new = Layout::array::<u8>(64).unwrap();
    // SAFETY: `ptr` was allocated with `old`.
    let grown = unsafe { allocator.grow_zeroed(ptr, old, new) }
        .unwrap()
        .cast::<u8>();
    assert_ne!(grown, ptr);
    // SAFETY: 64 initialised bytes.
    let bytes = unsafe { core::slice::from_raw_parts(grown.as_ptr(), 64) };
    assert!(bytes[..16].iter().all(|&b| b == 0xAB));
    assert!(bytes[16..].iter().all(|&b| b == 0));
}

#[test]
fn growth_to_a_larger_alignment_moves_when_misaligned() {
    let arena = Arena::new();
    let allocator = &arena;
    let _pad = arena.alloc(1u8);
    let old = Layout::from_size_align(8, 1).unwrap();
    let ptr = allocator.allocate(old).unwrap().cast::<u8>();
    let new = Layout::from_size_align(64, 64).unwrap();
    // SAFETY: `ptr` was allocated with `old`.
    let grown = unsafe { allocator.grow(ptr, old, new) }
        .unwrap()
        .cast::<u8>();
    assert_eq!(grown.addr().get() % 64, 0);
}

#[test]
fn shrinking_an_older_allocation_stays_put_unless_it_needs_a_larger_alignment() {
    let arena = Arena::new();
    let allocator = &arena;
    let _pad = arena.alloc(1u8);
    let old = Layout::from_size_align(100, 1).unwrap();
    let ptr = allocator.allocate(old).unwrap().cast::<u8>();
    // SAFETY: 100 writable bytes.
    unsafe { ptr.write_bytes(0x5A, 100) };
    let _blocker = arena.alloc(1u8);
    let allocated = arena.stats().allocated_bytes;
    let smaller = Layout::from_size_align(40, 1).unwrap();
    // SAFETY: `ptr` was allocated with `old`.
    let shrunk = unsafe { allocator.shrink(ptr, old, smaller) }.unwrap();
    assert_eq!(
        shrunk.cast::<u8>(),
        ptr,
        "an older block shrinks where it is"
    );
    assert_eq!(shrunk.len(), 40);
    assert_eq!(arena.stats().allocated_bytes, allocated);
    // `ptr` is odd (after a 1-byte allocation), so a 64-byte alignment needs a move.
    assert_ne!(ptr.addr().get() % 64, 0);
    let aligned = Layout::from_size_align(20, 64).unwrap();
    // SAFETY: `ptr` is now a block of `smaller`.
    let moved = unsafe { allocator.shrink(ptr, smaller, aligned) }
        .unwrap()
        .cast::<u8>();
    assert_eq!(moved.addr().get() % 64, 0);
    // SAFETY: 20 bytes copied from the old block.
    let bytes = unsafe { core::slice::from_raw_parts(moved.as_ptr(), 20) };
    assert!(bytes.iter().all(|&b| b == 0x5A));
}
