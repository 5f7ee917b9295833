//! User code that allocates from the very arena that is in the middle of serving it: a
//! `Display` inside `from_fmt`, a constructor of `alloc_try_with` that panics after
//! allocating, an iterator of `alloc_slice_fill_iter` that allocates and lies about its
//! length, strings and vectors interleaved. What the user code allocated stays intact
//! and is never handed out again.

use core::cell::Cell;
use core::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use allocator_api2::vec::Vec as ArenaVec;
use pagekeep_arena::{Arena, ArenaString};

/// Writes half its text, allocates a value in the arena, writes the rest.
struct AllocatingDisplay<'a> {
    arena: &'a Arena,
    made: &'a Cell<Option<&'a mut u64>>,
}

impl fmt::Display for AllocatingDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("12345678")?;
        self.made.set(Some(self.arena.alloc(0xAAAA_AAAA_AAAA_AAAA)));
        f.write_str("abcdefghijklmnopqrstuvwxyz")
    }
}

#[test]
fn a_display_that_allocates_in_the_arena_while_formatting() {
    let arena = Arena::new();
    let made = Cell::new(None);
    let display = AllocatingDisplay {
        arena: &arena,
        made: &made,
    };
    let text = ArenaString::from_fmt(&arena, format_args!("{display} {}", 5));
    let after = arena.alloc([0x55u8; 64]);
    assert_eq!(text, "12345678abcdefghijklmnopqrstuvwxyz 5");
    assert_eq!(made.take().map(|value| *value), Some(0xAAAA_AAAA_AAAA_AAAA));
    assert_eq!(after, &[0x55; 64]);
    arena.check_invariants();
}

#[test]
fn a_constructor_that_allocates_then_panics_keeps_what_it_allocated() {
    let arena = Arena::new();
    let made = Cell::new(None);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        arena.alloc_try_with(|| -> Result<[u64; 4], ()> {
            made.set(Some(arena.alloc(0x5555u64)));
            panic!("the constructor fails after allocating");
        })
    }));
    assert!(unwound.is_err());
    let next = arena.alloc(0x7777u64);
    assert_eq!(made.take().map(|value| *value), Some(0x5555));
    assert_eq!(*next, 0x7777);
    arena.check_invariants();
}

/// An iterator that claims `claimed` items.
struct Claiming<I> {
    items: I,
    claimed: usize,
}

impl<I: Iterator> Iterator for Claiming<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.items.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claimed, Some(self.claimed))
    }
}

impl<I: Iterator> ExactSizeIterator for Claiming<I> {}

#[test]
fn a_short_iterator_that_allocates_keeps_its_allocations() {
    let arena = Arena::new();
    let mut made = Vec::new();
    let mut count = 0u64;
    let items = core::iter::from_fn(|| {
        count += 1;
        (count <= 2).then(|| {
            made.push(arena.alloc_slice_fill_copy(3, count));
            count
        })
    });
    let slice = arena.alloc_slice_fill_iter(Claiming { items, claimed: 10 });
    let next = arena.alloc([9u64; 4]);
    assert_eq!(slice, &[1, 2]);
    assert_eq!(&*made[0], &[1, 1, 1]);
    assert_eq!(&*made[1], &[2, 2, 2]);
    assert_eq!(next, &[9; 4]);
    arena.check_invariants();
}

#[test]
fn strings_and_vectors_growing_in_turn_keep_their_contents() {
    let arena = Arena::new();
    let mut first = ArenaString::new_in(&arena);
    let mut second = ArenaString::new_in(&arena);
    first.push_str("aaaa");
    second.push_str("bbbb");
    first.push_str("cccc");
    second.push_str("dddd");
    let mut numbers = ArenaVec::new_in(&arena);
    numbers.push(1u64);
    first.push_str("eeee");
    numbers.push(2);
    second.clear();
    second.push_str("ffff");
    assert_eq!(first, "aaaacccceeee");
    assert_eq!(second, "ffff");
    assert_eq!(&numbers[..], &[1, 2]);
    let kept = first.into_str();
    let next = arena.alloc_str("zzz");
    drop(second);
    let last = arena.alloc_str("yyyy");
    assert_eq!((&*kept, &*next, &*last), ("aaaacccceeee", "zzz", "yyyy"));
    assert_eq!(&numbers[..], &[1, 2]);
    arena.check_invariants();
}
