//! The router as the `#[global_allocator]` of this test binary, driven by safe code that
//! misuses it: panics whose payload outlives the request, leases released inside another
//! lease's `run`, vectors carried from one request into the next, thread-locals made
//! inside an arena and freed at thread exit, acquire futures polled and dropped inside an
//! arena, guards forgotten on threads that exit. Whatever happens, memory of a live allocation is never handed out again, and
//! every arena comes back to the pool once its allocations are gone.

use std::alloc::System;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::task::{Context, Poll, Waker};

use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig, in_arena, outside_arena};

#[global_allocator]
static GLOBAL: ArenaRouter<System> = ArenaRouter::new(System);

fn pool(arenas: usize) -> &'static ArenaPool {
    ArenaPool::new(PoolConfig::new(arenas, 256 << 10).warm_bytes(4096))
        .unwrap()
        .into_static()
        .unwrap()
}

/// Leases a free arena, fills it with a pattern through the router and checks that
/// `live` still holds its own bytes.
fn fill_a_free_arena(pool: &'static ArenaPool, live: &[u8], byte: u8) {
    let lease = pool.try_acquire().expect("a free arena");
    let filler = lease.run(|| vec![0xEEu8; 64 << 10]);
    assert!(live.iter().all(|&b| b == byte), "live memory was reused");
    drop(filler);
}

/// Whether the panic hook last ran with routing to an arena on.
static HOOK_IN_ARENA: AtomicBool = AtomicBool::new(false);

/// What the panic hook keeps for good, as std's symbol cache does when its default hook
/// symbolises a backtrace: allocated by the hook itself, never freed.
static HOOK_CACHE: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// Installs, once, a panic hook that records whether it runs inside an arena, keeps an
/// allocation for good (as the default hook's symbol cache does), and then calls the
/// previous hook outside any arena (the default hook symbolises a backtrace when
/// `RUST_BACKTRACE` is set, which must not happen in a 256 KiB arena).
fn record_the_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            HOOK_IN_ARENA.store(in_arena(), Ordering::SeqCst);
            let kept = vec![0x5Au8; 64].into_boxed_slice();
            HOOK_CACHE
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(kept);
            outside_arena(|| previous(info));
        }));
    });
}

