//! Multi-threaded stress: cross-thread frees, churn, threads exiting with objects, a
//! cache dropped while other threads still hold its magazines.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;

use pagekeep_slab::{ObjectCache, SlabCache, SlabHeap};

use crate::{check, fill};

/// A pointer that may cross threads (ownership moves with it).
struct Sent(NonNull<u8>, u64);
// SAFETY: the pointee is owned by whoever holds the `Sent`.
unsafe impl Send for Sent {}

fn scale(normal: usize) -> usize {
    if cfg!(miri) {
        (normal / 100).max(8)
    } else {
        normal
    }
}

#[test]
fn producer_consumer_cross_thread_frees() {
    let cache = SlabCache::new(64, 8).unwrap();
    // Under miri, where the 1000 of `scale` took over three minutes on a loaded
    // machine, 200: two batches cross to the consumer, whose frees fill its two
    // magazines of 64 and send the rest to the depot, and both threads exit with
    // magazines to give back.
    let count = if cfg!(miri) { 200 } else { 100_000 };
    let (sender, receiver) = mpsc::sync_channel::<Vec<Sent>>(16);
    // Handles are joined explicitly: only a native join waits for the thread's exit hook
    // (the end of a scope waits for the closures alone).
    thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let mut batch = Vec::new();
            for i in 0..count {
                let object = cache.alloc();
                // SAFETY: a fresh 64-byte object.
                unsafe { fill(object.as_ptr(), 64, i as u64) };
                batch.push(Sent(object, i as u64));
                if batch.len() == 100 {
                    sender.send(std::mem::take(&mut batch)).unwrap();
                }
            }
            sender.send(batch).unwrap();
            drop(sender);
        });
        let consumer = scope.spawn(|| {
            for batch in receiver {
                for Sent(object, seed) in batch {
                    // SAFETY: produced and filled by the other thread, freed once here.
                    unsafe {
                        check(object.as_ptr(), 64, seed);
                        cache.free(object);
                    }
                }
            }
        });
        producer.join().unwrap();
        consumer.join().unwrap();
    });
    // Both threads exited: their magazines went back to the depot.
    cache.check_invariants();
    assert_eq!(cache.stats().objects_live, 0, "{:?}", cache.stats());
}

#[test]
fn many_threads_churning_on_one_heap() {
    let heap = SlabHeap::new();
    let threads = if cfg!(miri) { 3 } else { 8 };
    let rounds = if cfg!(miri) { 64 } else { 20_000 };
    thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let heap = &heap;
            handles.push(scope.spawn(move || {
                let mut live: Vec<(NonNull<u8>, Layout, u64)> = Vec::new();
                let mut state = t as u64 + 1;
                for round in 0..rounds {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if live.len() < 64 && !state.is_multiple_of(3) {
                        let size = 1 + (state as usize >> 8) % 2000;
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        // SAFETY: non-zero size.
                        let block = NonNull::new(unsafe { heap.alloc(layout) }).unwrap();
                        // SAFETY: fresh block of `size` bytes.
                        unsafe { fill(block.as_ptr(), size.min(64), round as u64) };
                        live.push((block, layout, round as u64));
                    } else if !live.is_empty() {
                        let (block, layout, seed) = live.swap_remove(state as usize % live.len());
                        // SAFETY: our live block, freed once.
                        unsafe {
                            check(block.as_ptr(), layout.size().min(64), seed);
                            heap.dealloc(block.as_ptr(), layout);
                        }
                    }
                }
                for (block, layout, _) in live {
                    // SAFETY: live blocks, freed once.
                    unsafe { heap.dealloc(block.as_ptr(), layout) };
                }
            }));
        }
        for handle in handles {
            handle.join().unwrap();
        }
    });
    heap.check_invariants();
    assert_eq!(heap.stats().small.objects_live, 0);
}

