//! `with_capacity` commits up front, and refuses impossible sizes with an error.

use pagekeep_arena::{Arena, ArenaConfig};
use pagekeep_mmap::{FailingSource, HeapPages};

#[test]
fn the_capacity_is_allocated_without_asking_the_source_again() {
    let config = ArenaConfig::new()
        .chunk_bytes(16 << 10)
        .commit_step_bytes(4096)
        .oversize_bytes(4096);
    let bytes = 40 << 10; // above both the chunk size and the oversize threshold
    let arena: Arena<FailingSource<HeapPages>> =
        Arena::try_with_source_and_capacity(FailingSource::new(HeapPages), config, bytes)
            .expect("capacity");
    assert!(arena.stats().committed_bytes >= bytes);
    assert_eq!(arena.stats().allocated_bytes, 0);
    let requests = arena.source().requests();
    arena.source().set_failing(true);
    // One allocation of the whole capacity, then (after freeing it) many small ones.
    let whole = arena.alloc_layout(core::alloc::Layout::array::<u8>(bytes).unwrap());
    // SAFETY: `whole` is the latest allocation, made with this layout and unused.
    unsafe { arena.dealloc(whole, core::alloc::Layout::array::<u8>(bytes).unwrap()) };
    for i in 0..bytes / 8 {
        assert_eq!(*arena.alloc(i as u64), i as u64);
    }
    assert_eq!(
        arena.source().requests(),
        requests,
        "no request for the capacity"
    );
    // Past the capacity (and the rest of its last page) the source is asked, and fails.
    while arena.try_alloc(0u64).is_ok() {}
    assert!(arena.source().injected_failures() >= 1);
    arena.check_invariants();
    assert_eq!(arena.stats().chunks, 1);
}

#[test]
fn with_capacity_zero_and_small_sizes() {
    for bytes in [0, 1, 63, 64, 4095, 4096, 4097] {
        let arena = Arena::with_capacity(bytes);
        assert!(arena.stats().committed_bytes >= bytes);
        assert_eq!(arena.stats().chunks, 1);
        arena.check_invariants();
        let slice = arena.alloc_slice_fill_copy(bytes, 0xA5u8);
        assert!(slice.iter().all(|&byte| byte == 0xA5));
        assert_eq!(arena.stats().chunks, 1, "{bytes} bytes fit the first chunk");
    }
}

#[test]
fn min_align_padding_is_part_of_the_capacity() {
    let arena: Arena<HeapPages, 4096> =
        Arena::try_with_source_and_capacity(HeapPages, ArenaConfig::new(), 8192).unwrap();
    arena.check_invariants();
    let committed = arena.stats().committed_bytes;
    let first = arena.alloc([1u8; 4096]);
    let second = arena.alloc([2u8; 4096]);
    assert_eq!((first[0], second[4095]), (1, 2));
    assert_eq!(arena.stats().committed_bytes, committed);
}

#[test]
fn impossible_capacities_are_errors_not_aborts() {
    for bytes in [
        usize::MAX,
        usize::MAX - 63,
        isize::MAX as usize,
        isize::MAX as usize - 64,
    ] {
        assert!(Arena::try_with_capacity(bytes).is_err(), "{bytes}");
        let arena = Arena::<HeapPages, 64>::try_with_source_and_capacity(
            HeapPages,
            ArenaConfig::new(),
            bytes,
        );
        assert!(arena.is_err(), "{bytes}");
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "miri aborts on huge host allocations instead of failing them"
)]
fn capacities_beyond_the_address_space_are_errors() {
    // 128 TiB and more: more than a 47-bit user address space can hold.
    for shift in [47, 50, 62] {
        assert!(
            Arena::try_with_capacity(1 << shift).is_err(),
            "1 << {shift}"
        );
    }
}

#[test]
fn a_failing_source_makes_try_with_capacity_an_error() {
    let source = FailingSource::new(HeapPages);
    source.set_failing(true);
    let arena: Result<Arena<_>, _> =
        Arena::try_with_source_and_capacity(source, ArenaConfig::new(), 4096);
    assert!(arena.is_err());
}

#[test]
#[should_panic(expected = "capacity of")]
fn with_capacity_panics_on_an_impossible_size() {
    let _ = Arena::with_capacity(usize::MAX);
}