#[test]
fn a_panic_payload_made_in_an_arena_outlives_its_request() {
    record_the_panic_hook();
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    let payload = catch_unwind(AssertUnwindSafe(|| {
        lease.run(|| std::panic::panic_any(vec![0x5Au8; 1000]))
    }))
    .unwrap_err();
    assert!(!in_arena());
    drop(lease);
    let bytes = payload.downcast_ref::<Vec<u8>>().unwrap();
    assert_eq!(pool.arena_index_of(bytes.as_ptr().addr()), Some(0));
    assert_eq!(pool.stats().quarantined, 1);
    assert!(pool.try_acquire().is_none());
    assert!(bytes.iter().all(|&b| b == 0x5A));
    drop(payload);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn a_lease_released_inside_another_leases_run() {
    let pool = pool(2);
    let first = pool.try_acquire().unwrap();
    let second = pool.try_acquire().unwrap();
    let kept = first.run(|| vec![0x11u8; 512]);
    let inner = second.run(move || {
        let made = vec![0x22u8; 512];
        drop(first); // quarantined by `kept`, released while routed elsewhere
        assert!(in_arena());
        made
    });
    assert_eq!(pool.stats().quarantined, 1);
    drop(second);
    assert_eq!(pool.stats().quarantined, 2);
    assert!(pool.try_acquire().is_none(), "both arenas hold live memory");
    drop(inner);
    fill_a_free_arena(pool, &kept, 0x11);
    drop(kept);
    assert_eq!(pool.stats().free, 2);
}

#[test]
fn a_vector_carried_from_one_request_into_the_next_keeps_its_contents() {
    let pool = pool(2);
    let mut carried: Vec<u64> = Vec::new();
    for round in 0..20u64 {
        let lease = pool.acquire();
        lease.run(|| {
            // Grows in the new arena: moved out of the old one, freed there remotely.
            carried.extend((0..100).map(|n| round * 1000 + n));
            carried.shrink_to_fit();
        });
        drop(lease);
    }
    for (index, &value) in carried.iter().enumerate() {
        let round = index as u64 / 100;
        assert_eq!(value, round * 1000 + index as u64 % 100);
    }
    drop(carried);
    assert_eq!(pool.stats().free, 2);
}

thread_local! {
    static CACHE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn a_thread_local_filled_inside_an_arena_is_freed_at_thread_exit() {
    let pool = pool(1);
    std::thread::spawn(move || {
        let lease = pool.try_acquire().unwrap();
        lease.run(|| {
            CACHE.with(|cache| cache.borrow_mut().push(format!("made in {}", "the arena")));
        });
        drop(lease);
        assert_eq!(pool.stats().quarantined, 1);
        CACHE.with(|cache| assert_eq!(cache.borrow()[0], "made in the arena"));
    })
    .join()
    .unwrap();
    assert_eq!(pool.stats().free, 1, "the thread's exit freed the cache");
}

#[test]
fn acquire_futures_polled_and_dropped_inside_an_arena() {
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    assert!(pool.try_acquire().is_none());
    let mut context = Context::from_waker(Waker::noop());
    let mut boxed = lease.run(|| {
        let mut waiting = pool.acquire_async();
        assert!(Pin::new(&mut waiting).poll(&mut context).is_pending());
        drop(waiting);
        // A future boxed in the arena, still waiting when the lease is released.
        let mut boxed = Box::pin(pool.acquire_async());
        assert!(boxed.as_mut().poll(&mut context).is_pending());
        boxed
    });
    assert_eq!(pool.stats().waiting, 1);
    drop(lease);
    // Its box keeps the arena quarantined, so the future cannot be granted it.
    assert_eq!(pool.stats().quarantined, 1);
    assert!(boxed.as_mut().poll(&mut context).is_pending());
    // Dropping it leaves the queue, then frees the box: the arena comes back.
    drop(boxed);
    let stats = pool.stats();
    assert_eq!((stats.free, stats.waiting), (1, 0));
}

#[test]
fn a_forgotten_guard_on_a_thread_that_exits() {
    let pool = pool(2);
    let escaped = std::thread::spawn(move || {
        let guard = pool.try_acquire().unwrap().enter();
        let made = vec![0x33u8; 256];
        std::mem::forget(guard);
        made
    })
    .join()
    .unwrap();
    // The forgotten lease never comes back, and its memory is never reused.
    fill_a_free_arena(pool, &escaped, 0x33);
    assert_eq!(pool.stats().free, 1);
    drop(escaped);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn a_future_resolving_to_a_lease_inside_run() {
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    let mut context = Context::from_waker(Waker::noop());
    let mut waiting = Box::pin(pool.acquire_async());
    assert!(waiting.as_mut().poll(&mut context).is_pending());
    let escaped = lease.run(|| vec![7u8; 100]);
    drop(lease);
    assert!(
        waiting.as_mut().poll(&mut context).is_pending(),
        "quarantined"
    );
    let Poll::Ready(next) = std::thread::scope(|scope| {
        scope.spawn(move || drop(escaped)).join().unwrap();
        waiting.as_mut().poll(&mut context)
    }) else {
        panic!("the settled arena was not granted");
    };
    assert_eq!(next.index(), 0);
    drop(next);
    assert_eq!(pool.stats().free, 1);
}

#[test]
fn the_panic_hook_runs_outside_the_arena() {
    record_the_panic_hook();
    let pool = pool(1);
    let lease = pool.try_acquire().unwrap();
    let panicked = catch_unwind(AssertUnwindSafe(|| lease.run(|| panic!("a handler fails"))));
    assert!(panicked.is_err());
    assert!(
        !HOOK_IN_ARENA.load(Ordering::SeqCst),
        "the panic hook ran inside the arena"
    );
    drop(panicked);
    drop(lease);
    assert_eq!(
        pool.stats().free,
        1,
        "what the panic hook keeps for good quarantined the arena"
    );
}

#[test]
fn the_panic_hook_of_a_nested_route_allocates_outside_every_arena() {
    record_the_panic_hook();
    let pool = pool(2);
    let outer = pool.try_acquire().unwrap();
    let inner = pool.try_acquire().unwrap();
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        outer.run(|| inner.run(|| panic!("{} fails", String::from("a handler"))))
    }));
    let message = panicked.unwrap_err();
    assert_eq!(message.downcast_ref::<String>().unwrap(), "a handler fails");
    drop(message);
    drop((outer, inner));
    assert_eq!(pool.stats().free, 2, "an arena stayed quarantined");
}
