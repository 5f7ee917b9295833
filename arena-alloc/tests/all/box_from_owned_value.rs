//! An `ArenaBox` drops its value exactly once: safe code can only box a value it moves
//! into the arena (`ArenaBox::from_mut` on a value someone else owns is `unsafe`, and its
//! compile-fail doctest shows the old double drop no longer compiles).

use std::cell::Cell;

use pagekeep_arena::{Arena, ArenaBox};

struct Counted<'a>(&'a Cell<usize>);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn a_box_made_in_a_place_drops_its_value_once() {
    let drops = Cell::new(0);
    let arena = Arena::new();
    let place = arena.try_alloc_uninit::<Counted<'_>>().unwrap();
    let boxed = ArenaBox::new_in(place, Counted(&drops));
    assert_eq!(drops.get(), 0);
    drop(boxed);
    assert_eq!(drops.get(), 1);
    drop(arena);
    assert_eq!(drops.get(), 1, "the arena never drops what it holds");
}

#[test]
fn a_heap_owning_value_survives_boxing_and_unboxing() {
    let arena = Arena::new();
    let boxed = arena.alloc_box(String::from("moved in"));
    let back = ArenaBox::into_inner(boxed);
    assert_eq!(back, "moved in");
    let boxed = arena.try_alloc_box(vec![1u8, 2, 3]).unwrap();
    assert_eq!(boxed.len(), 3);
    drop(boxed);
}
