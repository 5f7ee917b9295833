//! Operation programs on `ObjectCache`: constructors run once per slot, objects come
//! back constructed, and drops happen only when slabs are reclaimed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pagekeep_slab::ObjectCache;
use proptest::prelude::*;

use crate::config;

/// Records its construction serial and its drop.
#[derive(Debug)]
struct Tracked {
    serial: u64,
    uses: u64,
    payload: [u64; 5],
    dropped: Arc<Mutex<HashSet<u64>>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(
            self.dropped.lock().unwrap().insert(self.serial),
            "object {} dropped twice",
            self.serial
        );
    }
}

#[derive(Clone, Debug)]
enum Op {
    Get,
    Put(usize),
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![6 => Just(Op::Get), 5 => any::<usize>().prop_map(Op::Put), 1 => Just(Op::Trim)]
}

fn run(ops: &[Op]) {
    let constructed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(Mutex::new(HashSet::new()));
    let cache = {
        let constructed = Arc::clone(&constructed);
        let dropped = Arc::clone(&dropped);
        ObjectCache::with_constructor(move || {
            let serial = constructed.fetch_add(1, Ordering::Relaxed);
            Tracked {
                serial,
                uses: 0,
                payload: [serial; 5],
                dropped: Arc::clone(&dropped),
            }
        })
        .unwrap()
    };
    let mut serial_at: HashMap<usize, u64> = HashMap::new();
    let mut live = Vec::new();
    for op in ops {
        match op {
            Op::Get => {
                let mut object = cache.get();
                assert_eq!(
                    object.payload, [object.serial; 5],
                    "handed out unconstructed"
                );
                assert!(
                    !dropped.lock().unwrap().contains(&object.serial),
                    "handed out a dropped object"
                );
                let address = pagekeep_slab::ObjectBox::as_ptr(&object).addr().get();
                if let Some(&previous) = serial_at.get(&address)
                    && previous != object.serial
                {
                    // The slot was reconstructed: only after its slab was reclaimed.
                    assert!(
                        dropped.lock().unwrap().contains(&previous),
                        "slot reconstructed without reclaim"
                    );
                }
                serial_at.insert(address, object.serial);
                object.uses += 1;
                live.push(object);
            }
            Op::Put(index) if !live.is_empty() => {
                let index = index % live.len();
                drop(live.swap_remove(index));
            }
            Op::Put(_) => {}
            Op::Trim => {
                let before = dropped.lock().unwrap().len();
                cache.trim();
                assert!(dropped.lock().unwrap().len() >= before);
            }
        }
        // Drops only ever happen on reclaim, never on `Put`.
        let made = constructed.load(Ordering::Relaxed) as usize;
        assert!(dropped.lock().unwrap().len() <= made);
    }
    // Every construction is a distinct slot life: constructions == distinct serials seen
    // or still cached, never more than slots ever carved.
    cache.check_invariants();
    drop(live);
    drop(cache);
    let made = constructed.load(Ordering::Relaxed) as usize;
    assert_eq!(
        dropped.lock().unwrap().len(),
        made,
        "reclaiming the cache drops every constructed object"
    );
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn constructed_objects_are_cached_and_dropped_on_reclaim(
        ops in prop::collection::vec(op(), 0..if cfg!(miri) { 24 } else { 300 }),
    ) {
        run(&ops);
    }
}

#[test]
fn constructor_runs_once_per_slot_across_reuse() {
    let constructed = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&constructed);
    let cache = ObjectCache::with_constructor(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        [0u8; 64]
    })
    .unwrap();
    for _ in 0..if cfg!(miri) { 100 } else { 1000 } {
        let mut object = cache.get();
        object[0] = object[0].wrapping_add(1);
    }
    // One slot is reused: the magazine refill constructed a magazine's worth at most.
    let made = constructed.load(Ordering::Relaxed);
    assert!(
        (1..=64).contains(&made),
        "constructed {made} times for one live object"
    );
    let object = cache.get();
    assert_ne!(
        object[0], 0,
        "a reused object keeps its state (it is not reconstructed)"
    );
}

#[test]
fn plain_cache_drops_values_on_put() {
    let dropped = Arc::new(Mutex::new(HashSet::new()));
    let cache = ObjectCache::new().unwrap();
    for serial in 0..if cfg!(miri) { 20 } else { 100 } {
        let value = Tracked {
            serial,
            uses: 0,
            payload: [0; 5],
            dropped: Arc::clone(&dropped),
        };
        let boxed = cache.insert(value);
        assert_eq!(boxed.serial, serial);
    }
    assert_eq!(
        dropped.lock().unwrap().len(),
        if cfg!(miri) { 20 } else { 100 }
    );
    assert!(!cache.is_constructed());
    assert_eq!(cache.stats().objects_live, 0);
}

#[test]
#[should_panic(expected = "needs a constructor")]
fn get_without_constructor_panics() {
    let cache = ObjectCache::<u64>::new().unwrap();
    let _ = cache.get();
}
