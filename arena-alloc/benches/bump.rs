//! Bump allocation against bumpalo (and typed-arena) in the same run: 32-byte
//! allocations with a write, a `Vec<u64>` pushed to 100k elements, and reset after 1 MiB.
//!
//! `cargo bench -p pagekeep-arena --bench bump -- --warm-up-time 1 --measurement-time 3`
//!
//! Each contender is made once, outside criterion's closure (which criterion calls once
//! per sample), so that samples measure a warm arena, not the first touch of a fresh one.

use std::alloc::Layout;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pagekeep_arena::{Arena, ArenaConfig};

const BATCH: usize = 1024;

fn alloc_32_bytes_with_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_32B_write");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut arena = Arena::new();
    group.bench_function("pagekeep-arena", |b| {
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
    group.bench_function("pagekeep-arena", |b| {
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
    group.bench_function("pagekeep-arena", |b| {
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

/// Arenas reset in one timed batch: enough that the two clock reads around the batch
/// (tens of nanoseconds) add well under a nanosecond per reset.
const RESETS_PER_BATCH: usize = 64;
/// What each arena is filled with before its reset: 1 MiB in 64 KiB pieces.
const FILL_PIECES: usize = 16;
const FILL_PIECE: Layout = match Layout::from_size_align(64 << 10, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("layout"),
};

/// Times `reset` of arenas that have just allocated 1 MiB, in batches: each batch fills
/// `RESETS_PER_BATCH` arenas (untimed), then resets them all between two clock reads.
///
/// Timing each reset on its own measured mostly the clock: two `Instant::now()` cost more
/// than the reset. The arenas are made and filled with writes once, at set-up, so that
/// their memory is really used (and, for ours, the steady state is reached: the policy
/// keeps what the previous cycle used committed); the untimed fill of each batch only
/// allocates, so that a batch costs little more than what it times (criterion sizes the
/// run by the timed part). The last allocation of each arena comes just before the
/// batch's resets, as the last allocation of a request comes just before its release.
fn reset_after_1_mib(c: &mut Criterion) {
    /// Runs `iters` resets in batches over `arenas`; returns the time of the resets.
    fn timed_resets<A>(
        iters: u64,
        arenas: &mut [A],
        fill: impl Fn(&A),
        reset: impl Fn(&mut A),
    ) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let batch = &mut arenas[..left.min(RESETS_PER_BATCH as u64) as usize];
            for arena in batch.iter() {
                fill(arena);
            }
            let start = Instant::now();
            for arena in batch.iter_mut() {
                reset(black_box(arena));
            }
            total += start.elapsed();
            left -= batch.len() as u64;
        }
        total
    }
    fn fill_with_writes(alloc: impl Fn(Layout) -> *mut u8) {
        for _ in 0..FILL_PIECES {
            // SAFETY: a fresh block of `FILL_PIECE.size()` bytes.
            unsafe { alloc(FILL_PIECE).write_bytes(0x5A, FILL_PIECE.size()) };
        }
    }
    let mut group = c.benchmark_group("reset_after_1MiB");
    // Criterion sizes the run by the timed part, a few ns per reset, while each reset
    // also costs an untimed fill about five times as long: these override the command
    // line's times so that the run stays short (about 6 s of wall time per contender).
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    for (name, config) in [
        (
            "pagekeep-arena (default: 256 KiB warm, MADV_FREE above)",
            ArenaConfig::new(),
        ),
        (
            "pagekeep-arena (2 MiB warm)",
            ArenaConfig::new().warm_bytes(2 << 20),
        ),
    ] {
        let mut arenas: Vec<Arena> = (0..RESETS_PER_BATCH)
            .map(|_| Arena::with_config(config))
            .collect();
        for arena in &mut arenas {
            for _ in 0..2 {
                fill_with_writes(|layout| arena.alloc_layout(layout).as_ptr());
                arena.reset();
            }
        }
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_resets(
                    iters,
                    &mut arenas,
                    |arena| {
                        for _ in 0..FILL_PIECES {
                            black_box(arena.alloc_layout(FILL_PIECE));
                        }
                    },
                    |arena| arena.reset(),
                )
            })
        });
    }
    let mut bumps: Vec<bumpalo::Bump> = (0..RESETS_PER_BATCH)
        .map(|_| bumpalo::Bump::new())
        .collect();
    for bump in &mut bumps {
        // A few cycles: bumpalo keeps its newest chunk on reset, which takes a couple of
        // resets to hold the whole fill.
        for _ in 0..4 {
            fill_with_writes(|layout| bump.alloc_layout(layout).as_ptr());
            bump.reset();
        }
    }
    group.bench_function("bumpalo", |b| {
        b.iter_custom(|iters| {
            timed_resets(
                iters,
                &mut bumps,
                |bump| {
                    for _ in 0..FILL_PIECES {
                        black_box(bump.alloc_layout(FILL_PIECE));
                    }
                },
                |bump| bump.reset(),
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
