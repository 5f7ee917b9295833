//! `SlabHeap::alloc_in_class`: a block of the class asked for, from the calling thread's
//! magazine of that class of *this* heap (each heap's classes have their own fast
//! indices, learnt when the heap builds them), and `None` for an index past the classes.
//! `SlabHeap::alloc_aligned_16`, whose table from size to fast index stands in for the
//! class index: the block of the class `class_for` gives, from this heap's magazine.
//! `GlobalAlloc`'s `alloc` and `dealloc`, which find the magazine slot of layouts up to
//! 1 KiB at alignments up to 16 from a table by size and alignment: the block of the
//! layout's class, from and back to this heap's magazine of that class.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;

use pagekeep_slab::SlabHeap;
use pagekeep_slab::size_class::{CLASS_COUNT, CLASS_SIZES, class_align, class_for};

#[test]
fn every_class_hands_out_its_size_and_takes_back_its_own_freed_blocks() {
    let heap = SlabHeap::new();
    let other = SlabHeap::new();
    // Under miri, where the 50 classes cost about two minutes of CPU, eight of them: the
    // first and last class of each lookup table (sizes up to 1 KiB, up to 16 KiB, up to
    // 128 KiB), 64 and 4096 bytes. That still takes each table's fast-index path, small
    // and page-capped alignments, both kinds of slab (the large classes' bigger ones),
    // and the first call that builds `other`'s classes.
    let classes: Vec<usize> = if cfg!(miri) {
        vec![0, 5, 21, 22, 29, 37, 38, CLASS_COUNT - 1]
    } else {
        (0..CLASS_COUNT).collect()
    };
    for class in classes {
        let size = CLASS_SIZES[class];
        let class_index = u8::try_from(class).unwrap();
        // The first call of `other` builds its classes from this path.
        let block = heap.alloc_in_class(class_index).expect("a block");
        let elsewhere = other.alloc_in_class(class_index).expect("a block");
        assert!(block.addr().get().is_multiple_of(class_align(class)));
        // SAFETY: blocks of these heaps, live, written within their class's size, each
        // freed once by its address.
        unsafe {
            // (Under miri, the first bytes only: it checks every byte written.)
            let written = if cfg!(miri) { size.min(64) } else { size };
            block.write_bytes(0x3C, written);
            elsewhere.write_bytes(0x3C, written);
            assert_eq!(heap.small_block_size(block.as_ptr()), Some(size));
            assert!(heap.free_small_block(block));
            // The other heap's magazine of the same class does not hold it.
            let second = other.alloc_in_class(class_index).expect("a block");
            assert_ne!(second, block, "class {class}");
            // This heap's does.
            let again = heap.alloc_in_class(class_index).expect("a block");
            assert_eq!(again, block, "class {class}");
            let layout = Layout::from_size_align(size, class_align(class)).unwrap();
            heap.dealloc(again.as_ptr(), layout);
            assert!(other.free_small_block(elsewhere));
            assert!(other.free_small_block(second));
        }
    }
    for past in [CLASS_COUNT as u8, 127, u8::MAX] {
        assert_eq!(heap.alloc_in_class(past), None::<NonNull<u8>>);
    }
    for heap in [&heap, &other] {
        heap.flush_thread_cache();
        heap.check_invariants();
        assert_eq!(heap.stats().small.objects_live, 0);
    }
}

#[test]
fn every_size_aligned_to_16_gets_its_class_and_this_heaps_magazine() {
    let heap = SlabHeap::new();
    let other = SlabHeap::new();
    // Every size of the table (up to 1 KiB) outside miri; under miri, the edges of a few
    // classes and of the table, and sizes past it (the general path).
    let sizes: Vec<usize> = if cfg!(miri) {
        vec![0, 1, 16, 17, 48, 1000, 1023, 1024, 1025, 5000]
    } else {
        (0..=1100).chain([4096, 16 * 1024 + 1, 100_000]).collect()
    };
    // Every class's magazine of both heaps holds blocks first, so that a size served
    // from another class's magazine would show.
    for heap in [&heap, &other] {
        for class in 0..CLASS_COUNT as u8 {
            let block = heap.alloc_in_class(class).expect("a block");
            // SAFETY: a block of this heap, freed once by its address.
            assert!(unsafe { heap.free_small_block(block) });
        }
    }
    for size in sizes {
        let class = class_for(size.max(1), 16).expect("a class");
        // The first call of each heap builds its classes from this path.
        let block = heap.alloc_aligned_16(size).expect("a block");
        let elsewhere = other.alloc_aligned_16(size).expect("a block");
        assert!(block.addr().get().is_multiple_of(16), "size {size}");
        // SAFETY: blocks of these heaps, live, written within their class's size, each
        // freed once by its address.
        unsafe {
            block.write_bytes(0x5A, size.min(64));
            assert_eq!(
                heap.small_block_size(block.as_ptr()),
                Some(CLASS_SIZES[class]),
                "size {size}"
            );
            assert!(heap.free_small_block(block));
            // The other heap's magazine of the class does not hold it; this heap's does.
            let second = other.alloc_aligned_16(size).expect("a block");
            assert_ne!(second, block, "size {size}");
            let again = heap.alloc_aligned_16(size).expect("a block");
            assert_eq!(again, block, "size {size}");
            assert!(heap.free_small_block(again));
            assert!(other.free_small_block(elsewhere));
            assert!(other.free_small_block(second));
        }
    }
    assert_eq!(heap.alloc_aligned_16(usize::MAX), None::<NonNull<u8>>);
    for heap in [&heap, &other] {
        heap.flush_thread_cache();
        heap.check_invariants();
        assert_eq!(heap.stats().small.objects_live, 0);
    }
}

