//! Zero and the largest value for every setting: each is refused with an error or
//! saturates to something that works; none overflows, panics or exhausts memory.

use core::ptr::NonNull;

use pagekeep_mmap::{FailingSource, HeapPages};
use pagekeep_slab::{CacheConfig, CacheError, ObjectCache, SlabCache};

/// Objects freed in a burst: several slabs of 64-byte objects (4096 to a slab).
///
/// Under miri, where the test takes minutes with magazines off (every operation takes
/// the cache lock), 200: part of one slab, as the 600 it had were, which is enough for a
/// slab to go empty and be kept or released by the bound; and more than the thread's two
/// magazines (64 objects each at first) on the object caches' frees, so one reaches the depot.
fn burst() -> usize {
    if cfg!(miri) { 200 } else { 40_000 }
}

/// Allocates a burst, frees it, and checks the cache.
fn exercise(cache: &SlabCache<&FailingSource<HeapPages>>) {
    let objects: Vec<NonNull<u8>> = (0..burst()).map(|_| cache.alloc()).collect();
    for object in objects {
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
    }
    cache.check_invariants();
    let stats = cache.stats();
    assert_eq!(stats.objects_live, 0, "{stats:?}");
    cache.trim();
    assert_eq!(cache.stats().slabs_empty, 0);
    cache.check_invariants();
}

fn config(edit: impl FnOnce(&mut CacheConfig)) -> CacheConfig {
    let mut config = CacheConfig::new(64, 8);
    edit(&mut config);
    config
}

#[test]
fn max_empty_slabs_zero_and_max() {
    let source = FailingSource::new(HeapPages);
    // Under miri, where each setting takes about 20 s with magazines off, the two ends.
    let settings: &[usize] = if cfg!(miri) {
        &[0, usize::MAX]
    } else {
        &[0, 1, usize::MAX / 8, usize::MAX - 1, usize::MAX]
    };
    for &max_empty_slabs in settings {
        let cache = SlabCache::with_config(
            config(|config| {
                config.max_empty_slabs = max_empty_slabs;
                config.magazines = false;
            }),
            &source,
        )
        .unwrap();
        exercise(&cache);
        // Without magazines every free reaches the slabs: the burst left its slabs empty,
        // all kept with no bound, and at most a few beyond the bound of 0 or 1.
        let objects: Vec<NonNull<u8>> = (0..burst()).map(|_| cache.alloc()).collect();
        let made = cache.stats().slabs_full + cache.stats().slabs_partial;
        for object in objects {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
        let empty = cache.stats().slabs_empty;
        if max_empty_slabs >= usize::MAX / 8 {
            assert_eq!(
                empty, made,
                "max_empty_slabs {max_empty_slabs}: none released"
            );
        } else {
            assert!(empty <= 8 * max_empty_slabs + 8, "{empty} empty slabs kept");
        }
        cache.check_invariants();
    }
    for max_empty_slabs in [0, usize::MAX] {
        let objects: ObjectCache<[u64; 8], _> =
            ObjectCache::with_source(&source, None, max_empty_slabs).unwrap();
        let held: Vec<_> = (0..burst())
            .map(|i| objects.insert([i as u64; 8]))
            .collect();
        drop(held);
        objects.check_invariants();
    }
}

#[test]
fn magazine_capacities_zero_and_max() {
    let pairs: &[(Option<u32>, Option<u32>)] = &[
        (Some(0), Some(0)),
        (Some(u32::MAX), Some(u32::MAX)),
        (Some(u32::MAX), Some(0)),
        (Some(0), Some(u32::MAX)),
        (Some(0), None),
        (None, Some(0)),
        (Some(u32::MAX), None),
        (None, Some(u32::MAX)),
    ];
    // Under miri, where each pair takes about 8 s, the four pairs of extremes (a default
    // on either side is tested outside miri).
    let pairs = if cfg!(miri) { &pairs[..4] } else { pairs };
    for &(initial, bound) in pairs {
        let source = FailingSource::new(HeapPages);
        // Objects of 4 KiB: a slab's worth is 63 of them (cheap under miri too). A
        // thread's first miss takes a page's worth, one of them; the loop of allocations
        // below grows its magazines to the cache's size, which must be clamped to a slab's
        // worth (an unclamped u32::MAX would carve until memory ran out).
        let cache = SlabCache::with_config(
            CacheConfig {
                magazine_capacity: initial,
                max_magazine_capacity: bound,
                ..CacheConfig::new(4096, 8)
            },
            &source,
        )
        .unwrap();
        // A magazine of u32::MAX objects would carve slabs until the source failed on
        // the first allocation: the third slab request fails, so at most two are made.
        source.fail_nth(3);
        let object = cache.alloc();
        let stats = cache.stats();
        assert!(
            stats.magazine_capacity >= 1
                && stats.magazine_capacity as usize <= stats.objects_per_slab,
            "{initial:?}/{bound:?}: {stats:?}"
        );
        assert_eq!(
            stats.slabs_created, 1,
            "{initial:?}/{bound:?}: a miss filled more than a slab"
        );
        source.recover();
        // SAFETY: allocated above, freed once.
        unsafe { cache.free(object) };
        // More than two slabs' worth (63 each): new slabs are carved, and with the
        // largest capacity the magazine runs empty and is refilled, and the frees fill
        // more than the thread's two magazines, so one goes to the depot. Under miri,
        // where the eight settings with 200 each took minutes, 130 still do all of that.
        let count = if cfg!(miri) { 130 } else { 200 };
        let objects: Vec<NonNull<u8>> = (0..count).map(|_| cache.alloc()).collect();
        for object in objects {
            // SAFETY: allocated above, freed once.
            unsafe { cache.free(object) };
        }
        cache.check_invariants();
        assert_eq!(cache.stats().objects_live, 0);
    }
}

#[test]
fn object_size_and_alignment_zero_and_max() {
    let source = FailingSource::new(HeapPages);
    let zero = SlabCache::with_config(CacheConfig::new(0, 8), &source).unwrap();
    assert!(zero.layout().size() >= 1);
    let object = zero.alloc();
    // SAFETY: allocated above, freed once.
    unsafe { zero.free(object) };
    for (size, align) in [
        (usize::MAX, 8),
        (usize::MAX - 7, 8),
        (isize::MAX as usize, 8),
        (64, 0),
        (64, usize::MAX),
        (64, 1 << (usize::BITS - 1)),
    ] {
        let error = SlabCache::with_config(CacheConfig::new(size, align), &source).unwrap_err();
        assert_eq!(
            error,
            CacheError::UnsupportedLayout,
            "size {size} align {align}"
        );
    }
}
