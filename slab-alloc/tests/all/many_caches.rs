//! More caches than the per-thread slots kept inline (127): every cache still gets
//! magazines (its slots live in overflow chunks), threads exiting and caches dropped
//! give back what those slots hold, and ids are reused.

use std::sync::mpsc;
use std::thread;

use pagekeep_slab::{CacheStats, ObjectCache, SlabCache};

/// More than the inline slots, so that some caches get overflow ids whatever other tests
/// running at the same time hold. (Under miri the crate keeps 8 inline slots and 64 ids,
/// and tests run one at a time: 16 caches fill the inline slots and reach a chunk.)
const MANY: usize = if cfg!(miri) { 16 } else { 200 };

/// Allocates `n` objects of `cache` and frees them, all in this thread.
fn round_trip(cache: &SlabCache, n: usize) {
    let objects: Vec<_> = (0..n).map(|_| cache.alloc()).collect();
    for (i, object) in objects.iter().enumerate() {
        // SAFETY: at least 8 writable bytes.
        unsafe { object.cast::<u64>().write(i as u64) };
    }
    for (i, object) in objects.into_iter().enumerate() {
        // SAFETY: written above; freed once.
        unsafe {
            assert_eq!(object.cast::<u64>().read(), i as u64);
            cache.free(object);
        }
    }
}

fn served_by_magazines(stats: &CacheStats) -> bool {
    stats.magazine_hits > stats.magazine_misses
}

#[test]
fn every_one_of_many_caches_has_magazines() {
    let caches: Vec<_> = (0..MANY)
        .map(|i| SlabCache::new(16 + 8 * (i % 8), 8).unwrap())
        .collect();
    for cache in &caches {
        round_trip(cache, 20);
        round_trip(cache, 20);
    }
    for (i, cache) in caches.iter().enumerate() {
        let stats = cache.stats();
        assert!(served_by_magazines(&stats), "cache {i}: {stats:?}");
        assert_eq!(stats.objects_live, 0, "cache {i}: {stats:?}");
        cache.check_invariants();
    }
}

#[test]
fn a_thread_exiting_gives_back_the_objects_of_its_overflow_slots() {
    let caches: std::sync::Arc<Vec<_>> =
        std::sync::Arc::new((0..MANY).map(|_| SlabCache::new(48, 16).unwrap()).collect());
    let shared = std::sync::Arc::clone(&caches);
    // `JoinHandle::join` (not a scope) waits for the thread's exit hook to have run.
    thread::spawn(move || {
        for cache in shared.iter() {
            // The objects stay in this thread's magazines when it exits.
            round_trip(cache, 10);
        }
    })
    .join()
    .unwrap();
    for (i, cache) in caches.iter().enumerate() {
        let stats = cache.stats();
        // The thread's magazines (holding at least the 10 objects it freed) went back to
        // the depot when it exited.
        assert_eq!(stats.objects_live, 0, "cache {i}: {stats:?}");
        assert!(stats.objects_in_depot >= 10, "cache {i}: {stats:?}");
        cache.check_invariants();
    }
}

#[test]
fn dropping_an_overflow_cache_takes_back_other_threads_magazines() {
    // Hold the inline ids (and then some), so the caches below get overflow ids.
    let fillers: Vec<_> = (0..MANY).map(|_| SlabCache::new(32, 8).unwrap()).collect();
    let rounds = if cfg!(miri) { 2 } else { 20 };
    let (to_worker, from_main) = mpsc::channel::<Option<std::sync::Arc<ObjectCache<[u64; 4]>>>>();
    let (to_main, from_worker) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        while let Some(cache) = from_main.recv().unwrap() {
            let objects: Vec<_> = (0..50).map(|_| cache.get()).collect();
            let expected = objects[0][0];
            for object in &objects {
                assert_eq!(**object, [expected; 4], "an object of another cache");
            }
            drop(objects); // into this thread's (overflow) slot
            drop(cache);
            to_main.send(()).unwrap();
        }
    });
    for round in 0..rounds {
        let value = round as u64;
        let cache = std::sync::Arc::new(ObjectCache::with_constructor(move || [value; 4]).unwrap());
        to_worker.send(Some(std::sync::Arc::clone(&cache))).unwrap();
        from_worker.recv().unwrap();
        assert!(cache.stats().objects_live >= 50);
        drop(cache); // sweeps the worker's slot; the next cache may reuse the id
    }
    to_worker.send(None).unwrap();
    worker.join().unwrap();
    for filler in &fillers {
        round_trip(filler, 4);
        filler.check_invariants();
    }
}

#[test]
fn ids_are_reused_beyond_the_number_of_ids() {
    // More caches over time than there are ids (16 383; 63 under miri, where 68 are five
    // past them: those would get no id if ids were not given back), each with magazines.
    let count = if cfg!(miri) { 68 } else { 20_000 };
    for i in 0..count {
        let cache = SlabCache::new(24, 8).unwrap();
        round_trip(&cache, 4);
        let stats = cache.stats();
        assert!(served_by_magazines(&stats), "cache {i}: {stats:?}");
    }
}
