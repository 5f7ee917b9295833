//! Bump allocation against bumpalo (and typed-arena) in the same run: 32-byte
//! allocations with a write, a `Vec<u64>` pushed to 100k elements, and reset after 1 MiB.
//!
//! `cargo bench -p arena-alloc --bench bump -- --warm-up-time 1 --measurement-time 3`
//!
//! Each contender is made once, outside criterion's closure (which criterion calls once
//! per sample), so that samples measure a warm arena, not the first touch of a fresh one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use arena_alloc::{Arena, ArenaConfig};
use criterion::{Criterion, Throughput};

const BATCH: usize = 1024;

fn alloc_32_bytes_with_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_32B_write");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut arena = Arena::new();
    group.bench_function("arena-alloc", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                black_box(arena.alloc([i as u8; 32]));
            }
            arena.reset();
        })
    });
    let mut bump = bumpalo::Bump::new();
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                black_box(bump.alloc([i as u8; 32]));
            }
            bump.reset();
        })
    });
    group.bench_function("typed-arena", |b| {
        b.iter(|| {
            let arena = typed_arena::Arena::with_capacity(BATCH);
            for i in 0..BATCH {
                black_box(arena.alloc([i as u8; 32]));
            }
        })
    });
    group.finish();
}

const PUSHES: u64 = 100_000;

fn vec_push_100k(c: &mut Criterion) {
    // One element at a time: `reserve_exact(1)` before each push makes every push a
    // reallocation. Ours grows the latest allocation in place; bumpalo copies.
    let mut group = c.benchmark_group("vec_u64_push_100k_reserve_exact_1");
    group.sample_size(10);
    let mut arena = Arena::new();
    group.bench_function("arena-alloc", |b| {
        b.iter(|| {
            {
                let mut vec = allocator_api2::vec::Vec::new_in(&arena);
                for i in 0..PUSHES {
                    vec.reserve_exact(1);
                    vec.push(i);
                }
                black_box(vec.len());
            }
            arena.reset();
        })
    });
    let mut bump = bumpalo::Bump::new();
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            {
                let mut vec = bumpalo::collections::Vec::new_in(&bump);
                for i in 0..PUSHES {
                    vec.reserve_exact(1);
                    vec.push(i);
                }
                black_box(vec.len());
            }
            bump.reset();
        })
    });
    group.finish();

    // Amortised doubling (plain `push`), for context.
    let mut group = c.benchmark_group("vec_u64_push_100k");
    let mut arena = Arena::new();
    group.bench_function("arena-alloc", |b| {
        b.iter(|| {
            {
                let mut vec = allocator_api2::vec::Vec::new_in(&arena);
                for i in 0..PUSHES {
                    vec.push(i);
                }
                black_box(vec.len());
            }
            arena.reset();
        })
    });
    let mut bump = bumpalo::Bump::new();
    group.bench_function("bumpalo", |b| {
        b.iter(|| {
            {
                let mut vec = bumpalo::collections::Vec::new_in(&bump);
                for i in 0..PUSHES {
                    vec.push(i);
                }
                black_box(vec.len());
            }
            bump.reset();
        })
    });
    group.finish();
}

/// Fills 1 MiB in 1 KiB pieces (untimed), then times `reset` alone.
fn reset_after_1_mib(c: &mut Criterion) {
    fn timed_resets(iters: u64, mut fill: impl FnMut(), mut reset: impl FnMut()) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            fill();
            let start = Instant::now();
            reset();
            total += start.elapsed();
        }
        total
    }
    let mut group = c.benchmark_group("reset_after_1MiB");
    for (name, config) in [
        (
            "arena-alloc (default: 256 KiB warm, MADV_FREE above)",
            ArenaConfig::new(),
        ),
        (
            "arena-alloc (2 MiB warm)",
            ArenaConfig::new().warm_bytes(2 << 20),
        ),
    ] {
        let arena = std::cell::RefCell::new(Arena::with_config(config));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_resets(
                    iters,
                    || {
                        let arena = arena.borrow();
                        for i in 0..1024 {
                            black_box(arena.alloc([i as u8; 1024]));
                        }
                    },
                    || arena.borrow_mut().reset(),
                )
            })
        });
    }
    let bump = std::cell::RefCell::new(bumpalo::Bump::new());
    group.bench_function("bumpalo", |b| {
        b.iter_custom(|iters| {
            timed_resets(
                iters,
                || {
                    let bump = bump.borrow();
                    for i in 0..1024 {
                        black_box(bump.alloc([i as u8; 1024]));
                    }
                },
                || bump.borrow_mut().reset(),
            )
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    alloc_32_bytes_with_write(&mut criterion);
    vec_push_100k(&mut criterion);
    reset_after_1_mib(&mut criterion);
    criterion.final_summary();
}
