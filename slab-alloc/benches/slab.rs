//! Criterion benchmarks of pagekeep-slab against System (glibc, with a second thread alive),
//! mimalloc and jemalloc, each called through `GlobalAlloc` directly.
//!
//! ```sh
//! cargo bench -p pagekeep-slab --bench slab -- --warm-up-time 1 --measurement-time 3
//! ```

use core::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use pagekeep_slab::{ObjectCache, SlabHeap};

static SLAB: SlabHeap = SlabHeap::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
// jemalloc is built for Unix only (its build needs a Unix shell and make).
#[cfg(unix)]
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static SYSTEM: std::alloc::System = std::alloc::System;

/// The allocators under comparison.
fn allocators() -> Vec<(&'static str, &'static (dyn GlobalAlloc + Sync))> {
    vec![
        ("slab", &SLAB),
        ("mimalloc", &MIMALLOC),
        #[cfg(unix)]
        ("jemalloc", &JEMALLOC),
        ("system", &SYSTEM),
    ]
}

/// Keeps a second thread alive for the whole run: glibc's malloc takes a single-thread
/// shortcut otherwise.
fn keep_second_thread_alive() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        thread::spawn(|| {
            loop {
                thread::park();
            }
        });
    });
}

const SMALL: Layout = match Layout::from_size_align(64, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("bad layout"),
};

/// Calls `alloc` through the static's real type, so the fast path can inline.
macro_rules! each_allocator {
    ($body:ident, $($arg:expr),*) => {
        $body("slab", &SLAB, $($arg),*);
        $body("mimalloc", &MIMALLOC, $($arg),*);
        #[cfg(unix)]
        $body("jemalloc", &JEMALLOC, $($arg),*);
        $body("system", &SYSTEM, $($arg),*);
    };
}

fn pair_64(c: &mut Criterion) {
    keep_second_thread_alive();
    let mut group = c.benchmark_group("pair_64B");
    fn one<A: GlobalAlloc>(
        name: &str,
        allocator: &'static A,
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ) {
        group.bench_function(name, |b| {
            b.iter(|| {
                // SAFETY: non-zero size; freed at once with the same layout.
                unsafe {
                    let block = allocator.alloc(SMALL);
                    black_box(block).write(1);
                    allocator.dealloc(block, SMALL);
                }
            })
        });
    }
    each_allocator!(one, &mut group);
    let cache = ObjectCache::with_constructor(|| [0u8; 64]).unwrap();
    group.bench_function("object_cache", |b| {
        b.iter(|| {
            let mut object = cache.get();
            black_box(&mut object[..])[0] = 1;
            drop(object);
        })
    });
    let plain = ObjectCache::<[u8; 64]>::new().unwrap();
    group.bench_function("object_cache_plain_insert", |b| {
        b.iter(|| {
            let object = plain.insert([1u8; 64]);
            drop(black_box(object));
        })
    });
    // The workload of `reproduce` (slab group, "ObjectCache<[u64; 8]> insert + drop").
    let words = ObjectCache::<[u64; 8]>::new().unwrap();
    group.bench_function("object_cache_insert_write_u64x8", |b| {
        b.iter(|| {
            let mut object = words.insert([0; 8]);
            object[0] = 1;
            drop(black_box(object));
        })
    });
    group.finish();
}

fn batches(c: &mut Criterion) {
    keep_second_thread_alive();
    for count in [1_000usize, 100_000] {
        let mut group = c.benchmark_group(format!("batch_{count}"));
        group.throughput(Throughput::Elements(count as u64));
        fn one<A: GlobalAlloc>(
            name: &str,
            allocator: &'static A,
            group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
            count: usize,
        ) {
            let mut blocks: Vec<*mut u8> = Vec::with_capacity(count);
            group.bench_with_input(BenchmarkId::from_parameter(name), &count, |b, &count| {
                b.iter(|| {
                    for _ in 0..count {
                        // SAFETY: non-zero size.
                        let block = unsafe { allocator.alloc(SMALL) };
                        // SAFETY: a fresh 64-byte block.
                        unsafe { block.write(1) };
                        blocks.push(block);
                    }
                    for block in blocks.drain(..) {
                        // SAFETY: allocated above with this layout, freed once.
                        unsafe { allocator.dealloc(block, SMALL) };
                    }
                })
            });
        }
        each_allocator!(one, &mut group, count);
        group.finish();
    }
}

/// A batch of pointers moving between threads.
struct Batch(Vec<*mut u8>);
// SAFETY: the blocks are owned by whoever holds the batch.
unsafe impl Send for Batch {}

