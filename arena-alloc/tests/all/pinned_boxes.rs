//! Pinned boxes: dropped in place, never moved, and only from an arena that is never
//! reset, rewound or dropped (`&'static`).

use core::future::Future;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use pagekeep_arena::{Arena, ArenaBox, ArenaConfig};

/// A leaked arena, handed back for freeing once the test is done with it.
struct Leaked(*mut Arena);

impl Leaked {
    fn new(config: ArenaConfig) -> Self {
        Leaked(Box::into_raw(Box::new(Arena::with_config(config))))
    }

    fn arena(&self) -> &'static Arena {
        // SAFETY: the arena lives until `free`, which the tests call only after every
        // pinned value was dropped and every reference to the arena is dead.
        unsafe { &*self.0 }
    }

    /// # Safety
    /// - No reference from `arena()` is used afterwards, and every pinned value from the
    ///   arena was dropped.
    unsafe fn free(self) {
        // SAFETY: from `Box::into_raw`, freed once; the caller's promise.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// A value that records its address when polled and checks it when dropped: moving a
/// pinned value would show.
struct AddressCheck {
    seen: Cell<usize>,
    /// A static of the test's own: boxed values must be `'static`.
    drops: &'static AtomicUsize,
    _pinned: PhantomPinned,
}

impl AddressCheck {
    fn note(self: Pin<&Self>) {
        let here = core::ptr::from_ref(&*self).addr();
        if self.seen.get() == 0 {
            self.seen.set(here);
        }
        assert_eq!(self.seen.get(), here, "a pinned value moved");
    }
}

impl Drop for AddressCheck {
    fn drop(&mut self) {
        let here = core::ptr::from_ref(self).addr();
        assert!(
            self.seen.get() == 0 || self.seen.get() == here,
            "moved before drop"
        );
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_pinned_value_is_dropped_in_place_once() {
    let leaked = Leaked::new(ArenaConfig::new());
    let arena = leaked.arena();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let pinned = arena.alloc_box_pinned(AddressCheck {
        seen: Cell::new(0),
        drops: &DROPS,
        _pinned: PhantomPinned,
    });
    pinned.as_ref().note();
    let moved_box = pinned; // moving the box does not move the value
    moved_box.as_ref().note();
    assert_eq!(DROPS.load(Ordering::Relaxed), 0);
    drop(moved_box);
    assert_eq!(DROPS.load(Ordering::Relaxed), 1);
    arena.check_invariants();
    // SAFETY: the pinned value was dropped; `arena` is not used again.
    unsafe { leaked.free() };
}

#[test]
fn a_pinned_future_polls_to_completion() {
    let leaked = Leaked::new(ArenaConfig::new());
    let arena = leaked.arena();
    let mut future = arena.alloc_box_pinned(async {
        let local = [1u64, 2, 3];
        let borrowed = &local; // a self-referential future
        core::future::ready(()).await;
        borrowed.iter().sum::<u64>()
    });
    let mut context = Context::from_waker(Waker::noop());
    assert_eq!(future.as_mut().poll(&mut context), Poll::Ready(6));
    drop(future);
    // SAFETY: the pinned value was dropped; `arena` is not used again.
    unsafe { leaked.free() };
}

#[test]
fn into_pin_and_from_pin_a_static_box() {
    let leaked = Leaked::new(ArenaConfig::new());
    let arena = leaked.arena();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let boxed: ArenaBox<'static, _> = arena.alloc_box(AddressCheck {
        seen: Cell::new(0),
        drops: &DROPS,
        _pinned: PhantomPinned,
    });
    let pinned: Pin<ArenaBox<'static, _>> = boxed.into();
    pinned.as_ref().note();
    drop(pinned);
    let other = ArenaBox::into_pin(arena.alloc_box(5u8));
    assert_eq!(*other, 5);
    drop(other);
    assert_eq!(DROPS.load(Ordering::Relaxed), 1);
    // SAFETY: every pinned value was dropped; `arena` is not used again.
    unsafe { leaked.free() };
}

#[test]
fn try_form_reports_the_limit_and_drops_the_value() {
    let leaked = Leaked::new(ArenaConfig::new().limit_bytes(8));
    let arena = leaked.arena();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let value = AddressCheck {
        seen: Cell::new(0),
        drops: &DROPS,
        _pinned: PhantomPinned,
    };
    assert!(arena.try_alloc_box_pinned(value).is_err());
    assert_eq!(DROPS.load(Ordering::Relaxed), 1, "the value was dropped");
    let small = arena.try_alloc_box_pinned(7u64).unwrap();
    assert_eq!(*small, 7);
    drop(small);
    // SAFETY: every pinned value was dropped; `arena` is not used again.
    unsafe { leaked.free() };
}

#[test]
fn a_forgotten_pinned_box_keeps_its_memory_for_good() {
    // Forgetting is safe: the value is never dropped, and its memory is never reused,
    // because a `&'static Arena` is never reset, rewound or dropped.
    let leaked = Leaked::new(ArenaConfig::new());
    let arena = leaked.arena();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let pinned = arena.alloc_box_pinned(AddressCheck {
        seen: Cell::new(0),
        drops: &DROPS,
        _pinned: PhantomPinned,
    });
    pinned.as_ref().note();
    let address = pinned.seen.get();
    core::mem::forget(pinned);
    for i in 0..1000u64 {
        let fresh = core::ptr::from_ref(arena.alloc(i)).addr();
        assert!(
            fresh + 8 <= address || fresh >= address + size_of::<AddressCheck>(),
            "memory of a forgotten pinned value was handed out again"
        );
    }
    assert_eq!(DROPS.load(Ordering::Relaxed), 0);
    // The arena is deliberately not freed: it holds a pinned value that was never
    // dropped. Miri's leak check is told so.
    #[cfg(miri)]
    {
        unsafe extern "Rust" {
            fn miri_static_root(ptr: *const u8);
        }
        // SAFETY: a miri intrinsic that marks the allocation as reachable from a static.
        unsafe { miri_static_root(leaked.0.cast()) };
    }
}

// `pin_scope`: pinned boxes from an arena that is not `'static`.

#[test]
fn a_pin_scope_whose_boxes_are_dropped_keeps_the_arena() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let mut arena = Arena::new();
    arena.alloc(1u64);
    let mark = arena.checkpoint();
    let stats = arena.stats();
    let borrowed = String::from("outer");
    let len = arena.pin_scope(|scope| {
        let first = scope.alloc_box_pinned(AddressCheck {
            seen: Cell::new(0),
            drops: &DROPS,
            _pinned: PhantomPinned,
        });
        first.as_ref().note();
        let second = scope.try_alloc_box_pinned(borrowed.as_str()).unwrap();
        scope.arena().alloc_str("ordinary");
        second.len()
    });
    assert_eq!(len, 5);
    assert_eq!(DROPS.load(Ordering::Relaxed), 1);
    assert_eq!(arena.stats().chunks, stats.chunks, "the chunks were kept");
    arena.rewind(mark).expect("the same arena");
    arena.check_invariants();
}

