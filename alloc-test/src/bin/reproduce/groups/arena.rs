//! arena: small allocations with writes, vector growth, reset and the request cycle;
//! against bumpalo, typed-arena, and mimalloc, jemalloc and the system allocator.

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use pagekeep_alloc_test::bench::boundary::Shim;
use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{Measurement, Settings, measure_interleaved};
use pagekeep_alloc_test::bench::report::{Page, Row, Section, Target};
use pagekeep_arena::{Arena, ArenaPool, PoolConfig, PooledArena};
use tikv_jemallocator::Jemalloc;

use super::{SecondThread, named};
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
        named(&["Arena", "bumpalo", "typed-arena"], figures),
    )
    .target(Target::at_most_best(1.0))
}

/// Pushes `ELEMENTS` elements onto the vector `$new` makes, reserving room for exactly
/// one more before each push when `$exact`, or letting it double; then `$clear`, if
/// given, resets the arena (timed with the rest: the reset is part of the cycle).
macro_rules! pushes {
    ($n:expr, $new:expr, $exact:expr $(, $clear:expr)?) => {{
        let start = Instant::now();
        for _ in 0..$n {
            let mut vector = $new;
            for element in 0..ELEMENTS {
                if $exact {
                    vector.reserve_exact(1);
                }
                vector.push(element);
            }
            black_box(&vector);
            drop(vector);
            $($clear;)?
        }
        start.elapsed()
    }};
}

/// Elements of each vector of the growth rows.
const ELEMENTS: u64 = 100_000;

/// A `Vec<u64>` pushed one element at a time to 100k elements, per push: with
/// `reserve_exact(1)` before each push (where ours grows in place), against the same on
/// bumpalo and against the ordinary doubling push on bumpalo and `std`, the strongest
/// way a peer does the job; and a second row with every vector doubling.
fn vector_growth(settings: Settings, progress: &mut Progress) -> Vec<Row> {
    progress.step("arena: Vec<u64> pushed to 100k elements");
    let mut arena = Arena::new();
    let mut bump = bumpalo::Bump::new();
    let mut bump_doubling = bumpalo::Bump::new();
    let mut arena_doubling = Arena::new();
    let mut ours = |n: u64| {
        pushes!(
            n,
            allocator_api2::vec::Vec::new_in(&arena),
            true,
            arena.reset()
        )
    };
    let mut theirs = |n: u64| {
        pushes!(
            n,
            bumpalo::collections::Vec::new_in(&bump),
            true,
            bump.reset()
        )
    };
    let mut theirs_doubling = |n: u64| {
        pushes!(
            n,
            bumpalo::collections::Vec::new_in(&bump_doubling),
            false,
            bump_doubling.reset()
        )
    };
    let mut system_doubling = |n: u64| pushes!(n, Vec::new(), false);
    let mut ours_doubling = |n: u64| {
        pushes!(
            n,
            allocator_api2::vec::Vec::new_in(&arena_doubling),
            false,
            arena_doubling.reset()
        )
    };
    let figures = measure_interleaved(
        settings,
        &mut [
            &mut ours,
            &mut theirs,
            &mut theirs_doubling,
            &mut system_doubling,
            &mut ours_doubling,
        ],
    );
    let per_element: Vec<Measurement> = figures
        .iter()
        .map(|m| m.scaled(1.0 / ELEMENTS as f64))
        .collect();
    let pick = |indices: &[usize]| indices.iter().map(|&i| per_element[i].clone()).collect();
    vec![
        Row::new(
            "Vec<u64> pushed to 100k elements, ours with reserve_exact(1) each (per push)",
            named(
                &[
                    "Arena, reserve_exact(1)",
                    "bumpalo, reserve_exact(1)",
                    "bumpalo, push (doubling)",
                    "std Vec, push (doubling)",
                ],
                pick(&[0, 1, 2, 3]),
            ),
        )
        .target(Target::at_most_best(0.1)),
        Row::new(
            "Vec<u64> pushed to 100k elements, ordinary push (doubling) for all (per push)",
            named(
                &[
                    "Arena, push (doubling)",
                    "bumpalo, push (doubling)",
                    "std Vec, push (doubling)",
                ],
                pick(&[4, 2, 3]),
            ),
        )
        .in_summary(),
    ]
}

/// Arenas reset in one timed batch: enough that the two clock reads around the batch
/// add well under a nanosecond per reset.
const RESETS_PER_BATCH: usize = 64;
/// Each arena allocates 1 MiB in 64 KiB pieces before its reset.
const FILL_PIECES: usize = 16;

