//! Issue 21, the last defect: a starved request of an async heap (its bytes granted,
//! its block refused by a full region) used to retry only after a free of the heap.
//! Region space also comes back when a thread exits (its magazines go back to the
//! classes, whence the next trim releases the emptied slabs) and when another request's
//! trim releases emptied slabs; neither woke the starved request, which then waited
//! for good with the space there. Each case runs in a child process with a deadline, so
//! that the old code's hang is reported as a failure.

use core::future::Future;
use core::pin::pin;
use core::sync::atomic::Ordering;
use core::task::Context;
use std::collections::BTreeMap;
use std::time::Duration;

use pagekeep_mmap::Region;
use pagekeep_slab::SLAB_BYTES;
use pagekeep_slab::async_heap::{AsyncHeap, HeapBox, RegionPages};

use crate::async_support::{block_on_for, counting_waker};

const CHILD: &str = "SLAB_ALLOC_SPACE_RETURNS_CHILD";

/// Runs the ignored test `name` of this file in a child process; panics with its output
/// unless it passed.
fn run_child(name: &str) {
    crate::child_process::run_ignored_test(
        CHILD,
        &format!("async_heap_space_returns_without_a_free::{name}"),
    );
}

/// A heap over a 4 MiB region with a capacity far beyond it: the region, not the
/// capacity, runs out.
fn heap_over_4_mib() -> AsyncHeap<RegionPages> {
    let pages =
        RegionPages::from_region(Region::reserve_committed(4 << 20, SLAB_BYTES).unwrap()).unwrap();
    AsyncHeap::with_source(pages, 64 << 20)
}

/// Fills the region with 64-byte blocks; returns them grouped by slab.
fn fill(heap: &AsyncHeap<RegionPages>) -> BTreeMap<usize, Vec<HeapBox<'_, [u8; 64], RegionPages>>> {
    let mut by_slab: BTreeMap<usize, Vec<_>> = BTreeMap::new();
    while let Ok(block) = heap.try_alloc([5u8; 64]) {
        by_slab
            .entry(block.as_ptr().addr() / SLAB_BYTES)
            .or_default()
            .push(block);
    }
    assert!(
        heap.available() > heap.capacity() / 2,
        "the region ran out, not the capacity"
    );
    by_slab
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn a_thread_exit_wakes_a_starved_request() {
    run_child("child_thread_exit");
}

#[test]
#[ignore = "child process of a_thread_exit_wakes_a_starved_request"]
fn child_thread_exit() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let heap = heap_over_4_mib();
    let heap = &heap;
    let (freed, starved) = (
        std::sync::mpsc::channel::<()>(),
        std::sync::mpsc::channel::<()>(),
    );
    let (freed_tx, freed_rx) = freed;
    let (starved_tx, starved_rx) = starved;
    let (waker, wakes) = counting_waker();
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            // Every block freed before any shortage: into this thread's magazines (the
            // last ones) and the depot. The last block of each slab freed is one of
            // the thread's last frees, so no slab empties.
            let by_slab = fill(heap);
            let (mut firsts, mut rests) = (Vec::new(), Vec::new());
            for (_, mut blocks) in by_slab {
                firsts.push(blocks.pop().unwrap());
                rests.push(blocks);
            }
            drop(rests);
            drop(firsts);
            freed_tx.send(()).unwrap();
            starved_rx.recv().unwrap();
            // Exits: its magazines go back to the classes.
        });
        freed_rx.recv().unwrap();
        let mut request = pin!(heap.alloc([1u8; 2048]));
        assert!(
            request
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending(),
            "the 2 KiB request is starved while the other thread holds the magazines"
        );
        starved_tx.send(()).unwrap();
        thread.join().unwrap();
        // The old code never woke the request: the exit was no source event.
        let block = block_on_for(request.as_mut(), Duration::from_secs(10))
            .expect("the thread's exit gave the region back, but the request was never served");
        assert!(wakes.0.load(Ordering::SeqCst) >= 1, "woken by the exit");
        assert!(heap.source().contains(block.as_ptr().cast()));
        assert_eq!(*block, [1u8; 2048]);
    });
    assert_eq!((heap.available(), heap.waiters()), (heap.capacity(), 0));
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn a_trim_that_releases_slabs_wakes_the_starved_requests() {
    run_child("child_trim_releases");
}

