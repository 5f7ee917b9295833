//! Operation programs on `SlabHeap`, through `GlobalAlloc` and through `Allocator`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use pagekeep_slab::SlabHeap;
use pagekeep_slab::size_class::MAX_SMALL;
use proptest::prelude::*;

use crate::{assert_disjoint, check, check_prefix, config, fill};

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize, align_log: u32 },
    Free(usize),
    Realloc(usize, usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1usize..=256,
        4 => 257usize..=4096,
        2 => 4097usize..=16384,
        // The classes above 16 KiB (with their bigger slabs), then blocks of their own.
        2 => 16385usize..=if cfg!(miri) { 70_000 } else { MAX_SMALL },
        1 => MAX_SMALL + 1..=if cfg!(miri) { MAX_SMALL + 5000 } else { 300_000 },
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size(), 0u32..13).prop_map(|(size, align_log)| Op::Alloc { size, align_log }),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), size()).prop_map(|(i, size)| Op::Realloc(i, size)),
    ]
}

struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
    seed: u64,
}

fn run_global(ops: &[Op]) {
    let heap = SlabHeap::new();
    let mut live: Vec<Block> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let seed = step as u64;
        match *op {
            Op::Alloc { size, align_log } => {
                let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
                // SAFETY: non-zero size.
                let ptr = NonNull::new(unsafe { heap.alloc(layout) }).expect("allocation failed");
                assert_eq!(ptr.addr().get() % layout.align(), 0);
                assert!(SlabHeap::<pagekeep_mmap::DefaultPages>::usable_size(layout) >= size);
                // SAFETY: a fresh block of `size` bytes.
                unsafe { fill(ptr.as_ptr(), size, seed) };
                live.push(Block { ptr, layout, seed });
            }
            Op::Free(index) if !live.is_empty() => {
                let block = live.swap_remove(index % live.len());
                // SAFETY: a live block we filled, freed once with its layout.
                unsafe {
                    check(block.ptr.as_ptr(), block.layout.size(), block.seed);
                    heap.dealloc(block.ptr.as_ptr(), block.layout);
                }
            }
            Op::Realloc(index, new_size) if !live.is_empty() => {
                let index = index % live.len();
                let block = &mut live[index];
                // SAFETY: a live block of this heap; the new size is valid.
                let moved = unsafe { heap.realloc(block.ptr.as_ptr(), block.layout, new_size) };
                let moved = NonNull::new(moved).expect("realloc failed");
                assert_eq!(moved.addr().get() % block.layout.align(), 0);
                let kept = block.layout.size().min(new_size);
                // SAFETY: the first `kept` bytes were preserved; then refill all.
                unsafe {
                    check_prefix(moved.as_ptr(), block.layout.size(), kept, block.seed);
                    fill(moved.as_ptr(), new_size, seed);
                }
                block.ptr = moved;
                block.layout = Layout::from_size_align(new_size, block.layout.align()).unwrap();
                block.seed = seed;
            }
            _ => {}
        }
    }
    let mut ranges: Vec<_> = live
        .iter()
        .map(|b| (b.ptr.addr().get(), b.layout.size()))
        .collect();
    assert_disjoint(&mut ranges);
    heap.check_invariants();
    for block in live {
        // SAFETY: live blocks, freed once.
        unsafe {
            check(block.ptr.as_ptr(), block.layout.size(), block.seed);
            heap.dealloc(block.ptr.as_ptr(), block.layout);
        }
    }
    let stats = heap.stats();
    assert_eq!(stats.small.objects_live, 0, "{stats:?}");
    assert_eq!(stats.large_blocks, 0);
    heap.trim();
    heap.check_invariants();
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn global_alloc_programs_keep_blocks_aligned_disjoint_and_intact(
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 16 } else { 300 }),
    ) {
        run_global(&ops);
    }
}

#[test]
fn realloc_stays_in_place_within_a_class() {
    let heap = SlabHeap::new();
    let layout = Layout::from_size_align(40, 8).unwrap();
    // SAFETY: non-zero size; the block is reallocated within its class (48 bytes).
    unsafe {
        let block = heap.alloc(layout);
        assert!(!block.is_null());
        let grown = heap.realloc(block, layout, 48);
        assert_eq!(grown, block);
        let moved = heap.realloc(grown, Layout::from_size_align(48, 8).unwrap(), 49);
        assert_ne!(moved, block);
        heap.dealloc(moved, Layout::from_size_align(49, 8).unwrap());
    }
}

#[test]
fn allocator_api_collections_work() {
    let heap = SlabHeap::new();
    let mut vector = allocator_api2::vec::Vec::new_in(&heap);
    for i in 0..(if cfg!(miri) { 500 } else { 50_000 }) {
        vector.push(i as u64);
    }
    assert_eq!(
        vector.iter().sum::<u64>(),
        (0..vector.len() as u64).sum::<u64>()
    );
    vector.truncate(10);
    vector.shrink_to_fit();
    assert_eq!(vector.len(), 10);
    let boxed = allocator_api2::boxed::Box::new_in([7u8; 3000], &heap);
    assert_eq!(boxed[2999], 7);
    let zero = heap.allocate(Layout::new::<()>()).unwrap();
    // SAFETY: zero-sized blocks are deallocated with their layout.
    unsafe { heap.deallocate(zero.cast(), Layout::new::<()>()) };
}

#[test]
fn zeroed_blocks_are_zero_even_when_reused() {
    let heap = SlabHeap::new();
    for size in [24usize, 500, 9000, 70_000] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: non-zero sizes; blocks filled, freed and reallocated zeroed.
        unsafe {
            let dirty = heap.alloc(layout);
            dirty.write_bytes(0xFF, size);
            heap.dealloc(dirty, layout);
            let clean = heap.alloc_zeroed(layout);
            assert!(crate::sampled(size).all(|i| clean.add(i).read() == 0));
            heap.dealloc(clean, layout);
        }
    }
}
