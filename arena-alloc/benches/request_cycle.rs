//! A request's allocation cycle: acquire an arena from a pool, make 5 allocations of
//! about 9 KB in all (what hyper makes per keep-alive request), free them, release the
//! arena; against the same 5 allocations and frees on the system allocator, measured
//! with a second thread alive (glibc takes a single-thread shortcut otherwise).
//!
//! A second group makes 20 small blocks (16 to 320 bytes) through the router, frees 18
//! of them while the arena is entered and 2 after leaving it (as an executor drops a
//! response outside its handler's arena), then releases the lease: the release settles
//! the 2 outside frees, against the same 20 on the system allocator.
//!
//! `cargo bench -p pagekeep-arena --bench request_cycle -- --warm-up-time 1 --measurement-time 3`
//!
//! The `reproduce` row of the same name (`alloc-test/src/bin/reproduce/groups/arena.rs`)
//! uses the same straight-line harness and pool configuration, so the two agree up to
//! noise: criterion runs the contenders one after the other, `reproduce` interleaves
//! their samples.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::Criterion;
use pagekeep_arena::{ArenaPool, ArenaRouter, PoolConfig};

#[global_allocator]
static GLOBAL: ArenaRouter<System> = ArenaRouter::new(System);

/// About 8.9 KB in 5 requests.
const SIZES: [usize; 5] = [4096, 4096, 400, 256, 64];

fn layouts() -> [Layout; 5] {
    SIZES.map(|size| Layout::from_size_align(size, 16).unwrap())
}

/// Runs `$alloc` for each of the five layouts, writes a byte into each block, hides the
/// blocks from the optimiser, then runs `$free` on each (straight-line code, so the
/// harness adds nothing but the calls being measured).
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

fn request_cycle(c: &mut Criterion) {
    let layouts = layouts();
    let pool = ArenaPool::new(PoolConfig::new(64, 1 << 20))
        .unwrap()
        .into_static()
        .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // A second thread stays alive for the whole run (glibc's single-thread shortcut).
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(std::time::Duration::from_millis(50));
            }
        });
        let mut group = c.benchmark_group("request_cycle_5_allocs_9KB");
        group.bench_function("system (alloc 5, free 5)", |b| {
            b.iter(|| {
                five_allocations!(
                    layouts,
                    |layout| {
                        // SAFETY: a non-zero layout; freed below.
                        let block = unsafe { System.alloc(layout) };
                        assert!(!block.is_null(), "out of memory");
                        block
                    },
                    // SAFETY: allocated above with this layout.
                    |block, layout| unsafe { System.dealloc(block, layout) }
                )
            })
        });
        group.bench_function("arena pool (acquire, 5 allocs + frees, release)", |b| {
            b.iter(|| {
                let lease = pool.try_acquire().unwrap();
                five_allocations!(
                    layouts,
                    |layout| lease.alloc_layout(layout).as_ptr(),
                    // SAFETY: allocated above from this arena with this layout.
                    |block, layout| unsafe {
                        lease.dealloc(std::ptr::NonNull::new_unchecked(block), layout)
                    }
                );
                drop(lease);
            })
        });
        group.bench_function(
            "arena pool routed (acquire, enter, 5 global allocs + frees, release)",
            |b| {
                b.iter(|| {
                    let guard = pool.try_acquire().unwrap().enter();
                    five_allocations!(
                        layouts,
                        |layout| {
                            // SAFETY: a non-zero layout; freed below.
                            let block = unsafe { std::alloc::alloc(layout) };
                            assert!(!block.is_null(), "out of memory");
                            block
                        },
                        // SAFETY: allocated above with this layout.
                        |block, layout| unsafe { std::alloc::dealloc(block, layout) }
                    );
                    drop(guard);
                })
            },
        );
        group.finish();
        stop.store(true, Ordering::Relaxed);
    });
}

/// 20 small blocks, 3.2 KB in all: a handler's strings, boxes and small vectors.
const SMALL_SIZES: [usize; 20] = [
    16, 24, 32, 48, 64, 16, 96, 128, 24, 40, 320, 56, 16, 200, 32, 72, 160, 24, 48, 256,
];

/// Of the 20 small blocks, how many are freed while the arena is entered.
const FREED_INSIDE: usize = 18;

fn small_layouts() -> [Layout; 20] {
    SMALL_SIZES.map(|size| Layout::from_size_align(size, 8).unwrap())
}

/// Allocates the 20 small blocks through the global allocator, writes a byte into each
/// and hides them from the optimiser.
fn alloc_small(layouts: &[Layout; 20]) -> [*mut u8; 20] {
    let blocks = layouts.map(|layout| {
        // SAFETY: a non-zero layout; freed by the caller.
        let block = unsafe { std::alloc::alloc(layout) };
        assert!(!block.is_null(), "out of memory");
        // SAFETY: fresh and at least one byte.
        unsafe { block.write(1) };
        block
    });
    black_box(blocks)
}

/// Frees `blocks[range]` through the global allocator.
///
/// # Safety
/// - `blocks` came from [`alloc_small`] with `layouts`, and each is freed once.
unsafe fn free_small(
    blocks: &[*mut u8; 20],
    layouts: &[Layout; 20],
    range: std::ops::Range<usize>,
) {
    for index in range {
        // SAFETY: forwarded from the caller.
        unsafe { std::alloc::dealloc(blocks[index], layouts[index]) };
    }
}

fn request_cycle_small(c: &mut Criterion) {
    let layouts = small_layouts();
    let pool = ArenaPool::new(PoolConfig::new(64, 1 << 20))
        .unwrap()
        .into_static()
        .unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // A second thread stays alive for the whole run (glibc's single-thread shortcut).
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(std::time::Duration::from_millis(50));
            }
        });
        let mut group = c.benchmark_group("request_cycle_20_small_allocs");
        group.bench_function("system (alloc 20, free 20)", |b| {
            b.iter(|| {
                let blocks = alloc_small(&layouts);
                // SAFETY: allocated above with these layouts, each freed once.
                unsafe { free_small(&blocks, &layouts, 0..20) };
            })
        });
        group.bench_function(
            "arena pool routed (acquire, enter, 20 global allocs, 18 frees inside, exit, 2 frees outside, release)",
            |b| {
                b.iter(|| {
                    let guard = pool.try_acquire().unwrap().enter();
                    let blocks = alloc_small(&layouts);
                    // SAFETY: allocated above with these layouts, each freed once.
                    unsafe { free_small(&blocks, &layouts, 0..FREED_INSIDE) };
                    let lease = guard.exit();
                    // SAFETY: as above.
                    unsafe { free_small(&blocks, &layouts, FREED_INSIDE..20) };
                    drop(lease);
                })
            },
        );
        group.finish();
        stop.store(true, Ordering::Relaxed);
    });
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    request_cycle(&mut criterion);
    request_cycle_small(&mut criterion);
    criterion.final_summary();
}