#[test]
fn threads_exit_while_holding_objects() {
    let cache = Arc::new(SlabCache::new(200, 8).unwrap());
    let per_thread = scale(5_000);
    let mut handles = Vec::new();
    for t in 0..4u64 {
        let cache = Arc::clone(&cache);
        handles.push(thread::spawn(move || {
            // Churn (fills the magazines), then exit holding half of the objects.
            let objects: Vec<_> = (0..per_thread).map(|_| cache.alloc()).collect();
            let mut kept = Vec::new();
            for (i, object) in objects.into_iter().enumerate() {
                if i % 2 == 0 {
                    // SAFETY: allocated above, freed once.
                    unsafe { cache.free(object) };
                } else {
                    // SAFETY: 200-byte object.
                    unsafe { fill(object.as_ptr(), 200, t * 1_000_000 + i as u64) };
                    kept.push(Sent(object, t * 1_000_000 + i as u64));
                }
            }
            kept
        }));
    }
    let held: Vec<Sent> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    // The exited threads' magazines are back in the depot: only the held objects are live.
    assert_eq!(cache.stats().objects_live, held.len());
    for Sent(object, seed) in held {
        // SAFETY: allocated by an exited thread, filled, freed once here.
        unsafe {
            check(object.as_ptr(), 200, seed);
            cache.free(object);
        }
    }
    assert_eq!(cache.stats().objects_live, 0);
    cache.check_invariants();
}

const NEWEST_CACHE_CHILD: &str = "SLAB_ALLOC_NEWEST_CACHE_CHILD";

/// An exiting thread looks only at the slots of the cache ids given out so far: the one
/// given out last, the highest, is among them. In a process of its own, where the cache
/// made last has the highest id.
#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn an_exiting_thread_gives_back_the_magazines_of_the_cache_with_the_highest_id() {
    crate::child_process::run_ignored_test(
        NEWEST_CACHE_CHILD,
        "threads::exit_with_magazines_of_the_newest_cache",
    );
}

#[test]
#[ignore = "child process of an_exiting_thread_gives_back_the_magazines_of_the_cache_with_the_highest_id"]
fn exit_with_magazines_of_the_newest_cache() {
    if std::env::var_os(NEWEST_CACHE_CHILD).is_none() {
        return;
    }
    // Ids are given out from the lowest free one up: the last of these has the highest.
    let caches: Vec<_> = (0..3).map(|_| SlabCache::new(64, 8).unwrap()).collect();
    let newest = &caches[2];
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // The thread's magazines hold the freed objects.
                let objects: Vec<_> = (0..100).map(|_| newest.alloc()).collect();
                for object in objects {
                    // SAFETY: allocated above, freed once.
                    unsafe { newest.free(object) };
                }
            })
            .join()
            .unwrap();
    });
    // The thread's magazines went back when it exited: nothing is out of the cache.
    assert_eq!(newest.stats().objects_live, 0, "{:?}", newest.stats());
    newest.check_invariants();
}

#[test]
fn dropping_a_cache_takes_back_other_threads_magazines() {
    // Under miri (about 40 s a round on a loaded machine) 2: ids are given lowest free
    // first, so the second cache gets the id the first gave back and the worker's slot
    // for it is used again, the path where a stale object would show.
    let rounds = if cfg!(miri) { 2 } else { 20 };
    let (to_worker, from_main) = mpsc::channel::<Option<Arc<ObjectCache<[u64; 4]>>>>();
    let (to_main, from_worker) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        // Keeps running across caches: its slots must not leak objects from one to the next.
        while let Some(cache) = from_main.recv().unwrap() {
            let objects: Vec<_> = (0..100).map(|_| cache.get()).collect();
            for object in &objects {
                assert_eq!(**object, [7, 7, 7, 7], "an object of another cache");
            }
            drop(objects); // into this thread's magazines
            drop(cache);
            to_main.send(()).unwrap();
        }
    });
    for _ in 0..rounds {
        let cache = Arc::new(ObjectCache::with_constructor(|| [7; 4]).unwrap());
        to_worker.send(Some(Arc::clone(&cache))).unwrap();
        from_worker.recv().unwrap();
        let stats = cache.stats();
        // The worker's magazines still hold its objects (they count as live until the
        // magazines go back to the depot).
        assert!(stats.objects_live >= 100, "{stats:?}");
        drop(cache); // sweeps the worker's slot
        // A plain cache reusing the id sees nothing stale.
        let other = SlabCache::new(32, 8).unwrap();
        let object = other.alloc();
        // SAFETY: allocated above.
        unsafe { other.free(object) };
    }
    to_worker.send(None).unwrap();
    worker.join().unwrap();
}

