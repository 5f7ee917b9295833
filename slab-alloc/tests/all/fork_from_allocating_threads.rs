//! `fork` while other threads allocate and free (Python's `multiprocessing`, pre-forking
//! servers): the child has only the forking thread, and the other threads' magazines live
//! in stacks that the child's glibc reuses for new threads or unmaps. The child must be
//! able to allocate, start threads (one with a 32 MiB stack, which makes glibc trim its
//! stack cache), let them exit, and drop caches, with no object handed out twice. The
//! parent's threads also free and reallocate large blocks, which the heap keeps for reuse
//! under a lock of its own: the child must find that lock free too.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use pagekeep_slab::{CacheConfig, SlabCache, SlabHeap};

/// Objects the child allocates in each check.
const OBJECTS: usize = 2_000;

/// A cache whose magazines hold two objects, so that frees reach the slow path (and its
/// depot exchange) every few operations: a fork then often stops a parent thread inside
/// `free_slow`.
fn small_magazine_cache() -> SlabCache {
    SlabCache::with_config(
        CacheConfig {
            magazine_capacity: Some(2),
            max_magazine_capacity: Some(2),
            ..CacheConfig::new(48, 8)
        },
        pagekeep_mmap::DefaultPages::default(),
    )
    .unwrap()
}

/// Allocates and frees on `heap` and `cache` until `stop`, keeping some objects live.
fn churn(heap: &SlabHeap, cache: &SlabCache, stop: &AtomicBool, seed: usize) {
    let mut kept: Vec<(NonNull<u8>, Layout)> = Vec::with_capacity(64);
    let mut objects = Vec::with_capacity(64);
    let mut round = seed;
    let mut large: Option<(NonNull<u8>, Layout)> = None;
    while !stop.load(Ordering::Relaxed) {
        round = round
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        if round.is_multiple_of(4) {
            // A large block (kept for reuse when freed), 132 KiB to 4 MiB.
            let layout =
                Layout::from_size_align((132 << 10) + (round >> 20) % (4 << 20), 8).unwrap();
            // SAFETY: non-zero size.
            let block = NonNull::new(unsafe { heap.alloc(layout) }).unwrap();
            // SAFETY: the block holds `layout.size()` bytes.
            unsafe { block.add(layout.size() - 1).write(1) };
            if let Some((old, old_layout)) = large.replace((block, layout)) {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { heap.dealloc(old.as_ptr(), old_layout) };
            }
        }
        let layout = Layout::from_size_align(8 + (round >> 40) % 3000, 8).unwrap();
        // SAFETY: non-zero size.
        let block = NonNull::new(unsafe { heap.alloc(layout) }).unwrap();
        kept.push((block, layout));
        objects.push(cache.alloc());
        if kept.len() == 64 {
            for (block, layout) in kept.drain(..).step_by(2) {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { heap.dealloc(block.as_ptr(), layout) };
            }
            for object in objects.drain(..) {
                // SAFETY: allocated above, freed once.
                unsafe { cache.free(object) };
            }
        }
    }
    for (block, layout) in kept.into_iter().chain(large) {
        // SAFETY: as above.
        unsafe { heap.dealloc(block.as_ptr(), layout) };
    }
    for object in objects {
        // SAFETY: as above.
        unsafe { cache.free(object) };
    }
}

/// Allocates `OBJECTS` objects from `cache` and `heap`, writes each one's index into it,
/// checks that every address is distinct and every index intact, and frees them.
fn distinct_objects(heap: &SlabHeap, cache: &SlabCache) {
    let layout = Layout::from_size_align(100, 8).unwrap();
    let mut seen = HashSet::new();
    let mut objects = Vec::with_capacity(OBJECTS);
    for index in 0..OBJECTS {
        let object = cache.alloc();
        // SAFETY: non-zero size.
        let block = NonNull::new(unsafe { heap.alloc(layout) }).unwrap();
        assert!(
            seen.insert(object.addr()),
            "object {object:p} handed out twice"
        );
        assert!(
            seen.insert(block.addr()),
            "block {block:p} handed out twice"
        );
        // SAFETY: 48 and 100 writable bytes, 8-aligned.
        unsafe {
            object.cast::<usize>().write(index);
            block.cast::<usize>().write(!index);
        }
        objects.push((object, block));
    }
    for (index, (object, block)) in objects.into_iter().enumerate() {
        // SAFETY: written above; each freed once.
        unsafe {
            assert_eq!(
                object.cast::<usize>().read(),
                index,
                "object {object:p} shared"
            );
            assert_eq!(
                block.cast::<usize>().read(),
                !index,
                "block {block:p} shared"
            );
            cache.free(object);
            heap.dealloc(block.as_ptr(), layout);
        }
    }
}

