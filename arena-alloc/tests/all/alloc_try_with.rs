//! `alloc_try_with` rolls the arena back on `Err` and on a panic, when it can.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pagekeep_arena::{AllocOrInitError, Arena, ArenaConfig};

#[test]
fn ok_stores_the_value() {
    let arena = Arena::new();
    let value = arena.alloc_try_with(|| Ok::<_, ()>([7u64; 16])).unwrap();
    value[3] = 1;
    assert_eq!(value[..4], [7, 7, 7, 1]);
    assert!(arena.stats().allocated_bytes >= 128);
    arena.check_invariants();
}

#[test]
fn err_rolls_back_the_room() {
    let arena = Arena::new();
    arena.alloc(1u8);
    let before = arena.stats().allocated_bytes;
    let error = arena
        .alloc_try_with(|| Err::<[u8; 1000], _>("refused"))
        .unwrap_err();
    assert_eq!(error, "refused");
    // Only alignment padding may remain (none here: `u8` arrays need none).
    assert_eq!(arena.stats().allocated_bytes, before);
    let next = arena.alloc(2u8) as *const u8;
    assert!(arena.alloc_try_with(|| Err::<u64, _>(())).is_err());
    // After padding to 8, the room was given back: the next byte follows the padding.
    let after = arena.alloc(3u8) as *const u8;
    assert_eq!(after.addr(), next.addr() + 8 - (next.addr() % 8));
    arena.check_invariants();
}

#[test]
fn err_after_allocating_in_between_keeps_everything() {
    let arena = Arena::new();
    let before = arena.stats().allocated_bytes;
    let error = arena
        .alloc_try_with(|| {
            let message = arena.alloc_str("too short");
            Err::<u64, &str>(message)
        })
        .unwrap_err();
    // The error borrows arena memory allocated after the room: nothing is rolled back.
    assert_eq!(error, "too short");
    assert!(arena.stats().allocated_bytes >= before + 8 + 9);
    arena.check_invariants();
}

#[test]
fn try_form_distinguishes_the_two_errors() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(32));
    let mut called = false;
    let made = arena.try_alloc_try_with(|| {
        called = true;
        Ok::<_, &str>([0u8; 64])
    });
    assert_eq!(
        made.map(|value| value.len()),
        Err(AllocOrInitError::Alloc(pagekeep_arena::AllocError))
    );
    assert!(!called, "make is not called without room");
    let made = arena.try_alloc_try_with(|| Err::<[u8; 32], _>(17));
    assert_eq!(made, Err(AllocOrInitError::Init(17)));
    assert_eq!(arena.stats().allocated_bytes, 0);
    let made = arena.try_alloc_try_with(|| Ok::<_, ()>([5u8; 32])).unwrap();
    assert_eq!(made[31], 5);
    arena.check_invariants();
}

#[test]
#[should_panic(expected = "arena allocation of 64 bytes")]
fn infallible_form_panics_without_room() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(32));
    let _ = arena.alloc_try_with(|| Ok::<_, ()>([0u8; 64]));
}

#[test]
fn a_panicking_constructor_gives_the_room_back() {
    let mut arena = Arena::new();
    arena.alloc(0u64);
    let before = arena.stats().allocated_bytes;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = arena.alloc_try_with(|| -> Result<[u64; 64], ()> { panic!("constructor fails") });
    }));
    assert!(result.is_err());
    arena.check_invariants();
    assert_eq!(arena.stats().allocated_bytes, before);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _ = arena.try_alloc_try_with(|| -> Result<u8, ()> { panic!("constructor fails") });
    }));
    assert!(result.is_err());
    arena.check_invariants();
    assert_eq!(arena.stats().allocated_bytes, before);
    arena.reset();
    assert_eq!(*arena.alloc(4u8), 4);
}

#[test]
fn errors_display_and_chain() {
    let alloc: AllocOrInitError<std::num::ParseIntError> = pagekeep_arena::AllocError.into();
    assert!(alloc.to_string().starts_with("arena allocation failed"));
    let parse = "x".parse::<u8>().unwrap_err();
    let init = AllocOrInitError::Init(parse.clone());
    assert_eq!(init.to_string(), format!("initialisation failed: {parse}"));
    let source = std::error::Error::source(&init).expect("the init error");
    assert_eq!(source.to_string(), parse.to_string());
}
