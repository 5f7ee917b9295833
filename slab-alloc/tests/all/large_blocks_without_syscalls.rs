//! Blocks between 16 and 128 KiB come from size classes: a program that allocates and
//! frees them over and over makes no system call once warm, `realloc` within their class
//! stays in place, and `trim`, the working-set caps and the purge of objects that go
//! back to their slabs still give their memory back.
//! Blocks above 128 KiB keep their own mappings (and `mremap` growth), and once freed are
//! kept for the next large requests (split or grown to fit), within a bound in bytes and
//! for at most half a second unused.

use core::alloc::{GlobalAlloc, Layout};

use pagekeep_mmap::syscall_counters::{self, SyscallCounts};
use pagekeep_slab::SlabHeap;
use pagekeep_slab::size_class::{CLASS_SIZES, MAX_SMALL, class_for};

fn cost_of<T>(operation: impl FnOnce() -> T) -> (T, SyscallCounts) {
    let before = syscall_counters::snapshot();
    let result = operation();
    (result, syscall_counters::snapshot().since(&before))
}

/// Allocates and frees `rounds` times a batch of `batch` blocks of `layout`, writing the
/// first and last byte of each.
fn churn(heap: &SlabHeap, layout: Layout, batch: usize, rounds: usize) {
    let mut blocks = Vec::with_capacity(batch);
    for _ in 0..rounds {
        for _ in 0..batch {
            // SAFETY: non-zero size.
            let block = unsafe { heap.alloc(layout) };
            assert!(!block.is_null());
            // SAFETY: the block holds `layout.size()` bytes.
            unsafe {
                block.write(1);
                block.add(layout.size() - 1).write(2);
            }
            blocks.push(block);
        }
        for block in blocks.drain(..) {
            // SAFETY: allocated above with `layout`, freed once.
            unsafe { heap.dealloc(block, layout) };
        }
    }
}

#[test]
fn a_steady_loop_of_40_kib_blocks_makes_no_system_call_after_warm_up() {
    let heap = SlabHeap::new();
    let layout = Layout::from_size_align(40 * 1024, 8).unwrap();
    let rounds = if cfg!(miri) { 20 } else { 10_000 };
    for batch in [1, 3, 16] {
        churn(&heap, layout, batch, 2);
        let ((), cost) = cost_of(|| churn(&heap, layout, batch, rounds));
        assert_eq!(
            (cost.mmap, cost.munmap, cost.mremap, cost.total()),
            (0, 0, 0, 0),
            "batches of {batch}: {cost:?}"
        );
    }
    heap.check_invariants();
    let stats = heap.stats();
    assert_eq!((stats.large_blocks, stats.small.objects_live), (0, 0));
}

#[test]
fn blocks_above_the_classes_are_kept_and_reused_without_system_calls() {
    let heap = SlabHeap::new();
    for size in [MAX_SMALL + 1, 1 << 20, 5 << 20, 25 << 20] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        churn(&heap, layout, 1, 1);
        assert!(heap.stats().large_bytes_kept >= size, "{:?}", heap.stats());
        let ((), cost) = cost_of(|| churn(&heap, layout, 1, 4));
        assert_eq!(cost.total(), 0, "{size} bytes: {cost:?}");
    }
    heap.trim();
    assert_eq!(heap.stats().large_bytes_kept, 0);
}

#[test]
fn zeroed_large_blocks_are_fresh_mappings_that_read_as_zeros() {
    // The counterpart of the test above: proves the counters see the heap's calls. A kept
    // block holds old bytes, so zeroed requests map a fresh one (which costs no clearing).
    let heap = SlabHeap::new();
    let layout = Layout::from_size_align(MAX_SMALL + 1, 8).unwrap();
    churn(&heap, layout, 1, 1);
    let ((), cost) = cost_of(|| {
        for _ in 0..4 {
            // SAFETY: non-zero size; the block's `layout.size()` bytes are read as bytes
            // and as `u128`s (which any bits are), written, and the block freed once.
            unsafe {
                let block = heap.alloc_zeroed(layout);
                assert!(!block.is_null());
                let bytes = core::slice::from_raw_parts(block, layout.size());
                // Read 16 bytes at a time (under miri, a byte at a time took a minute).
                let (head, words, tail) = bytes.align_to::<u128>();
                assert!(head.iter().chain(tail).all(|&byte| byte == 0));
                assert!(words.iter().all(|&word| word == 0));
                block.write_bytes(0xAB, layout.size());
                heap.dealloc(block, layout);
            }
        }
    });
    assert_eq!(cost.mmap, 4, "{cost:?}");
}

