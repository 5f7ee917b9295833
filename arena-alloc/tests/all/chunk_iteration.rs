//! `iter_allocated_chunks` yields exactly the bytes handed out, chunk by chunk.

use core::alloc::Layout;
use core::mem::MaybeUninit;

use pagekeep_arena::{Arena, ArenaConfig};
use pagekeep_mmap::HeapPages;

/// The initialised bytes of `chunk` (every test writes all the bytes it allocates and
/// allocates only byte-aligned values, so there is no padding).
fn bytes(chunk: &[MaybeUninit<u8>]) -> Vec<u8> {
    // SAFETY: see above: every byte of the used part was written.
    chunk
        .iter()
        .map(|byte| unsafe { byte.assume_init() })
        .collect()
}

#[test]
fn an_empty_arena_has_no_chunks() {
    let mut arena = Arena::new();
    assert_eq!(arena.iter_allocated_chunks().count(), 0);
    let mut arena = Arena::with_capacity(4096);
    let chunks: Vec<_> = arena.iter_allocated_chunks().map(<[_]>::len).collect();
    assert_eq!(chunks, [0]);
}

#[test]
fn one_chunk_holds_the_allocations_in_order() {
    let mut arena = Arena::new();
    arena.alloc_slice_copy(b"abc");
    arena.alloc_str("def");
    arena.alloc(b'g');
    let chunks: Vec<Vec<u8>> = arena.iter_allocated_chunks().map(bytes).collect();
    assert_eq!(chunks, [b"abcdefg".to_vec()]);
}

#[test]
fn several_chunks_newest_first_then_oversize() {
    let config = ArenaConfig::new()
        .chunk_bytes(8192)
        .commit_step_bytes(4096)
        .oversize_bytes(3000);
    let mut arena: Arena<HeapPages> = Arena::with_source(HeapPages, config);
    let mut expected_total = 0;
    for fill in 0..6u8 {
        arena.alloc_slice_fill_copy(2500, fill); // three fit a chunk
        expected_total += 2500;
    }
    arena.alloc_slice_fill_copy(5000, 0xEEu8); // a dedicated chunk
    arena.alloc_slice_fill_copy(4000, 0xEFu8); // another
    let stats = arena.stats();
    assert_eq!(stats.oversize_chunks, 2);
    let chunks: Vec<Vec<u8>> = arena.iter_allocated_chunks().map(bytes).collect();
    assert_eq!(chunks.len(), stats.chunks + stats.oversize_chunks);
    let total: usize = chunks.iter().map(Vec::len).sum();
    assert_eq!(total, stats.allocated_bytes);
    assert_eq!(total, expected_total + 9000);
    // Ordinary chunks newest first, each in allocation order.
    let ordinary: Vec<u8> = chunks[..stats.chunks]
        .iter()
        .rev()
        .flatten()
        .copied()
        .collect();
    let expected: Vec<u8> = (0..6u8).flat_map(|fill| [fill; 2500]).collect();
    assert_eq!(ordinary, expected);
    assert_eq!(chunks[stats.chunks], vec![0xEF; 4000]);
    assert_eq!(chunks[stats.chunks + 1], vec![0xEE; 5000]);
}

#[test]
fn freed_and_rewound_bytes_are_not_yielded() {
    let mut arena = Arena::new();
    arena.alloc_slice_copy(b"keep");
    let mark = arena.checkpoint();
    arena.alloc_slice_copy(b"rewound");
    arena.rewind(mark).unwrap();
    let layout = Layout::array::<u8>(5).unwrap();
    let latest = arena.alloc_layout(layout);
    // SAFETY: the latest allocation, made with `layout`, unused.
    unsafe { arena.dealloc(latest, layout) };
    let chunks: Vec<Vec<u8>> = arena.iter_allocated_chunks().map(bytes).collect();
    assert_eq!(chunks, [b"keep".to_vec()]);
    arena.reset();
    let chunks: Vec<usize> = arena.iter_allocated_chunks().map(<[_]>::len).collect();
    assert_eq!(chunks, [0]);
}

#[test]
fn padding_is_yielded_as_uninitialised_bytes() {
    let mut arena = Arena::new();
    arena.alloc(1u8);
    arena.alloc(0x0203_0405u32); // three bytes of padding before it
    let chunks: Vec<&[MaybeUninit<u8>]> = arena.iter_allocated_chunks().collect();
    assert_eq!(chunks.len(), 1);
    let chunk = chunks[0];
    assert_eq!(chunk.len(), 8);
    // SAFETY: byte 0 and bytes 4..8 were written; the padding is not read.
    let (first, value) = unsafe {
        (
            chunk[0].assume_init(),
            u32::from_ne_bytes(core::array::from_fn(|i| chunk[4 + i].assume_init())),
        )
    };
    assert_eq!((first, value), (1, 0x0203_0405));
}

#[test]
fn a_vec_pushed_in_place_shows_as_its_capacity() {
    let mut arena = Arena::new();
    {
        let mut vec = allocator_api2::vec::Vec::new_in(&arena);
        vec.extend_from_slice(&[9u8; 10]);
        let capacity = vec.capacity();
        vec.leak();
        assert!(capacity >= 10);
    }
    let len: usize = arena.iter_allocated_chunks().map(<[_]>::len).sum();
    assert_eq!(len, arena.stats().allocated_bytes);
    // The first ten bytes were written.
    let first = arena.iter_allocated_chunks().next().unwrap();
    // SAFETY: the vector's ten elements were written.
    let written: Vec<u8> = first[..10]
        .iter()
        .map(|byte| unsafe { byte.assume_init() })
        .collect();
    assert_eq!(written, [9; 10]);
}