#[test]
fn every_layout_of_the_table_is_served_from_and_freed_to_its_class_magazine() {
    let heap = SlabHeap::new();
    let other = SlabHeap::new();
    // Every size up to past the table at every alignment up to 32 outside miri (16 is the
    // table's last; 32 takes the general path); under miri, the edges of a few classes
    // and of the table, at the alignments where the two rows of the table differ.
    let (sizes, aligns): (Vec<usize>, Vec<usize>) = if cfg!(miri) {
        (vec![1, 8, 9, 16, 24, 1000, 1024, 1025], vec![1, 8, 16, 32])
    } else {
        (
            (1..=1100).chain([4096, 100_000]).collect(),
            vec![1, 2, 4, 8, 16, 32],
        )
    };
    // The magazines of every class these layouts reach, of both heaps, hold blocks
    // first, so that a block served from another class's magazine would show, and have
    // room (one block of each stays out until the end), so that a block freed to another
    // class's magazine would stay there, not miss it and take the class's own slow path
    // (every class outside miri: 50 of them cost it minutes).
    let classes: Vec<usize> = if cfg!(miri) {
        let mut classes: Vec<usize> = sizes
            .iter()
            .flat_map(|&size| {
                aligns
                    .iter()
                    .filter_map(move |&align| class_for(size, align))
            })
            .collect();
        classes.sort_unstable();
        classes.dedup();
        classes
    } else {
        (0..CLASS_COUNT).collect()
    };
    let mut kept_out = Vec::new();
    for heap in [&heap, &other] {
        for &class in &classes {
            let block = heap.alloc_in_class(class as u8).expect("a block");
            // SAFETY: a block of this heap, freed once by its address.
            assert!(unsafe { heap.free_small_block(block) });
            kept_out.push((heap, heap.alloc_in_class(class as u8).expect("a block")));
        }
    }
    for size in sizes {
        for &align in &aligns {
            let layout = Layout::from_size_align(size, align).unwrap();
            let class = class_for(size, align).expect("a class");
            // SAFETY: non-zero layouts; each block written within its size and freed
            // once with its layout.
            unsafe {
                let block = heap.alloc(layout);
                let elsewhere = other.alloc(layout);
                assert!(!block.is_null() && !elsewhere.is_null(), "{layout:?}");
                assert!(block.addr().is_multiple_of(align), "{layout:?}");
                block.write_bytes(0x6B, size.min(64));
                assert_eq!(
                    heap.small_block_size(block),
                    Some(CLASS_SIZES[class]),
                    "{layout:?}"
                );
                heap.dealloc(block, layout);
                // The free went into this heap's magazine of the class: the class's next
                // block is this one, and the other heap's magazine does not hold it.
                let second = other.alloc(layout);
                assert_ne!(second, block, "{layout:?}");
                let again = heap.alloc_in_class(class as u8).expect("a block");
                assert_eq!(again.as_ptr(), block, "{layout:?}");
                heap.dealloc(again.as_ptr(), layout);
                // And the layout's allocation takes it from there.
                assert_eq!(heap.alloc(layout), block, "{layout:?}");
                heap.dealloc(block, layout);
                other.dealloc(elsewhere, layout);
                other.dealloc(second, layout);
            }
        }
    }
    // `Allocator`, freeing with a larger layout of the same class (its contract allows
    // any size up to the one `allocate` reported): back to the class's magazine.
    for (size, align) in [(1, 1), (20, 16), (100, 8), (1000, 16)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        let block = Allocator::allocate(&heap, layout).expect("a block");
        let larger = Layout::from_size_align(block.len(), align).unwrap();
        let class = class_for(size, align).expect("a class") as u8;
        // SAFETY: a block of this heap, freed once with a layout of its class.
        unsafe { Allocator::deallocate(&heap, block.cast(), larger) };
        let again = heap.alloc_in_class(class).expect("a block");
        assert_eq!(again, block.cast(), "{layout:?} freed as {larger:?}");
        // SAFETY: as above.
        unsafe { heap.dealloc(again.as_ptr(), larger) };
    }
    for (heap, block) in kept_out {
        // SAFETY: a block of this heap, freed once by its address.
        assert!(unsafe { heap.free_small_block(block) });
    }
    for heap in [&heap, &other] {
        heap.flush_thread_cache();
        heap.check_invariants();
        assert_eq!(heap.stats().small.objects_live, 0);
    }
}
