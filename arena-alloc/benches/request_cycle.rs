//! A request's allocation cycle: acquire an arena from a pool, make 5 allocations of
//! about 9 KB in all (what hyper makes per keep-alive request), free them, release the
//! arena; against the same 5 allocations and frees on the system allocator, measured
//! with a second thread alive (glibc takes a single-thread shortcut otherwise).
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

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    request_cycle(&mut criterion);
    criterion.final_summary();
}