#[test]
fn a_kept_block_is_split_for_smaller_requests_and_grown_for_larger_ones() {
    let heap = SlabHeap::new();
    let mib = |n: usize| Layout::from_size_align(n << 20, 8).unwrap();
    // SAFETY: each block is allocated with its layout, written within it, freed once.
    unsafe {
        let big = heap.alloc(mib(20));
        assert!(!big.is_null());
        big.write_bytes(1, 20 << 20);
        heap.dealloc(big, mib(20));
        // Two blocks carved from the kept 20 MiB, without a system call.
        let ((first, second), cost) = cost_of(|| (heap.alloc(mib(8)), heap.alloc(mib(12))));
        assert_eq!(cost.total(), 0, "{cost:?}");
        assert!(!first.is_null() && !second.is_null());
        first.write_bytes(2, 8 << 20);
        second.write_bytes(3, 12 << 20);
        assert_eq!((first.read(), second.read()), (2, 3));
        assert_eq!(heap.stats().large_bytes_kept, 0);
        heap.dealloc(first, mib(8));
        heap.trim();
        // A shorter kept block grows (mremap keeps its pages) instead of a fresh mapping
        // (on Linux: elsewhere the kept block goes back and a fresh one is mapped).
        heap.dealloc(second, mib(12));
        let (grown, cost) = cost_of(|| heap.alloc(mib(16)));
        assert!(!grown.is_null());
        grown.write_bytes(4, 16 << 20);
        if cfg!(all(target_os = "linux", not(miri))) {
            assert_eq!((cost.mmap, cost.mremap), (0, 1), "{cost:?}");
        }
        heap.dealloc(grown, mib(16));
    }
    heap.trim();
    let stats = heap.stats();
    assert_eq!(
        (stats.large_blocks, stats.large_bytes_kept),
        (0, 0),
        "{stats:?}"
    );
}

#[test]
fn kept_large_blocks_are_bounded_and_go_back_when_old() {
    let heap = SlabHeap::new();
    let layout = |mib: usize| Layout::from_size_align(mib << 20, 8).unwrap();
    // SAFETY: each block is allocated with its layout and freed once.
    let blocks: Vec<(*mut u8, Layout)> = [50, 50, 50, 200]
        .into_iter()
        .map(|mib| (unsafe { heap.alloc(layout(mib)) }, layout(mib)))
        .collect();
    let ((), cost) = cost_of(|| {
        for &(block, layout) in &blocks {
            assert!(!block.is_null());
            // SAFETY: as above.
            unsafe { heap.dealloc(block, layout) };
        }
    });
    // At most 128 MiB kept: of three 50 MiB blocks the oldest goes, and a block above
    // the bound is never kept.
    assert_eq!(cost.munmap, 2, "{cost:?}");
    assert_eq!(heap.stats().large_bytes_kept, 100 << 20);
    // Reading the statistics releases nothing; the next large operation after half a
    // second unused (here the free of a fresh zeroed block, which is then kept)
    // releases the old ones.
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(heap.stats().large_bytes_kept, 100 << 20);
    let small = Layout::from_size_align(1 << 20, 8).unwrap();
    // SAFETY: non-zero size; freed once.
    let ((), cost) = cost_of(|| unsafe { heap.dealloc(heap.alloc_zeroed(small), small) });
    assert_eq!(heap.stats().large_bytes_kept, 1 << 20);
    assert_eq!(cost.munmap, 2, "{cost:?}");
}

/// Allocates a block of `mib` MiB and fills it with `byte`.
///
/// # Safety
/// The block is freed with the layout of `mib` MiB, align 8.
unsafe fn filled(heap: &SlabHeap, mib: usize, byte: u8) -> *mut u8 {
    let layout = Layout::from_size_align(mib << 20, 8).unwrap();
    // SAFETY: non-zero size.
    let block = unsafe { heap.alloc(layout) };
    assert!(!block.is_null());
    // SAFETY: the block holds `layout.size()` bytes.
    unsafe { block.write_bytes(byte, layout.size()) };
    block
}

