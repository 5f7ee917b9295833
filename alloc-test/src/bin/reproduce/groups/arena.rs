//! arena: small allocations with writes, vector growth, reset and the request cycle;
//! against bumpalo, typed-arena and the system allocator.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use alloc_test::bench::machine::Machine;
use alloc_test::bench::measure::{Measurement, Settings, measure_interleaved};
use alloc_test::bench::report::{Page, Row, Section, Target};
use arena_alloc::{Arena, ArenaPool, PoolConfig};

use super::SecondThread;
use crate::progress::Progress;

/// Progress steps of this group.
pub const STEPS: usize = 4;

/// Allocations between resets in the small-allocation workload.
const BATCH: u64 = 1024;

/// `n` 32-byte allocations with a write each, resetting every `BATCH`.
fn small_allocations(settings: Settings, progress: &mut Progress) -> Row {
    progress.step("arena: 32-byte allocations with a write");
    let mut arena = Arena::new();
    let mut bump = bumpalo::Bump::new();
    let mut ours = |n: u64| {
        let start = Instant::now();
        let mut done = 0;
        while done < n {
            for index in 0..BATCH.min(n - done) {
                black_box(arena.alloc([index as u8; 32]));
            }
            done += BATCH;
            arena.reset();
        }
        start.elapsed()
    };
    let mut theirs = |n: u64| {
        let start = Instant::now();
        let mut done = 0;
        while done < n {
            for index in 0..BATCH.min(n - done) {
                black_box(bump.alloc([index as u8; 32]));
            }
            done += BATCH;
            bump.reset();
        }
        start.elapsed()
    };
    let mut typed = |n: u64| {
        let start = Instant::now();
        let mut done = 0;
        while done < n {
            let arena = typed_arena::Arena::with_capacity(BATCH as usize);
            for index in 0..BATCH.min(n - done) {
                black_box(arena.alloc([index as u8; 32]));
            }
            done += BATCH;
        }
        start.elapsed()
    };
    let figures = measure_interleaved(settings, &mut [&mut ours, &mut theirs, &mut typed]);
    Row::new(
        "32-byte allocation with a write (reset every 1024)",
        vec![
            ("Arena".into(), figures[0]),
            ("bumpalo".into(), figures[1]),
            ("typed-arena".into(), figures[2]),
        ],
    )
    .target(Target::at_most("bumpalo", 1.0))
}

/// A `Vec<u64>` pushed one element at a time to 100k elements, per push.
fn vector_growth(settings: Settings, progress: &mut Progress) -> Row {
    progress.step("arena: Vec<u64> pushed to 100k elements");
    const ELEMENTS: u64 = 100_000;
    let mut arena = Arena::new();
    let mut bump = bumpalo::Bump::new();
    let mut ours = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let mut vector = allocator_api2::vec::Vec::new_in(&arena);
            for element in 0..ELEMENTS {
                vector.reserve_exact(1);
                vector.push(element);
            }
            black_box(&vector);
            drop(vector);
            arena.reset();
        }
        start.elapsed()
    };
    let mut theirs = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let mut vector = bumpalo::collections::Vec::new_in(&bump);
            for element in 0..ELEMENTS {
                vector.reserve_exact(1);
                vector.push(element);
            }
            black_box(&vector);
            drop(vector);
            bump.reset();
        }
        start.elapsed()
    };
    let mut system = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let mut vector = Vec::new();
            for element in 0..ELEMENTS {
                vector.reserve_exact(1);
                vector.push(element);
            }
            black_box(&vector);
        }
        start.elapsed()
    };
    let figures = measure_interleaved(settings, &mut [&mut ours, &mut theirs, &mut system]);
    let per_element = |m: Measurement| Measurement {
        median: m.median / ELEMENTS as f64,
        low: m.low / ELEMENTS as f64,
        high: m.high / ELEMENTS as f64,
        ..m
    };
    Row::new(
        "Vec<u64> pushed to 100k elements, reserve_exact(1) each (per push)",
        vec![
            ("Arena".into(), per_element(figures[0])),
            ("bumpalo".into(), per_element(figures[1])),
            ("std Vec (System)".into(), per_element(figures[2])),
        ],
    )
    .target(Target::at_most("bumpalo", 0.1))
}

