//! `SlabHeap::free_small_block` and `small_block_size`: a block of a size class is found
//! and freed by its address alone (as the C ABI's `free` does); anything else, a large
//! block, a block of another heap or of a slab cache, is left alone and reported as
//! not the heap's.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use pagekeep_slab::size_class::{CLASS_COUNT, CLASS_SIZES, MAX_SMALL, class_for};
use pagekeep_slab::{SlabCache, SlabHeap};

#[test]
fn every_class_is_found_and_freed_by_address_and_its_blocks_come_back() {
    let heap = SlabHeap::new();
    assert_eq!(CLASS_SIZES.len(), CLASS_COUNT);
    for size in CLASS_SIZES {
        for request in [size, size.saturating_sub(7).max(1)] {
            let layout = Layout::from_size_align(request, 8).unwrap();
            let expected = CLASS_SIZES[class_for(request, 8).unwrap()];
            // SAFETY: a non-zero size; the block is freed once, by its address.
            unsafe {
                let block = heap.alloc(layout);
                assert!(!block.is_null());
                block.write_bytes(0xA5, request);
                assert_eq!(
                    heap.small_block_size(block),
                    Some(expected),
                    "{request} bytes"
                );
                assert!(heap.free_small_block(NonNull::new(block).unwrap()));
                // The freed block is the next one of its class (the thread's magazine).
                let again = heap.alloc(layout);
                assert_eq!(again, block, "{request} bytes");
                heap.dealloc(again, layout);
            }
        }
    }
    heap.flush_thread_cache();
    heap.check_invariants();
    assert_eq!(heap.stats().small.objects_live, 0);
}

#[test]
fn large_blocks_and_blocks_of_other_heaps_and_caches_are_not_taken() {
    let heap = SlabHeap::new();
    let other = SlabHeap::new();
    let cache = SlabCache::new(48, 8).unwrap();
    let small = Layout::from_size_align(64, 16).unwrap();
    let large = Layout::from_size_align(MAX_SMALL + 1, 16).unwrap();
    // SAFETY: every block is live while asked about and freed once, with its layout.
    unsafe {
        // Before this heap has built its classes, and after.
        let foreign = other.alloc(small);
        assert_eq!(heap.small_block_size(foreign), None);
        assert!(!heap.free_small_block(NonNull::new(foreign).unwrap()));
        let own = heap.alloc(small);
        assert_eq!(heap.small_block_size(foreign), None);
        assert!(!heap.free_small_block(NonNull::new(foreign).unwrap()));
        assert_eq!(other.small_block_size(foreign), Some(64));
        other.dealloc(foreign, small);

        let object = cache.alloc();
        assert_eq!(heap.small_block_size(object.as_ptr()), None);
        assert!(!heap.free_small_block(object));
        cache.free(object);

        let big = heap.alloc(large);
        assert!(!big.is_null());
        assert_eq!(heap.small_block_size(big), None);
        assert!(!heap.free_small_block(NonNull::new(big).unwrap()));
        heap.dealloc(big, large);

        let on_stack = 0u64;
        assert_eq!(heap.small_block_size((&raw const on_stack).cast()), None);
        assert!(heap.free_small_block(NonNull::new(own).unwrap()));
    }
    heap.flush_thread_cache();
    heap.check_invariants();
    assert_eq!(heap.stats().small.objects_live, 0);
    assert_eq!(other.stats().small.objects_live, 0);
}

/// `locate_small_block` and `free_located` (checked builds): the C ABI's hardened `free`
/// locates a block by the address it handed out (16 bytes into the block, after its
/// prefix), checks its own prefix, and frees the block from its start.
#[cfg(any(debug_assertions, feature = "hardened"))]
mod located {
    use super::*;

    #[test]
    fn every_class_is_located_from_inside_a_block_and_freed_from_its_start() {
        let heap = SlabHeap::new();
        for (class, &size) in CLASS_SIZES.iter().enumerate() {
            let layout = Layout::from_size_align(size, 16).unwrap();
            if class_for(size, 16) != Some(class) {
                continue;
            }
            // SAFETY: a non-zero size; the block is freed once, from its start.
            unsafe {
                let block = heap.alloc(layout);
                assert!(!block.is_null());
                block.write_bytes(0x5A, size);
                let inside = block.wrapping_add(size.min(16));
                let located = heap.locate_small_block(inside).expect("a block of a class");
                assert_eq!(located.class_size(), size);
                let again = heap.locate_small_block(block).unwrap();
                assert_eq!(
                    located.offset_in_slab() - again.offset_in_slab(),
                    size.min(16)
                );
                heap.free_located(located, block.addr());
                // The freed block is the next one of its class (the thread's magazine).
                let next = heap.alloc(layout);
                assert_eq!(next, block, "{size} bytes");
                heap.dealloc(next, layout);
            }
        }
        heap.flush_thread_cache();
        heap.check_invariants();
        assert_eq!(heap.stats().small.objects_live, 0);
    }