#[test]
#[cfg_attr(
    any(miri, not(target_os = "linux")),
    ignore = "moving pages between mappings is mremap's (Linux)"
)]
fn a_request_longer_than_every_kept_block_takes_the_pages_of_several() {
    let heap = SlabHeap::new();
    let mib = |n: usize| Layout::from_size_align(n << 20, 8).unwrap();
    // SAFETY: each block is allocated with its layout, written within it, freed once.
    unsafe {
        let blocks = [
            filled(&heap, 8, 1),
            filled(&heap, 6, 2),
            filled(&heap, 4, 3),
        ];
        for (block, size) in blocks.into_iter().zip([8, 6, 4]) {
            heap.dealloc(block, mib(size));
        }
        assert_eq!(heap.stats().large_bytes_kept, 18 << 20);
        // 16 MiB: longer than each kept block, shorter than all three. The 8 MiB grows
        // and pages of the next two move into it; the 4 MiB block lends only 2 MiB.
        let (joined, cost) = cost_of(|| heap.alloc(mib(16)));
        assert!(!joined.is_null());
        assert_eq!((cost.mmap, cost.mremap), (0, 3), "{cost:?}");
        assert_eq!(heap.stats().large_bytes_kept, 2 << 20);
        // Every page of the block is one that was written before: resident already, no
        // page to fault in. Its bytes are the old contents (a kept block is not cleared).
        let resident =
            pagekeep_mmap::sys::resident_pages(core::ptr::NonNull::new(joined).unwrap(), 16 << 20)
                .unwrap();
        assert_eq!(resident * pagekeep_mmap::sys::page_size(), 16 << 20);
        let bytes = core::slice::from_raw_parts(joined, 16 << 20);
        assert_eq!(
            (bytes[0], bytes[(8 << 20) + 1], bytes[(14 << 20) + 1]),
            (1, 2, 3)
        );
        joined.write_bytes(4, 16 << 20);
        // Such a block spans several of the kernel's mappings, which `mremap` cannot
        // grow: `realloc` copies it instead, keeping every byte.
        let grown = heap.realloc(joined, mib(16), 40 << 20);
        assert!(!grown.is_null());
        let bytes = core::slice::from_raw_parts(grown, 16 << 20);
        assert!(bytes.iter().all(|&byte| byte == 4));
        grown.add(40 << 20).sub(1).write(5);
        heap.dealloc(grown, mib(40));
    }
    heap.trim();
    let stats = heap.stats();
    assert_eq!(
        (stats.large_blocks, stats.large_bytes_kept),
        (0, 0),
        "{stats:?}"
    );
}

#[test]
#[cfg_attr(
    any(miri, not(target_os = "linux")),
    ignore = "moving pages between mappings is mremap's (Linux)"
)]
fn blocks_made_of_moved_pages_are_kept_split_and_joined_again() {
    // A churn of large blocks of changing sizes, as mimalloc-bench's malloc-large: every
    // block made of several kept ones is freed, kept and taken again; each keeps the
    // pattern written into it until it is freed.
    let heap = SlabHeap::new();
    let mut live: Vec<Option<(*mut u8, usize, u8)>> = vec![None; 6];
    let mut seed = 7u32;
    for round in 0..300u32 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let slot = (seed >> 8) as usize % live.len();
        let size = (2 + (seed >> 16) as usize % 10) << 20;
        let byte = (round % 251) as u8;
        // SAFETY: every block is allocated with its size (align 8), checked and freed once.
        unsafe {
            let block = heap.alloc(Layout::from_size_align(size, 8).unwrap());
            assert!(!block.is_null());
            block.write_bytes(byte, size);
            if let Some((old, old_size, old_byte)) = live[slot].replace((block, size, byte)) {
                let bytes = core::slice::from_raw_parts(old, old_size);
                assert!(
                    bytes.iter().step_by(4096).all(|&b| b == old_byte),
                    "round {round}"
                );
                heap.dealloc(old, Layout::from_size_align(old_size, 8).unwrap());
            }
        }
    }
    for (block, size, byte) in live.into_iter().flatten() {
        // SAFETY: as above.
        unsafe {
            assert_eq!(block.add(size - 1).read(), byte);
            heap.dealloc(block, Layout::from_size_align(size, 8).unwrap());
        }
    }
    heap.trim();
    let stats = heap.stats();
    assert_eq!(
        (stats.large_blocks, stats.large_bytes_kept),
        (0, 0),
        "{stats:?}"
    );
}