#[test]
fn a_pin_scope_with_a_forgotten_box_abandons_the_memory_under_it() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let mut arena = Arena::new();
    let mark = arena.checkpoint();
    let value = arena.pin_scope(|scope| {
        let pinned = scope.alloc_box_pinned(AddressCheck {
            seen: Cell::new(0),
            drops: &DROPS,
            _pinned: PhantomPinned,
        });
        pinned.as_ref().note();
        let value: *const AddressCheck = &*pinned;
        core::mem::forget(pinned);
        value
    });
    let address = value.addr();
    assert_eq!(DROPS.load(Ordering::Relaxed), 0, "forgotten, never dropped");
    // The arena carries on empty, with fresh chunks; old checkpoints are refused.
    assert_eq!(arena.stats().chunks, 0);
    assert_eq!(arena.stats().allocated_bytes, 0);
    assert_eq!(
        arena.rewind(mark),
        Err(pagekeep_arena::CheckpointError::OtherArena)
    );
    for i in 0..1000u64 {
        let fresh = core::ptr::from_ref(arena.alloc(i)).addr();
        assert!(
            fresh + 8 <= address || fresh >= address + size_of::<AddressCheck>(),
            "memory of a forgotten pinned value was handed out again"
        );
    }
    arena.reset();
    arena.check_invariants();
    // The abandoned chunk is deliberately never freed: miri's leak check is told so. The
    // pinned value was the chunk's first allocation, right after its 64-byte header.
    #[cfg(miri)]
    {
        unsafe extern "Rust" {
            fn miri_static_root(ptr: *const u8);
        }
        // SAFETY: a miri intrinsic; the pointer is the start of the abandoned chunk.
        unsafe { miri_static_root(value.cast::<u8>().wrapping_sub(64)) };
    }
}