/// Runs `n` resets in batches over `arenas`, each batch filled first (untimed); returns
/// the time of the resets alone.
fn timed_resets<A>(
    n: u64,
    arenas: &mut [A],
    fill: impl Fn(&A),
    reset: impl Fn(&mut A),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = n;
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

/// Reset of arenas that have just allocated 1 MiB: the reset alone is timed, in batches
/// of `RESETS_PER_BATCH` arenas (timing each reset on its own measures the clock, which
/// costs more than a reset). The arenas are filled with writes at set-up, so their memory
/// is really used and ours has reached its steady state (the previous cycle's usage stays
/// committed); each batch's untimed fill only allocates.
fn reset(settings: Settings, progress: &mut Progress) -> Row {
    progress.step("arena: reset after 1 MiB");
    let piece = Layout::from_size_align(64 << 10, 8).expect("layout");
    let fill_with_writes = |alloc: &dyn Fn(Layout) -> NonNull<u8>| {
        for _ in 0..FILL_PIECES {
            // SAFETY: a fresh block of `piece.size()` bytes.
            unsafe { alloc(piece).write_bytes(0x5A, piece.size()) };
        }
    };
    let mut arenas: Vec<Arena> = (0..RESETS_PER_BATCH).map(|_| Arena::new()).collect();
    for arena in &mut arenas {
        for _ in 0..2 {
            fill_with_writes(&|layout| arena.alloc_layout(layout));
            arena.reset();
        }
    }
    let mut bumps: Vec<bumpalo::Bump> = (0..RESETS_PER_BATCH)
        .map(|_| bumpalo::Bump::new())
        .collect();
    for bump in &mut bumps {
        // bumpalo keeps its newest chunk on reset: a few cycles make it hold the fill.
        for _ in 0..4 {
            fill_with_writes(&|layout| bump.alloc_layout(layout));
            bump.reset();
        }
    }
    let mut ours = |n: u64| {
        timed_resets(
            n,
            &mut arenas,
            |arena| {
                for _ in 0..FILL_PIECES {
                    black_box(arena.alloc_layout(piece));
                }
            },
            |arena| arena.reset(),
        )
    };
    let mut theirs = |n: u64| {
        timed_resets(
            n,
            &mut bumps,
            |bump| {
                for _ in 0..FILL_PIECES {
                    black_box(bump.alloc_layout(piece));
                }
            },
            |bump| bump.reset(),
        )
    };
    let figures = measure_interleaved(settings, &mut [&mut ours, &mut theirs]);
    Row::new(
        "reset of an arena that used 1 MiB",
        named(&["Arena", "bumpalo"], figures),
    )
    .target(Target::at_most_best(1.0))
}

/// About 8.9 KB in five allocations: what hyper makes per keep-alive request.
const REQUEST_SIZES: [usize; 5] = [4096, 4096, 400, 256, 64];

/// Runs `$alloc` for each of the five layouts, writes a byte into each block, hides the
/// blocks from the optimiser, then runs `$free` on each, as straight-line code: the same
/// harness as `arena-alloc/benches/request_cycle.rs`, for ours and for `System` alike.
/// (Mapping over the layouts with a closure and freeing through an iterator, as this
/// row did before, added about as much time as the whole arena cycle costs, the same
/// for both sides, which pushed the ratio towards 1.)
macro_rules! five_allocations {
    ($layouts:expr, |$layout:ident| $alloc:expr, |$block:ident, $free_layout:ident| $free:expr) => {{
        let [l0, l1, l2, l3, l4] = $layouts;
        let blocks = [
            {
                let $layout = l0;
                $alloc
            },
            {
                let $layout = l1;
                $alloc
            },
            {
                let $layout = l2;
                $alloc
            },
            {
                let $layout = l3;
                $alloc
            },
            {
                let $layout = l4;
                $alloc
            },
        ];
        for block in blocks {
            // SAFETY: every block is at least one byte, fresh and writable.
            unsafe { block.write(1) };
        }
        let [b0, b1, b2, b3, b4] = black_box(blocks);
        for ($block, $free_layout) in [(b0, l0), (b1, l1), (b2, l2), (b3, l3), (b4, l4)] {
            $free;
        }
    }};
}

/// One allocation from a leased arena, behind the same non-inlined boundary as the
/// heaps' `GlobalAlloc` entry points ([`Shim`]).
#[inline(never)]
fn lease_alloc(arena: &PooledArena<'_>, layout: Layout) -> *mut u8 {
    arena.alloc_layout(layout).as_ptr()
}

/// One free into a leased arena, behind the same boundary.
///
/// # Safety
/// `block` was allocated from `arena` with `layout` and is freed once.
#[inline(never)]
unsafe fn lease_dealloc(arena: &PooledArena<'_>, block: *mut u8, layout: Layout) {
    // SAFETY: the caller's obligations: a live block of this arena with this layout,
    // non-null since it came from `alloc_layout`.
    unsafe { arena.dealloc(NonNull::new_unchecked(block), layout) }
}

/// The five allocations and frees of a request on a heap, through its shim.
fn heap_cycles<A: GlobalAlloc>(heap: &Shim<A>, layouts: [Layout; 5], n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        five_allocations!(
            layouts,
            |layout| {
                // SAFETY: a non-zero layout; freed below.
                let block = unsafe { heap.alloc(layout) };
                assert!(!block.is_null(), "out of memory");
                block
            },
            // SAFETY: allocated above with this layout.
            |block, layout| unsafe { heap.dealloc(block, layout) }
        );
    }
    start.elapsed()
}