#[test]
fn large_block_statistics_count_usable_sizes_and_return_to_zero() {
    use allocator_api2::alloc::Allocator;
    let heap = SlabHeap::new();
    let layout = Layout::from_size_align(200 * 1024 + 1, 8).unwrap();
    let block = heap.allocate(layout).unwrap();
    let usable = block.len();
    assert!(usable >= layout.size());
    assert_eq!(heap.stats().large_bytes, usable);
    // An `Allocator` caller may free with any size up to the usable one it was given.
    // SAFETY: allocated above; the usable size fits the block.
    unsafe { heap.deallocate(block.cast(), Layout::from_size_align(usable, 8).unwrap()) };
    let stats = heap.stats();
    assert_eq!((stats.large_blocks, stats.large_bytes), (0, 0), "{stats:?}");
}

#[test]
fn realloc_within_a_large_class_stays_in_place_and_beyond_the_classes_uses_mremap() {
    let heap = SlabHeap::new();
    let align = 16;
    // SAFETY: live blocks with their layouts, each reallocated or freed once.
    unsafe {
        let layout = Layout::from_size_align(33 * 1024, align).unwrap();
        let block = heap.alloc(layout);
        assert!(!block.is_null());
        block.add(100).write(7);
        // 33 KiB and 40 KiB are both in the 40 KiB class.
        let ((grown, shrunk), cost) = cost_of(|| {
            let grown = heap.realloc(block, layout, 40 * 1024);
            let shrunk = heap.realloc(
                grown,
                Layout::from_size_align(40 * 1024, align).unwrap(),
                32 * 1024 + 1,
            );
            (grown, shrunk)
        });
        assert_eq!((grown, shrunk), (block, block));
        assert_eq!(cost.total(), 0, "{cost:?}");
        assert_eq!(
            SlabHeap::<pagekeep_mmap::DefaultPages>::usable_size(layout),
            40 * 1024
        );
        // Into the next class: moved, contents kept.
        let moved = heap.realloc(
            shrunk,
            Layout::from_size_align(32 * 1024 + 1, align).unwrap(),
            41 * 1024,
        );
        assert_ne!(moved, block);
        assert_eq!(moved.add(100).read(), 7);
        // Out of the classes: a mapping of its own, which then grows with one mremap.
        let old = Layout::from_size_align(41 * 1024, align).unwrap();
        let big = heap.realloc(moved, old, 200 * 1024);
        assert_eq!(big.add(100).read(), 7);
        assert_eq!(heap.stats().large_blocks, 1);
        let old = Layout::from_size_align(200 * 1024, align).unwrap();
        let (bigger, cost) = cost_of(|| heap.realloc(big, old, 4 << 20));
        assert!(!bigger.is_null());
        // (Only Linux has mremap: `MmapAlloc` maps and copies elsewhere and under miri.)
        if cfg!(all(target_os = "linux", not(miri))) {
            assert_eq!((cost.mremap, cost.mmap), (1, 0), "{cost:?}");
        }
        assert_eq!(bigger.add(100).read(), 7);
        heap.dealloc(bigger, Layout::from_size_align(4 << 20, align).unwrap());
    }
    assert_eq!(heap.stats().large_blocks, 0);
}

#[test]
fn trim_releases_the_slabs_of_every_large_class() {
    let heap = SlabHeap::new();
    let count = if cfg!(miri) { 12 } else { 64 };
    let sizes: Vec<usize> = CLASS_SIZES
        .iter()
        .copied()
        .filter(|&size| size > 16 * 1024)
        .collect();
    assert_eq!(sizes.len(), 12);
    let layouts: Vec<Layout> = sizes
        .iter()
        .map(|&size| Layout::from_size_align(size - 100, 8).unwrap())
        .collect();
    let mut blocks = Vec::new();
    for &layout in &layouts {
        for _ in 0..count {
            // SAFETY: non-zero size.
            let block = unsafe { heap.alloc(layout) };
            assert!(!block.is_null());
            blocks.push((block, layout));
        }
    }
    let committed = heap.stats().small.bytes_committed;
    assert!(
        committed >= count * sizes.iter().sum::<usize>(),
        "{committed}"
    );
    for (block, layout) in blocks {
        // SAFETY: allocated above, freed once.
        unsafe { heap.dealloc(block, layout) };
    }
    heap.flush_thread_cache();
    let ((), cost) = cost_of(|| heap.trim());
    let stats = heap.stats();
    assert_eq!(stats.small.bytes_committed, 0, "{stats:?}");
    assert_eq!(
        stats.small.slabs_released, stats.small.slabs_created,
        "{stats:?}"
    );
    // (Under miri the slabs are heap pages, whose release is not a counted call.)
    if !cfg!(miri) {
        assert!(cost.munmap >= 12, "{cost:?}");
    }
    heap.check_invariants();
}

