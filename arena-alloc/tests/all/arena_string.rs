//! `ArenaString`: grows in place as the latest allocation, formats, reports the limit.

use core::fmt::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};

use pagekeep_arena::{Arena, ArenaConfig, ArenaPool, ArenaString, PoolConfig, arena_format};

#[test]
fn pushes_grow_in_place_while_the_string_is_the_latest_allocation() {
    let arena = Arena::new();
    let mut text = ArenaString::new_in(&arena);
    text.push('a');
    let start = text.as_ptr();
    for i in 0..2000 {
        text.push_str(if i % 2 == 0 { "é" } else { "xy" });
    }
    assert_eq!(text.as_ptr(), start, "never moved");
    assert_eq!(text.len(), 1 + 1000 * 2 + 1000 * 2);
    assert!(text.starts_with("aéxyé"));
    // Bytes handed out: the string's capacity (by doubling), nothing copied aside.
    assert_eq!(arena.stats().allocated_bytes, text.capacity());
    arena.check_invariants();
}

#[test]
fn a_string_that_is_not_the_latest_moves_and_keeps_its_text() {
    let arena = Arena::new();
    let mut text = ArenaString::from_str_in("head", &arena);
    let other = arena.alloc(5u32);
    text.push_str(&"-".repeat(100));
    assert_eq!(&text[..5], "head-");
    assert_eq!(text.len(), 104);
    assert_eq!(*other, 5);
    arena.check_invariants();
}

#[test]
fn into_str_trims_and_outlives_the_string() {
    let arena = Arena::new();
    let mut text = ArenaString::new_in(&arena);
    text.push_str("01234");
    text.push_str("56789"); // capacity doubles to 16
    assert!(text.capacity() > 10);
    let text = text.into_str();
    assert_eq!(arena.stats().allocated_bytes, 10, "trimmed to its length");
    let next = arena.alloc_str("next");
    text.make_ascii_uppercase();
    assert_eq!((&*text, &*next), ("0123456789", "next"));
    arena.check_invariants();
}

#[test]
fn dropping_the_latest_string_gives_its_bytes_back() {
    let arena = Arena::new();
    arena.alloc(1u8);
    let before = arena.stats().allocated_bytes;
    let text = arena_format!(in &arena, "{:>300}", "right");
    assert_eq!(text.len(), 300);
    drop(text);
    assert_eq!(arena.stats().allocated_bytes, before);
}

#[test]
fn formatting_matches_std() {
    let arena = Arena::new();
    let value = 3.25f64;
    let ours = arena_format!(in &arena, "{value:08.3} {:?} {:#x} {}", "q\"uote", 255, 'ñ');
    assert_eq!(
        ours.as_str(),
        format!("{value:08.3} {:?} {:#x} {}", "q\"uote", 255, 'ñ')
    );
    assert_eq!(format!("{ours}"), ours.as_str());
    assert_eq!(format!("{ours:?}"), format!("{:?}", ours.as_str()));
    let literal = ArenaString::from_fmt(&arena, format_args!("plain"));
    assert_eq!(literal, "plain");
    let mut written = ArenaString::new_in(&arena);
    write!(written, "{}-{}", 1, 2).unwrap();
    written.write_char('!').unwrap();
    assert_eq!(written, "1-2!");
    assert_eq!(written.as_ref(), "1-2!");
    written.clear();
    assert!(written.is_empty());
}

#[test]
fn the_limit_is_an_error_from_every_try_path() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(8));
    let mut text = ArenaString::try_with_capacity_in(8, &arena).unwrap();
    text.try_push_str("12345678").unwrap();
    assert!(text.try_push('9').is_err());
    assert!(text.try_push_str("9").is_err());
    assert!(write!(text, "{}", 9).is_err());
    assert_eq!(text, "12345678", "unchanged by the failures");
    drop(text);
    assert!(ArenaString::try_from_str_in("123456789", &arena).is_err());
    assert!(ArenaString::try_from_fmt(&arena, format_args!("{}", 123_456_789)).is_err());
    assert_eq!(
        arena.stats().allocated_bytes,
        0,
        "failed strings gave their bytes back"
    );
    assert!(ArenaString::try_with_capacity_in(usize::MAX, &arena).is_err());
    arena.check_invariants();
}

#[test]
fn infallible_forms_panic_at_the_limit_and_leave_the_arena_usable() {
    let mut arena = Arena::with_config(ArenaConfig::new().limit_bytes(8));
    let result = catch_unwind(AssertUnwindSafe(|| {
        arena_format!(in &arena, "{}", "much more than eight bytes");
    }));
    assert!(result.is_err());
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut text = ArenaString::new_in(&arena);
        text.push_str("12345");
        text.push_str("6789");
    }));
    assert!(result.is_err());
    arena.check_invariants();
    arena.reset();
    assert_eq!(arena_format!(in &arena, "{}", 1234), "1234");
}

/// A `Display` that fails on its own, as `format!` does not expect.
struct Broken;

impl fmt::Display for Broken {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Err(fmt::Error)
    }
}

#[test]
#[should_panic(expected = "formatting trait implementation returned an error")]
fn a_display_that_fails_on_its_own_panics_like_format() {
    let arena = Arena::new();
    let _ = ArenaString::try_from_fmt(&arena, format_args!("{}", Broken));
}

#[test]
fn strings_in_a_pool_lease() {
    let pool = ArenaPool::new(PoolConfig::new(1, 1 << 20)).unwrap();
    let lease = pool.try_acquire().unwrap();
    let mut text = arena_format!(in &lease, "lease {}", 1);
    text.push_str(" of 1");
    assert_eq!(text, "lease 1 of 1");
    drop(text);
    drop(lease);
}

#[test]
fn a_string_fills_the_arena_up_to_its_limit() {
    // Doubling would overshoot the limit; the string then grows by what it needs.
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(13));
    let mut text = ArenaString::new_in(&arena);
    for character in "hello, world!".chars() {
        text.try_push(character).unwrap();
    }
    assert_eq!(text, "hello, world!");
    assert!(text.try_push('?').is_err());
    assert_eq!(arena.stats().allocated_bytes, 13);
    arena.check_invariants();
}