    #[test]
    fn large_blocks_and_blocks_of_other_heaps_caches_and_the_stack_are_not_located() {
        let heap = SlabHeap::new();
        let other = SlabHeap::new();
        let cache = SlabCache::new(48, 8).unwrap();
        let small = Layout::from_size_align(64, 16).unwrap();
        let large = Layout::from_size_align(MAX_SMALL + 1, 16).unwrap();
        // SAFETY: every block is live while located and freed once, with its layout.
        unsafe {
            let foreign = other.alloc(small);
            // Before this heap built its classes, and after.
            assert!(heap.locate_small_block(foreign).is_none());
            let own = heap.alloc(small);
            assert!(heap.locate_small_block(foreign).is_none());
            assert!(other.locate_small_block(foreign).is_some());
            other.dealloc(foreign, small);

            let object = cache.alloc();
            assert!(heap.locate_small_block(object.as_ptr()).is_none());
            cache.free(object);

            let big = heap.alloc(large);
            assert!(heap.locate_small_block(big).is_none());
            heap.dealloc(big, large);

            let on_stack = 0u64;
            assert!(
                heap.locate_small_block((&raw const on_stack).cast())
                    .is_none()
            );
            assert!(heap.locate_small_block(core::ptr::null()).is_none());
            assert!(
                heap.locate_small_block(core::ptr::without_provenance(usize::MAX))
                    .is_none()
            );
            heap.dealloc(own, small);
        }
        heap.flush_thread_cache();
        heap.check_invariants();
        assert_eq!(heap.stats().small.objects_live, 0);
    }
}

/// More blocks freed by address than the thread's magazines hold: the frees past a full
/// loaded magazine take the class's slow path (previous magazine, depot, slabs), and
/// every block is accounted for.
#[test]
fn frees_by_address_past_full_magazines_reach_the_depot_and_the_slabs() {
    let heap = SlabHeap::new();
    let layout = Layout::from_size_align(64, 16).unwrap();
    let count = if cfg!(miri) { 300 } else { 5000 };
    // SAFETY: a non-zero size; every block is freed once, by its address.
    unsafe {
        let blocks: Vec<*mut u8> = (0..count).map(|_| heap.alloc(layout)).collect();
        assert!(blocks.iter().all(|block| !block.is_null()));
        assert_eq!(heap.stats().small.objects_live, count);
        for &block in &blocks {
            assert!(heap.free_small_block(NonNull::new(block).unwrap()));
        }
    }
    heap.check_invariants();
    heap.flush_thread_cache();
    heap.check_invariants();
    assert_eq!(heap.stats().small.objects_live, 0);
}

/// A cache whose core a page source placed at a low address (here 64 KiB, inside the
/// span that a heap's classes would take from address 0): a free by address to a heap
/// that has not built its classes yet must not take the cache's slab for one of them.
/// (An unbuilt heap once compared owners with a null classes pointer, so every owner
/// below that span passed.)
#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn a_cache_at_a_low_address_is_not_taken_for_an_unbuilt_heaps_class() {
    use pagekeep_slab::async_heap::RegionPages;
    use pagekeep_slab::{CacheConfig, SlabCache};

    const LOW: usize = 0x1_0000;
    const BYTES: usize = 2 << 20;
    // SAFETY: a fresh anonymous mapping at a fixed address that must be free
    // (`MAP_FIXED_NOREPLACE`: nothing else is replaced).
    let mapped = unsafe {
        libc::mmap(
            core::ptr::without_provenance_mut(LOW),
            BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED || mapped.addr() != LOW {
        // The address range is taken (or refused) in this process: nothing to test.
        return;
    }
    // SAFETY: the mapping made above, unused by anything else; unmapped at the end
    // after every user of it is gone.
    let buffer: &'static mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(mapped.cast::<u8>(), BYTES) };
    let pages = RegionPages::from_static(buffer);
    {
        let cache = SlabCache::with_config(CacheConfig::new(64, 16), pages.clone()).unwrap();
        let heap = SlabHeap::new();
        let object = cache.alloc();
        assert!(object.addr().get() < LOW + BYTES);
        // SAFETY: a live object of the cache, in no slab of the heap's: it must be left
        // alone (and is freed to its cache below).
        unsafe {
            assert!(!heap.free_small_block(object));
            cache.free(object);
        }
        cache.flush_thread_cache();
    }
    drop(pages);
    // SAFETY: the mapping made above; the cache and every clone of the source are gone.
    unsafe { libc::munmap(mapped, BYTES) };
}