#[test]
fn a_burst_of_large_blocks_leaves_at_most_a_few_empty_slabs() {
    // The hard cap on empty slabs counts bytes: 16 slabs of 256 KiB for a class keeping
    // one empty slab, so four of the 1 MiB slabs of the 112 KiB class.
    let heap = SlabHeap::new();
    let layout = Layout::from_size_align(100_000, 8).unwrap();
    let class = class_for(layout.size(), layout.align()).unwrap();
    let count = if cfg!(miri) { 40 } else { 400 };
    let blocks: Vec<_> = (0..count)
        // SAFETY: non-zero size.
        .map(|_| unsafe { heap.alloc(layout) })
        .collect();
    assert!(blocks.iter().all(|block| !block.is_null()));
    let stats = heap.class_stats(class).unwrap();
    assert_eq!(stats.object_size, 114_688);
    assert_eq!(stats.objects_per_slab, 9);
    let created = stats.slabs_full + stats.slabs_partial;
    assert!(created >= count / 9, "{stats:?}");
    let ((), cost) = cost_of(|| {
        for block in blocks {
            // SAFETY: allocated above, freed once.
            unsafe { heap.dealloc(block, layout) };
        }
    });
    let stats = heap.class_stats(class).unwrap();
    assert!(stats.slabs_empty <= 4, "{stats:?}");
    // The objects that went back to their slabs gave back their pages, one call each
    // (the released slabs were unmapped after that): all but those of the thread's two
    // magazines and of the depot's two (1 MiB of 112 KiB objects), four each.
    if !cfg!(miri) {
        assert!(cost.madvise >= count as u64 - 16, "{cost:?} {stats:?}");
    }
    // What stays: the capped empty slabs and those holding the objects of the depot's
    // bounded magazines (1 MiB of objects) and of this thread's two magazines.
    assert!(stats.objects_in_depot * 114_688 <= 4 << 20, "{stats:?}");
    let kept = stats.slabs_empty + stats.slabs_partial + stats.slabs_full;
    assert!(kept <= 4 + 6, "{stats:?}");
    heap.check_invariants();
}

/// A block handed to another thread to free.
struct Sent(*mut u8, Layout);

// SAFETY: the block is owned by whoever holds the `Sent`; the heap is `Sync`.
unsafe impl Send for Sent {}

#[test]
fn large_class_blocks_freed_by_other_threads_come_back_intact() {
    let heap = SlabHeap::new();
    let rounds = if cfg!(miri) { 2 } else { 50 };
    let per_round = if cfg!(miri) { 6 } else { 40 };
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::channel::<Sent>();
        let heap = &heap;
        scope.spawn(move || {
            for Sent(block, layout) in receiver {
                // SAFETY: a live block sent by the allocating thread, freed once here.
                unsafe {
                    assert_eq!(block.read(), layout.size() as u8);
                    assert_eq!(block.add(layout.size() - 1).read(), 0xA5);
                    heap.dealloc(block, layout);
                }
            }
            // The scope may end before this thread's exit hook has run.
            heap.flush_thread_cache();
        });
        for round in 0..rounds {
            for index in 0..per_round {
                let size =
                    16 * 1024 + 1 + (round * per_round + index) * 2711 % (MAX_SMALL - 16 * 1024);
                let layout = Layout::from_size_align(size, 16).unwrap();
                // SAFETY: non-zero size; first and last byte written.
                let block = unsafe { heap.alloc(layout) };
                assert!(!block.is_null());
                // SAFETY: the block holds `size` bytes.
                unsafe {
                    block.write(size as u8);
                    block.add(size - 1).write(0xA5);
                }
                sender.send(Sent(block, layout)).unwrap();
            }
        }
    });
    heap.check_invariants();
    assert_eq!(heap.stats().small.objects_live, 0);
}