#[test]
fn a_pin_scope_that_unwinds_drops_its_live_boxes_and_keeps_the_arena() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    let mut arena = Arena::new();
    arena.alloc(0u8);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        arena.pin_scope(|scope| {
            let _pinned = scope.alloc_box_pinned(AddressCheck {
                seen: Cell::new(0),
                drops: &DROPS,
                _pinned: PhantomPinned,
            });
            panic!("the body fails");
        })
    }));
    assert!(result.is_err());
    assert_eq!(DROPS.load(Ordering::Relaxed), 1);
    assert_eq!(arena.stats().chunks, 1, "kept: nothing pinned is left");
    arena.check_invariants();
}

#[test]
fn a_pin_scope_reports_the_limit() {
    let mut arena = Arena::with_config(ArenaConfig::new().limit_bytes(8));
    arena.pin_scope(|scope| {
        assert!(scope.try_alloc_box_pinned([0u8; 9]).is_err());
        let small = scope.try_alloc_box_pinned(3u64).unwrap();
        assert_eq!(*small, 3);
    });
    assert_eq!(arena.stats().chunks, 1);
}

/// Tells miri's leak check that the chunk under `value`, abandoned for good by a pin
/// scope, is deliberately never freed: `value` was the chunk's first allocation, right
/// after its 64-byte header.
fn abandoned_on_purpose(value: *const u8) {
    let _ = value;
    #[cfg(miri)]
    {
        unsafe extern "Rust" {
            fn miri_static_root(ptr: *const u8);
        }
        // SAFETY: a miri intrinsic; the pointer is the start of the abandoned chunk.
        unsafe { miri_static_root(value.wrapping_sub(64)) };
    }
}

#[test]
fn a_pin_scope_that_forgets_a_box_and_then_unwinds_abandons_the_memory() {
    let mut arena = Arena::new();
    let value = Cell::new(core::ptr::null());
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        arena.pin_scope(|scope| {
            let pinned = scope.alloc_box_pinned([0x42u8; 64]);
            value.set(pinned.as_ptr());
            core::mem::forget(pinned);
            panic!("the scope unwinds with a forgotten pinned box");
        })
    }));
    assert!(unwound.is_err());
    arena.check_invariants();
    assert_eq!(
        arena.stats().chunks,
        0,
        "the arena carries on with fresh chunks"
    );
    arena.reset();
    let address = value.get().addr();
    for _ in 0..100 {
        let fresh = arena.alloc([0u8; 64]).as_ptr().addr();
        assert!(fresh + 64 <= address || fresh >= address + 64);
    }
    arena.check_invariants();
    abandoned_on_purpose(value.get());
}

#[test]
fn a_pinned_value_whose_drop_panics_is_abandoned_not_reused() {
    struct PanicsOnDrop(u64);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a drop that panics ({})", self.0);
        }
    }
    let mut arena = Arena::new();
    let value = Cell::new(core::ptr::null());
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        arena.pin_scope(|scope| {
            let pinned = scope.alloc_box_pinned(PanicsOnDrop(7));
            value.set(core::ptr::from_ref(&*pinned).cast::<u8>());
            drop(pinned);
        })
    }));
    assert!(unwound.is_err());
    arena.check_invariants();
    arena.reset();
    let fresh = core::ptr::from_ref(arena.alloc(0u64)).addr();
    assert_ne!(
        fresh,
        value.get().addr(),
        "the memory of a half-dropped value was reused"
    );
    arena.check_invariants();
    abandoned_on_purpose(value.get());
}