/// Allocates large blocks of several sizes (some from the blocks the parent's threads
/// freed), fills each with its index, checks them all, and frees them.
fn distinct_large_blocks(heap: &SlabHeap) {
    let blocks: Vec<(NonNull<u8>, Layout)> = (0..12)
        .map(|index| {
            let layout = Layout::from_size_align((200 << 10) * (index + 1), 8).unwrap();
            // SAFETY: non-zero size.
            let block = NonNull::new(unsafe { heap.alloc(layout) }).unwrap();
            // SAFETY: the block holds `layout.size()` bytes.
            unsafe { block.write_bytes(index as u8, layout.size()) };
            (block, layout)
        })
        .collect();
    for (index, &(block, layout)) in blocks.iter().enumerate() {
        // SAFETY: filled above, still live.
        let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), layout.size()) };
        assert!(
            bytes.iter().all(|&byte| byte == index as u8),
            "large block {block:p} shared"
        );
    }
    for (block, layout) in blocks {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { heap.dealloc(block.as_ptr(), layout) };
    }
}

/// The child's work; panics on the first failure.
fn child(heap: &'static SlabHeap, cache: &'static SlabCache) {
    distinct_objects(heap, cache);
    distinct_large_blocks(heap);
    let big_stack = thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || distinct_objects(heap, cache))
        .unwrap();
    big_stack.join().unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || distinct_objects(heap, cache)))
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    // A cache made and dropped in the child walks the registry's threads (the parent's
    // cache and heap are dropped by the caller, after the checks).
    let fresh = small_magazine_cache();
    let objects: Vec<_> = (0..100).map(|_| fresh.alloc()).collect();
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { fresh.free(object) };
    }
    drop(fresh);
    cache.check_invariants();
    heap.check_invariants();
    distinct_objects(heap, cache);
}

#[test]
#[cfg_attr(miri, ignore = "miri cannot fork")]
fn a_child_forked_from_allocating_threads_allocates_starts_threads_and_drops_caches() {
    // Shared by `&'static` between the parent's threads and the child; dropped by the
    // child (the parent's threads do not exist there) and by the parent once its threads
    // are joined.
    let heap_box = Box::into_raw(Box::new(SlabHeap::new()));
    let cache_box = Box::into_raw(Box::new(small_magazine_cache()));
    // SAFETY: valid until the `Box::from_raw` below, after the last use of these.
    let (heap, cache): (&'static SlabHeap, &'static SlabCache) =
        unsafe { (&*heap_box, &*cache_box) };
    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let churners: Vec<_> = (0..8)
        .map(|seed| thread::spawn(move || churn(heap, cache, stop, seed)))
        .collect();
    for round in 0..6 {
        thread::sleep(std::time::Duration::from_millis(2));
        // SAFETY: the child runs only the checks below and ends with `_exit`; the locks
        // it needs are the allocator's (fork handlers) and glibc's.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: ends a hung child after 60 s (SIGALRM).
            unsafe { libc::alarm(60) };
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(heap, cache)))
                .is_ok();
            if ok {
                // SAFETY: the parent's threads do not exist in the child, so nothing
                // else uses the heap and the cache: drop them (both walk the registry).
                unsafe {
                    drop(Box::from_raw(cache_box));
                    drop(Box::from_raw(heap_box));
                }
            }
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child {round} failed: status {status:#x} (signal {})",
            if libc::WIFSIGNALED(status) {
                libc::WTERMSIG(status)
            } else {
                0
            }
        );
    }
    stop.store(true, Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
    cache.check_invariants();
    heap.check_invariants();
    // SAFETY: every thread that used them has been joined; made above, dropped once.
    unsafe {
        drop(Box::from_raw(cache_box));
        drop(Box::from_raw(heap_box));
    }
}
