//! Slice fills: copies, clones, defaults and iterators, including ones that panic
//! halfway and iterators that lie about their length.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use pagekeep_arena::{Arena, ArenaConfig};

#[test]
fn fills_make_the_values_asked_for() {
    let arena = Arena::new();
    assert_eq!(arena.alloc_slice_fill_copy(4, 9u32), &[9; 4]);
    assert_eq!(
        arena.alloc_slice_fill_default::<(u8, bool)>(2),
        &[(0, false); 2]
    );
    let shared = Rc::new(5);
    let clones = arena.alloc_slice_fill_clone(3, &shared);
    assert_eq!(Rc::strong_count(&shared), 4);
    for clone in clones.iter_mut() {
        // SAFETY: each clone is dropped once here and never used again.
        unsafe { core::ptr::drop_in_place(clone) };
    }
    assert_eq!(Rc::strong_count(&shared), 1);
    assert_eq!(arena.alloc_slice_fill_iter("abc".bytes()), b"abc");
    assert_eq!(arena.alloc_slice_fill_iter(Vec::<u8>::new()), &[] as &[u8]);
    assert!(arena.alloc_slice_fill_copy(0, 1u64).is_empty());
    arena.check_invariants();
}

#[test]
fn try_fills_report_the_limit_and_run_no_user_code() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(64));
    assert!(arena.try_alloc_slice_fill_copy(65, 0u8).is_err());
    let shared = Rc::new(());
    assert!(arena.try_alloc_slice_fill_clone(9, &shared).is_err());
    assert_eq!(Rc::strong_count(&shared), 1, "clone was not called");
    assert!(arena.try_alloc_slice_fill_default::<u64>(9).is_err());
    let pulled = Cell::new(0);
    let counting = (0..9u32)
        .map(u64::from)
        .inspect(|_| pulled.set(pulled.get() + 1));
    assert!(arena.try_alloc_slice_fill_iter(counting).is_err());
    assert_eq!(pulled.get(), 0, "the iterator was not advanced");
    assert_eq!(arena.stats().allocated_bytes, 0);
    assert_eq!(arena.try_alloc_slice_fill_copy(64, 1u8).unwrap().len(), 64);
    arena.check_invariants();
}

#[test]
fn lengths_no_allocation_can_hold_are_errors() {
    let arena = Arena::new();
    assert!(arena.try_alloc_slice_fill_copy(usize::MAX, 0u16).is_err());
    assert!(
        arena
            .try_alloc_slice_fill_default::<u64>(usize::MAX / 4)
            .is_err()
    );
    assert!(
        arena
            .try_alloc_slice_fill_clone(usize::MAX / 2, &String::new())
            .is_err()
    );
    assert!(
        arena
            .try_alloc_slice_fill_iter(LyingLength::new(usize::MAX, 3))
            .is_err()
    );
    arena.check_invariants();
    assert_eq!(*arena.alloc(1u8), 1);
}

#[test]
#[should_panic(expected = "values of 8 bytes failed")]
fn infallible_fill_panics_on_the_limit() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(16));
    arena.alloc_slice_fill_copy(3, 0u64);
}

/// A type whose `clone` panics on the `panic_at`th call, counting live values (in
/// borrowed cells, so that leaked clones leak no heap memory).
struct Fragile<'c> {
    live: &'c Cell<usize>,
    calls: &'c Cell<usize>,
    panic_at: usize,
}

impl Clone for Fragile<'_> {
    fn clone(&self) -> Self {
        self.calls.set(self.calls.get() + 1);
        if self.calls.get() == self.panic_at {
            panic!("clone {} fails", self.panic_at);
        }
        self.live.set(self.live.get() + 1);
        Fragile { ..*self }
    }
}

impl Drop for Fragile<'_> {
    fn drop(&mut self) {
        self.live.set(self.live.get() - 1);
    }
}

thread_local! {
    static DEFAULTS: Cell<usize> = const { Cell::new(0) };
}

/// Its `default` panics on the fifth call of the thread.
#[derive(Debug)]
struct FifthDefaultPanics(#[allow(dead_code, reason = "gives the value a size")] u64);

impl Default for FifthDefaultPanics {
    fn default() -> Self {
        let calls = DEFAULTS.with(|calls| {
            calls.set(calls.get() + 1);
            calls.get()
        });
        assert!(calls != 5, "default 5 fails");
        FifthDefaultPanics(calls as u64)
    }
}

/// Checks the arena after a fill panicked: consistent, and still allocating.
fn assert_usable(arena: &mut Arena) {
    arena.check_invariants();
    let fresh = arena.alloc_slice_fill_copy(100, 3u32);
    assert!(fresh.iter().all(|&x| x == 3));
    arena.check_invariants();
    arena.reset();
    arena.check_invariants();
    assert_eq!(arena.stats().allocated_bytes, 0);
}

#[test]
fn a_clone_that_panics_halfway_leaves_the_arena_consistent() {
    let mut arena = Arena::new();
    let (live, calls) = (Cell::new(1), Cell::new(0));
    let fragile = Fragile {
        live: &live,
        calls: &calls,
        panic_at: 4,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        arena.alloc_slice_fill_clone(10, &fragile);
    }));
    assert!(result.is_err());
    // Three clones were made and leaked (never dropped), as documented.
    assert_eq!(live.get(), 4);
    assert_usable(&mut arena);
    // The try form panics the same way (a panic is not an allocation error).
    calls.set(0);
    let fragile = Fragile {
        panic_at: 2,
        ..fragile
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = arena.try_alloc_slice_fill_clone(10, &fragile);
    }));
    assert!(result.is_err());
    assert_usable(&mut arena);
}