/// Acquire an arena from a pool, make the five allocations with a write each, free them,
/// release the arena; against the same allocations and frees on mimalloc, jemalloc and
/// `System`, with a second thread alive. Every allocation and free, ours included, is
/// one non-inlined call.
fn request_cycle(settings: Settings, progress: &mut Progress) -> Result<Row, String> {
    progress.step("arena: request cycle (acquire, 5 allocations of 9 KB, release)");
    let _second = SecondThread::start();
    let layouts = REQUEST_SIZES.map(|size| Layout::from_size_align(size, 16).expect("layout"));
    let pool = ArenaPool::new(PoolConfig::new(64, 1 << 20)).map_err(|error| error.to_string())?;
    let mut ours = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let lease = pool.try_acquire().expect("a free arena");
            five_allocations!(
                layouts,
                |layout| lease_alloc(&lease, layout),
                // SAFETY: allocated above from this arena with this layout.
                |block, layout| unsafe { lease_dealloc(&lease, block, layout) }
            );
            drop(lease);
        }
        start.elapsed()
    };
    let mut mimalloc = |n: u64| heap_cycles(&Shim(MiMalloc), layouts, n);
    let mut jemalloc = |n: u64| heap_cycles(&Shim(Jemalloc), layouts, n);
    let mut system = |n: u64| heap_cycles(&Shim(System), layouts, n);
    let figures = measure_interleaved(
        settings,
        &mut [&mut ours, &mut mimalloc, &mut jemalloc, &mut system],
    );
    Ok(Row::new(
        "request cycle: acquire, 5 allocations (8.9 KB) and frees, release",
        named(&["ArenaPool", "mimalloc", "jemalloc", "System"], figures),
    )
    .target(Target::at_most_best(0.3)))
}

/// Runs the group.
pub fn run(
    settings: Settings,
    _machine: &Machine,
    progress: &mut Progress,
) -> Result<Page, String> {
    let mut rows = vec![small_allocations(settings, progress)];
    rows.extend(vector_growth(settings, progress));
    rows.push(reset(settings, progress));
    rows.push(request_cycle(settings, progress)?);
    Ok(Page {
        name: "arena".into(),
        title: "pagekeep-arena: per-request arenas".into(),
        introduction: "Bump allocation, growth of the latest allocation in place, reset, and \
            the whole allocation cycle of a request (lease an arena from a pool, allocate, \
            release), against bumpalo, typed-arena, and mimalloc, jemalloc and the system \
            allocator. Peers run in the same rounds as ours, in rotated order; the system \
            allocator with a second thread alive. Call paths: the arenas (ours, bumpalo, \
            typed-arena) are called through their own APIs, inlined alike, as a program \
            uses them; in the request cycle every allocation and free, ours included, is \
            one non-inlined call (the heaps through the `GlobalAlloc` shim a \
            `#[global_allocator]` amounts to). Every ratio is against the strongest peer \
            of the row. The request cycle's absolute target is under 100 ns."
            .into(),
        sections: vec![Section {
            title: "Arena workloads".into(),
            description: "The small-allocation row resets every 1024 allocations (typed-arena, \
                which has no reset, gets a fresh arena instead). The first vector row reserves \
                room for exactly one more element before each push on ours, so every push \
                reallocates the latest block and ours grows it in place; its peers are \
                bumpalo doing the same (it copies the whole vector each time, O(n) per \
                push) and, the stronger way to do the job, bumpalo's and `std`'s ordinary \
                push, which doubles the capacity. The second vector row has every vector \
                doubling. The reset row times only the reset, in batches of 64 arenas that have each just allocated 1 MiB (the clock is read once per batch)."
                .into(),
            unit: "ns per operation".into(),
            rows,
            line_plot: None,
        }],
    })
}