fn cross_thread(c: &mut Criterion) {
    keep_second_thread_alive();
    const BATCH: usize = 1000;
    let mut group = c.benchmark_group("cross_thread_free");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, allocator) in allocators() {
        // A consumer thread frees what the benchmark thread allocates; batches go back and
        // forth through two bounded channels (no allocation per message).
        let (to_consumer, batches) = mpsc::sync_channel::<Option<Batch>>(2);
        let (to_producer, empties) = mpsc::sync_channel::<Batch>(2);
        let consumer = thread::spawn(move || {
            while let Ok(Some(mut batch)) = batches.recv() {
                for block in batch.0.drain(..) {
                    // SAFETY: allocated by the producer with this layout, freed once.
                    unsafe { allocator.dealloc(block, SMALL) };
                }
                to_producer.send(batch).unwrap();
            }
        });
        let mut spare = vec![
            Batch(Vec::with_capacity(BATCH)),
            Batch(Vec::with_capacity(BATCH)),
        ];
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut batch = spare.pop().unwrap_or_else(|| empties.recv().unwrap());
                for _ in 0..BATCH {
                    // SAFETY: non-zero size.
                    let block = unsafe { allocator.alloc(SMALL) };
                    // SAFETY: fresh block.
                    unsafe { block.write(1) };
                    batch.0.push(block);
                }
                to_consumer.send(Some(batch)).unwrap();
            })
        });
        to_consumer.send(None).unwrap();
        consumer.join().unwrap();
    }
    group.finish();
}

/// CPU time the calling thread has used.
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; the clock exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// Off Unix, wall time since the first call stands in for the thread's CPU time (the
/// benchmark's CPU figures are measured on Linux).
#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// What [`churn`] reports.
#[derive(Clone, Copy)]
enum Clock {
    /// Wall time from the start of all threads to the end of all.
    Wall,
    /// The largest CPU time of one thread: the wall time the run would take with a core
    /// per thread, whatever else the machine runs (it still counts the cost of cache
    /// lines moving between cores, and of lock spinning).
    ThreadCpu,
}

/// `rounds` batches of 100 allocations then 100 frees, on `threads` threads at once;
/// returns the time `clock` measures.
fn churn(
    allocator: &'static (dyn GlobalAlloc + Sync),
    threads: usize,
    rounds: u64,
    clock: Clock,
) -> Duration {
    let barrier = std::sync::Barrier::new(threads + 1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut blocks = [core::ptr::null_mut::<u8>(); 100];
                    barrier.wait();
                    let cpu_start = thread_cpu_time();
                    for _ in 0..rounds {
                        for (i, slot) in blocks.iter_mut().enumerate() {
                            let layout = Layout::from_size_align(16 + (i % 8) * 16, 8).unwrap();
                            // SAFETY: non-zero size.
                            *slot = unsafe { allocator.alloc(layout) };
                        }
                        for (i, slot) in blocks.iter().enumerate() {
                            let layout = Layout::from_size_align(16 + (i % 8) * 16, 8).unwrap();
                            // SAFETY: allocated above with this layout.
                            unsafe { allocator.dealloc(*slot, layout) };
                        }
                    }
                    let cpu = thread_cpu_time() - cpu_start;
                    barrier.wait();
                    cpu
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        let elapsed = start.elapsed();
        let cpu = handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .max()
            .unwrap_or_default();
        match clock {
            Clock::Wall => elapsed,
            Clock::ThreadCpu => cpu,
        }
    })
}

/// Two-thread scaling, timed by the wall clock (`churn_batches_of_100`) and by the CPU
/// time of the busiest thread (`churn_batches_of_100_cpu`). On a machine shared with
/// other work the wall-clock figure cannot reach 2x (a second thread does not get a core
/// of its own); the CPU-time figure falls short of 2x only by what the threads cost each
/// other (shared cache lines, lock contention).
fn two_threads_churning(c: &mut Criterion) {
    keep_second_thread_alive();
    for (group_name, clock) in [
        ("churn_batches_of_100", Clock::Wall),
        ("churn_batches_of_100_cpu", Clock::ThreadCpu),
    ] {
        let mut group = c.benchmark_group(group_name);
        for threads in [1usize, 2] {
            // Throughput: operations of all threads (one allocation + one free = 2).
            group.throughput(Throughput::Elements(200 * threads as u64));
            for (name, allocator) in allocators() {
                group.bench_function(BenchmarkId::new(name, format!("{threads}_threads")), |b| {
                    b.iter_custom(|iters| churn(allocator, threads, iters, clock))
                });
            }
        }
        group.finish();
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    pair_64(&mut criterion);
    batches(&mut criterion);
    cross_thread(&mut criterion);
    two_threads_churning(&mut criterion);
    criterion.final_summary();
}