#[test]
fn a_default_that_panics_halfway_leaves_the_arena_consistent() {
    let mut arena = Arena::new();
    DEFAULTS.with(|calls| calls.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| {
        arena.alloc_slice_fill_default::<FifthDefaultPanics>(8);
    }));
    assert!(result.is_err());
    assert_usable(&mut arena);
}

#[test]
fn an_iterator_that_panics_halfway_leaves_the_arena_consistent() {
    let mut arena = Arena::new();
    let before = arena.stats().allocated_bytes;
    let result = catch_unwind(AssertUnwindSafe(|| {
        arena.alloc_slice_fill_iter((0..10u32).inspect(|&n| assert!(n != 6, "item 6 fails")));
    }));
    assert!(result.is_err());
    assert!(arena.stats().allocated_bytes >= before);
    assert_usable(&mut arena);
}

/// An `ExactSizeIterator` that claims `claimed` items and yields `actual`.
struct LyingLength {
    claimed: usize,
    actual: usize,
    yielded: usize,
}

impl LyingLength {
    fn new(claimed: usize, actual: usize) -> Self {
        LyingLength {
            claimed,
            actual,
            yielded: 0,
        }
    }
}

impl Iterator for LyingLength {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.yielded == self.actual {
            return None;
        }
        self.yielded += 1;
        Some(self.yielded as u64 * 10)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.claimed.saturating_sub(self.yielded);
        (left, Some(left))
    }
}

impl ExactSizeIterator for LyingLength {}

#[test]
fn an_iterator_shorter_than_its_length_gives_a_shorter_slice_and_the_room_back() {
    let arena = Arena::new();
    arena.alloc(0u8);
    let before = arena.stats().allocated_bytes;
    let slice = arena.alloc_slice_fill_iter(LyingLength::new(100, 3));
    assert_eq!(slice, &[10, 20, 30]);
    // The room for the 97 missing items was given back: the slice was the latest.
    let padding = arena.stats().allocated_bytes - before - 3 * 8;
    assert!(padding < 8, "{padding} bytes beyond the three items");
    arena.check_invariants();
    let empty = arena.alloc_slice_fill_iter(LyingLength::new(5, 0));
    assert!(empty.is_empty());
    arena.check_invariants();
    // The next allocation follows the short slice directly.
    let next = arena.alloc(7u64) as *const u64;
    assert_eq!(next.addr(), slice.as_ptr_range().end.addr());
}

#[test]
fn an_iterator_longer_than_its_length_gives_only_its_length() {
    let arena = Arena::new();
    let mut lying = LyingLength::new(2, 10);
    let slice = arena.alloc_slice_fill_iter(&mut lying);
    assert_eq!(slice, &[10, 20]);
    assert_eq!(lying.yielded, 2, "no item beyond the length was taken");
    arena.check_invariants();
}

#[test]
fn an_iterator_lying_after_other_allocations_stays_in_bounds() {
    // The short slice is not the latest allocation when the iterator allocates itself.
    let arena = Arena::new();
    let mut extra = Vec::new();
    let slice = arena.alloc_slice_fill_iter(
        LyingLength::new(50, 4).inspect(|&n| extra.push(arena.alloc(n) as *const u64)),
    );
    assert_eq!(slice, &[10, 20, 30, 40]);
    for (pointer, n) in extra.iter().zip([10, 20, 30, 40]) {
        // SAFETY: the values live until the arena is reset or dropped.
        assert_eq!(unsafe { **pointer }, n);
    }
    arena.check_invariants();
}

#[test]
fn a_fill_with_closure_that_panics_halfway_leaves_the_arena_consistent() {
    let mut arena = Arena::new();
    for fallible in [false, true] {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let make = |index: usize| {
                assert!(index != 3, "element 3 fails");
                index as u64
            };
            if fallible {
                let _ = arena.try_alloc_slice_fill_with(10, make);
            } else {
                arena.alloc_slice_fill_with(10, make);
            }
        }));
        assert!(result.is_err());
        assert_usable(&mut arena);
    }
}

#[test]
fn the_try_form_handles_lying_iterators_too() {
    let arena = Arena::new();
    let short = arena
        .try_alloc_slice_fill_iter(LyingLength::new(9, 2))
        .unwrap();
    assert_eq!(short, &[10, 20]);
    let mut long = LyingLength::new(1, 9);
    let slice = arena.try_alloc_slice_fill_iter(&mut long).unwrap();
    assert_eq!(slice, &[10]);
    assert_eq!(long.yielded, 1);
    assert_eq!(arena.stats().allocated_bytes, 3 * 8);
    arena.check_invariants();
}