#[test]
fn two_threads_hammer_one_object_cache() {
    let cache = ObjectCache::with_constructor(|| 0u64).unwrap();
    let barrier = Barrier::new(2);
    let rounds = scale(50_000);
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..rounds {
                    let mut a = cache.get();
                    let mut b = cache.get();
                    *a += 1;
                    *b += 1;
                }
            });
        }
    });
    cache.check_invariants();
}

/// `trim` takes the magazines of every thread that is not inside an operation, through
/// the handshake of `with_magazines` (a flag, an asymmetric fence, an in-use mark). Two
/// threads allocate, fill, check and free blocks of several classes, in bursts with
/// pauses, while the main thread trims without pause: a block handed out twice (a
/// magazine taken while its thread was popping from it) fails a pattern check, a lost one
/// shows in the invariants. Under miri, whose data-race detector sees the handshake's
/// fences as `SeqCst` fences, this checks the protocol itself.
#[test]
fn trim_races_threads_that_use_their_magazines() {
    let heap = SlabHeap::new();
    // Under miri, where 64 rounds took four minutes on a loaded machine, 8: each
    // worker runs bursts of 0 to 7 blocks, each of the four sizes twice, with the
    // trimmer running through them.
    let rounds = if cfg!(miri) { 8 } else { 20_000 };
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..2u64)
            .map(|worker| {
                let heap = &heap;
                scope.spawn(move || {
                    let mut blocks = Vec::with_capacity(16);
                    for round in 0..rounds {
                        let size = [24usize, 64, 200, 1000][round % 4];
                        let layout = Layout::from_size_align(size, 8).unwrap();
                        for i in 0..(round % 16) {
                            // SAFETY: non-zero layout.
                            let block = unsafe { heap.alloc(layout) };
                            assert!(!block.is_null());
                            let seed = (worker << 48) | ((round as u64) << 8) | i as u64;
                            // SAFETY: `size` writable bytes.
                            unsafe { fill(block, size, seed) };
                            blocks.push((block, seed));
                        }
                        for (block, seed) in blocks.drain(..) {
                            // SAFETY: filled above, freed once here.
                            unsafe {
                                check(block, size, seed);
                                heap.dealloc(block, layout);
                            }
                        }
                        if round % 64 == 0 {
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let trimmer = scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                heap.trim();
                thread::yield_now();
            }
        });
        for worker in workers {
            worker.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        trimmer.join().unwrap();
    });
    heap.check_invariants();
}

/// A thread that has freed every block it allocated reads no live object in the
/// statistics, even while another thread trims without pause (and so takes the
/// thread's magazines now and then, holding their objects for a moment before it gives
/// them back to the slabs): the statistics wait for such a trim to finish.
#[test]
fn statistics_after_freeing_everything_show_nothing_live_while_another_thread_trims() {
    let heap = SlabHeap::new();
    // Under miri, where 8 rounds took six minutes on a loaded machine (the trimmer runs
    // whole trims between the main thread's steps), 2: each round is a full window in
    // which a trim can hold the freed blocks' magazines while the statistics are read.
    let rounds = if cfg!(miri) { 2 } else { 3_000 };
    let stop = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|scope| {
        let trimmer = scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                heap.trim();
            }
        });
        let mut blocks = Vec::with_capacity(256);
        for round in 0..rounds {
            // Several classes, so that a trim that took the magazines gives them back
            // over several cache locks, which the statistics read one by one.
            for size in [24, 64, 200, 1000, 3000] {
                let layout = Layout::from_size_align(size, 8).unwrap();
                for _ in 0..48 {
                    // SAFETY: non-zero layout.
                    let block = unsafe { heap.alloc(layout) };
                    assert!(!block.is_null());
                    blocks.push((block, layout));
                }
            }
            for (block, layout) in blocks.drain(..) {
                // SAFETY: allocated above with this layout, freed once.
                unsafe { heap.dealloc(block, layout) };
            }
            // Out of the magazines for a moment: the trimmer may take them now.
            thread::yield_now();
            let live = heap.stats().small.objects_live;
            if live != 0 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("round {round}: {live} objects live after every block was freed");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        trimmer.join().unwrap();
    });
}
