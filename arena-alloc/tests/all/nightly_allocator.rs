//! With feature `nightly`, std's own collections live in the arena.

use pagekeep_arena::Arena;

#[test]
fn std_vec_and_box_use_the_arena_through_the_nightly_trait() {
    let arena = Arena::new();
    let mut vec: Vec<u32, &Arena> = Vec::new_in(&arena);
    vec.push(1);
    let first = vec.as_ptr();
    for i in 2..1000 {
        vec.reserve_exact(1);
        vec.push(i);
    }
    assert_eq!(vec.as_ptr(), first, "grew in place");
    let boxed = Box::new_in(7u64, &arena);
    assert_eq!(*boxed, 7);
    assert!(arena.stats().allocated_bytes >= 4000 + 8);
}
