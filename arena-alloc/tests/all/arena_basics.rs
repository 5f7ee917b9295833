//! Every allocation method hands out aligned, disjoint, writable memory.

use core::alloc::Layout;
use std::cell::Cell;

use pagekeep_arena::{Arena, ArenaBox, ArenaConfig};
use pagekeep_mmap::HeapPages;

#[test]
fn values_of_every_method_keep_their_contents() {
    let arena = Arena::new();
    let a = arena.alloc(7u8);
    let b = arena.alloc(0x1122_3344_5566_7788u64);
    let c = arena.alloc_with(|| [3u16; 100]);
    let d = arena.alloc_slice_copy(&[1u32, 2, 3]);
    let e = arena.alloc_slice_clone(&[String::from("x"), String::from("yz")]);
    let f = arena.alloc_slice_fill_with(5, |i| i * 10);
    let g = arena.alloc_slice_from_iter((0..50).filter(|n| n % 7 == 0));
    let h = arena.alloc_str("héllo");
    *a += 1;
    assert_eq!(*a, 8);
    assert_eq!(*b, 0x1122_3344_5566_7788);
    assert!(c.iter().all(|&x| x == 3));
    assert_eq!(d, &[1, 2, 3]);
    assert_eq!(e[1], "yz");
    assert_eq!(f, &[0, 10, 20, 30, 40]);
    assert_eq!(g, &[0, 7, 14, 21, 28, 35, 42, 49]);
    assert_eq!(&*h, "héllo");
    // Clean up the heap strings the arena will not drop.
    for s in e.iter_mut() {
        drop(core::mem::take(s));
    }
}

#[test]
fn every_power_of_two_alignment_is_honoured() {
    let arena = Arena::new();
    for shift in 0..=16 {
        let align = 1usize << shift;
        for size in [0, 1, 3, align, align + 1] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let ptr = arena.alloc_layout(layout);
            assert_eq!(ptr.addr().get() % align, 0, "size {size} align {align}");
        }
    }
    arena.check_invariants();
}

#[test]
fn min_align_const_generic_aligns_even_bytes() {
    let arena: Arena<HeapPages, 16> = Arena::with_source(HeapPages, ArenaConfig::new());
    for _ in 0..100 {
        let byte = arena.alloc(1u8) as *mut u8;
        assert_eq!(byte.addr() % 16, 0);
    }
    let big = arena.alloc_layout(Layout::from_size_align(8, 256).unwrap());
    assert_eq!(big.addr().get() % 256, 0);
    arena.check_invariants();
}

#[test]
fn oversize_request_gets_a_dedicated_chunk_and_keeps_the_current_one() {
    let config = ArenaConfig::new()
        .chunk_bytes(256 << 10)
        .oversize_bytes(64 << 10);
    let mut arena = Arena::with_config(config);
    let small = arena.alloc(1u64) as *mut u64;
    let big = arena.alloc_layout(Layout::array::<u8>(100 << 10).unwrap());
    // SAFETY: 100 KiB writable bytes.
    unsafe { big.add((100 << 10) - 1).write(7) };
    let stats = arena.stats();
    assert_eq!((stats.chunks, stats.oversize_chunks), (1, 1));
    // The next small allocation still comes from the ordinary chunk, right after `small`.
    let next = arena.alloc(2u64) as *mut u64;
    assert_eq!(next.addr(), small.addr() + 8);
    arena.reset();
    assert_eq!(arena.stats().oversize_chunks, 0);
    assert_eq!(arena.stats().chunks, 1);
}

#[test]
fn filling_past_a_chunk_moves_to_a_new_chunk() {
    let config = ArenaConfig::new()
        .chunk_bytes(16 << 10)
        .commit_step_bytes(4096);
    let mut arena = Arena::with_config(config);
    for i in 0..5_000u64 {
        let value = arena.alloc(i);
        assert_eq!(*value, i);
    }
    assert!(arena.stats().chunks >= 2);
    assert_eq!(arena.stats().allocated_bytes, 40_000);
    arena.check_invariants();
    arena.reset();
    assert_eq!(arena.stats().chunks, 1);
}

#[test]
fn arena_box_runs_drop_and_into_inner_does_not() {
    struct Counted<'a>(&'a Cell<u32>);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Cell::new(0);
    let arena = Arena::new();
    let boxed = arena.alloc_box(Counted(&drops));
    drop(boxed);
    assert_eq!(drops.get(), 1);
    let boxed = arena.try_alloc_box(Counted(&drops)).unwrap();
    let inner = ArenaBox::into_inner(boxed);
    assert_eq!(drops.get(), 1);
    drop(inner);
    assert_eq!(drops.get(), 2);
    let leaked = ArenaBox::leak(arena.alloc_box(Counted(&drops)));
    let _ = leaked;
    assert_eq!(drops.get(), 2);
}

#[test]
fn hashbrown_map_lives_in_the_arena() {
    let arena = Arena::new();
    let mut map = hashbrown::HashMap::new_in(&arena);
    let count = if cfg!(miri) { 100 } else { 1000 };
    for i in 0..count {
        map.insert(i, i * 2);
    }
    assert_eq!(map.get(&50), Some(&100));
    assert!(arena.stats().allocated_bytes > count as usize * 8);
}

#[test]
fn zero_sized_requests_succeed_before_and_after_chunks() {
    let arena = Arena::new();
    let empty: &mut [u64] = arena.alloc_slice_copy(&[]);
    assert!(empty.is_empty());
    let unit = arena.alloc(());
    let () = *unit;
    let ptr = arena.alloc_layout(Layout::from_size_align(0, 64).unwrap());
    assert_eq!(ptr.addr().get() % 64, 0);
}

#[test]
fn arena_can_move_to_another_thread() {
    let arena = Arena::new();
    arena.alloc(5u32);
    let handle = std::thread::spawn(move || {
        let value = arena.alloc(6u32);
        *value
    });
    assert_eq!(handle.join().unwrap(), 6);
}

#[test]
#[should_panic(expected = "arena allocation")]
fn panicking_variant_fails_loudly_at_the_limit() {
    let arena = Arena::with_config(ArenaConfig::new().limit_bytes(1024));
    let _ = arena.alloc([0u8; 2048]);
}