#[test]
#[ignore = "child process of a_trim_that_releases_slabs_wakes_the_starved_requests"]
fn child_trim_releases() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let heap = heap_over_4_mib();
    let heap = &heap;
    let mut by_slab = fill(heap);
    // The blocks of the lowest slab go to another thread, which frees them before any
    // shortage: some stay in its magazines, so the slab is not empty.
    let (_, lowest) = by_slab.pop_first().unwrap();
    let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
    let (starved_tx, starved_rx) = std::sync::mpsc::channel::<()>();
    let (served_tx, served_rx) = std::sync::mpsc::channel::<()>();
    let (free_tx, free_rx) = std::sync::mpsc::channel::<()>();
    let (waker, wakes) = counting_waker();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            drop(lowest);
            freed_tx.send(()).unwrap();
            starved_rx.recv().unwrap();
            // This request's trim takes this thread's magazines back and releases the
            // emptied slab, from which it is served: a return of region space, which
            // must wake the older starved request.
            let block = block_on_for(heap.alloc([2u8; 2048]), Duration::from_secs(10))
                .expect("the newer request was served by its own trim");
            served_tx.send(()).unwrap();
            // Err: the main thread failed.
            let _ = free_rx.recv();
            drop(block);
        });
        // Dropped if this thread panics, so that the other one ends too.
        let free_tx = free_tx;
        freed_rx.recv().unwrap();
        let mut request = pin!(heap.alloc([1u8; 2048]));
        assert!(
            request
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending(),
            "starved: the emptied slab's last blocks sit in the other thread's magazines"
        );
        starved_tx.send(()).unwrap();
        served_rx.recv().unwrap();
        // The old code: 0 wakes (the trim's release was no source event).
        assert!(
            wakes.0.load(Ordering::SeqCst) >= 1,
            "the newer request's trim released a slab, but the starved request was not woken"
        );
        free_tx.send(()).unwrap();
        let block = block_on_for(request.as_mut(), Duration::from_secs(10))
            .expect("the starved request is served once the newer block is freed");
        assert_eq!(*block, [1u8; 2048]);
    });
    drop(by_slab);
    assert_eq!((heap.available(), heap.waiters()), (heap.capacity(), 0));
}

/// A waker that makes and drops an object cache when woken: both take the slab
/// registry's lock, so such a waker must never run under it.
struct CacheMakingWaker {
    wakes: core::sync::atomic::AtomicUsize,
}

impl std::task::Wake for CacheMakingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        let cache = pagekeep_slab::ObjectCache::<u64>::new().unwrap();
        drop(cache.insert(7));
        drop(cache);
        self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn a_waker_woken_by_a_thread_exit_runs_outside_the_registry_lock() {
    // The old code woke the starved request under the registry's spin lock, inside the
    // exiting thread's destructor: this waker then spun for ever on that lock. The child
    // is killed after a minute (`run_child`), and that counts as the failure.
    run_child("child_exit_waker_takes_the_registry");
}

#[test]
#[ignore = "child process of a_waker_woken_by_a_thread_exit_runs_outside_the_registry_lock"]
fn child_exit_waker_takes_the_registry() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let heap = heap_over_4_mib();
    let heap = &heap;
    let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
    let (starved_tx, starved_rx) = std::sync::mpsc::channel::<()>();
    let waker = std::sync::Arc::new(CacheMakingWaker {
        wakes: core::sync::atomic::AtomicUsize::new(0),
    });
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            let by_slab = fill(heap);
            let (mut firsts, mut rests) = (Vec::new(), Vec::new());
            for (_, mut blocks) in by_slab {
                firsts.push(blocks.pop().unwrap());
                rests.push(blocks);
            }
            drop(rests);
            drop(firsts);
            freed_tx.send(()).unwrap();
            starved_rx.recv().unwrap();
            // Exits: its magazines go back, and the starved request is woken.
        });
        freed_rx.recv().unwrap();
        let mut request = pin!(heap.alloc([1u8; 2048]));
        let task_waker = core::task::Waker::from(waker.clone());
        assert!(
            request
                .as_mut()
                .poll(&mut Context::from_waker(&task_waker))
                .is_pending(),
            "the 2 KiB request is starved while the other thread holds the magazines"
        );
        starved_tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(waker.wakes.load(Ordering::SeqCst) >= 1, "woken by the exit");
        let block = block_on_for(request.as_mut(), Duration::from_secs(10))
            .expect("the thread's exit gave the region back, but the request was never served");
        assert_eq!(*block, [1u8; 2048]);
    });
}