/// Fill an arena with 1 MiB in 1 KiB allocations, then reset: the reset is timed.
fn reset(settings: Settings, progress: &mut Progress) -> Row {
    progress.step("arena: reset after 1 MiB");
    let mut arena = Arena::new();
    let mut bump = bumpalo::Bump::new();
    let layout = Layout::from_size_align(1024, 8).expect("layout");
    let mut ours = |n: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            for _ in 0..1024 {
                black_box(arena.alloc_layout(layout));
            }
            let start = Instant::now();
            arena.reset();
            total += start.elapsed();
        }
        total
    };
    let mut theirs = |n: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..n {
            for _ in 0..1024 {
                black_box(bump.alloc_layout(layout));
            }
            let start = Instant::now();
            bump.reset();
            total += start.elapsed();
        }
        total
    };
    let figures = measure_interleaved(settings, &mut [&mut ours, &mut theirs]);
    Row::new(
        "reset of an arena that used 1 MiB",
        vec![("Arena".into(), figures[0]), ("bumpalo".into(), figures[1])],
    )
    .target(Target::at_most("bumpalo", 1.0))
}

/// About 8.9 KB in five allocations: what hyper makes per keep-alive request.
const REQUEST_SIZES: [usize; 5] = [4096, 4096, 400, 256, 64];

/// Acquire an arena from a pool, make the five allocations with a write each, free them,
/// release the arena; against the same allocations and frees on `System`.
fn request_cycle(settings: Settings, progress: &mut Progress) -> Result<Row, String> {
    progress.step("arena: request cycle (acquire, 5 allocations of 9 KB, release)");
    let _second = SecondThread::start();
    let layouts = REQUEST_SIZES.map(|size| Layout::from_size_align(size, 16).expect("layout"));
    let pool = ArenaPool::new(PoolConfig::new(16, 1 << 20)).map_err(|error| error.to_string())?;
    let mut ours = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let lease = pool.try_acquire().expect("a free arena");
            let blocks = layouts.map(|layout| {
                let block = lease.alloc_layout(layout);
                // SAFETY: a fresh block of at least one byte.
                unsafe { block.write(1) };
                block
            });
            for (block, layout) in black_box(blocks).into_iter().zip(layouts) {
                // SAFETY: allocated above from this arena with this layout.
                unsafe { lease.dealloc(block, layout) };
            }
            drop(lease);
        }
        start.elapsed()
    };
    let mut system = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let blocks = layouts.map(|layout| {
                // SAFETY: a non-zero layout; freed below.
                let block = unsafe { System.alloc(layout) };
                let block = NonNull::new(block).expect("memory");
                // SAFETY: a fresh block of at least one byte.
                unsafe { block.write(1) };
                block
            });
            for (block, layout) in black_box(blocks).into_iter().zip(layouts) {
                // SAFETY: allocated above with this layout.
                unsafe { System.dealloc(block.as_ptr(), layout) };
            }
        }
        start.elapsed()
    };
    let figures = measure_interleaved(settings, &mut [&mut ours, &mut system]);
    Ok(Row::new(
        "request cycle: acquire, 5 allocations (8.9 KB) and frees, release",
        vec![
            ("ArenaPool".into(), figures[0]),
            ("System".into(), figures[1]),
        ],
    )
    .target(Target::at_most("System", 0.3)))
}

/// Runs the group.
pub fn run(
    settings: Settings,
    _machine: &Machine,
    progress: &mut Progress,
) -> Result<Page, String> {
    let rows = vec![
        small_allocations(settings, progress),
        vector_growth(settings, progress),
        reset(settings, progress),
        request_cycle(settings, progress)?,
    ];
    Ok(Page {
        name: "arena".into(),
        title: "arena-alloc: per-request arenas".into(),
        introduction: "Bump allocation, growth of the latest allocation in place, reset, and \
            the whole allocation cycle of a request (lease an arena from a pool, allocate, \
            release), against bumpalo, typed-arena and the system allocator. Peers run \
            interleaved with ours in the same process; the system allocator with a second \
            thread alive. The request cycle's absolute target is under 100 ns."
            .into(),
        sections: vec![Section {
            title: "Arena workloads".into(),
            description: "The small-allocation row resets every 1024 allocations (typed-arena, \
                which has no reset, gets a fresh arena instead). The vector row reserves room \
                for exactly one more element before each push, so every push reallocates the \
                latest block: ours grows it in place, bumpalo copies the whole vector each \
                time (O(n) per push). The reset row times only the reset."
                .into(),
            unit: "ns per operation".into(),
            rows,
        }],
    })
}
