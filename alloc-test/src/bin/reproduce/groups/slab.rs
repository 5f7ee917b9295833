//! slab: object caches and `SlabHeap` against mimalloc, jemalloc and the system allocator:
//! alloc+free pairs, batches, cross-thread frees, two-thread scaling, fragmentation,
//! workloads written after the classic allocator benchmarks (larson, xmalloc-test,
//! cache-scratch; named for what they do, since they differ from the originals), thread
//! churn and a mixed size distribution; and the same pairs, batches, cross-thread frees
//! and server workloads through the C interface (`c_interface`).

/// The workload `new(&heap)` for each heap of [`HEAP_NAMES`], in that order: the tuple
/// [`measure_workloads`] takes.
macro_rules! on_every_heap {
    ($new:path) => {
        ($new(&HEAP), $new(&MIMALLOC), $new(&JEMALLOC), $new(&SYSTEM))
    };
}

/// A test that a workload's checks pass on `System` and fail on an allocator that hands
/// a live block out again, so a broken allocator cannot post a figure.
#[cfg(test)]
macro_rules! checks_catch_a_block_handed_out_twice {
    ($new:path) => {
        checks_catch_a_block_handed_out_twice!($new, 1);
    };
    ($new:path, $operations:expr) => {
        #[test]
        fn checks_pass_on_system_and_catch_a_block_handed_out_twice() {
            let mut good = $new(&std::alloc::System);
            good.run($operations);
            assert_eq!(good.finish(), Ok(()));
            let broken = super::super::broken::SameBlock::new();
            let mut bad = $new(&broken);
            bad.run($operations);
            assert!(bad.finish().is_err());
        }
    };
}

mod async_heap;
#[cfg(test)]
mod broken;
mod c_interface;
pub mod cache_scratch;
pub mod freed_peak;
mod larson;
mod random;
mod size_mix;
mod tagged;
mod thread_churn;
mod xmalloc;

use core::alloc::{GlobalAlloc, Layout};
use std::alloc::System;
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;
use pagekeep_alloc_test::bench::boundary::Shim;
use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::{
    Measurement, Settings, measure_interleaved, rotated_order,
};
use pagekeep_alloc_test::bench::report::{Better, Page, Row, Section, Target};
use pagekeep_slab::{ObjectCache, SlabHeap};
use tikv_jemallocator::Jemalloc;

use super::SecondThread;
use crate::progress::Progress;

/// Progress steps of this group.
pub const STEPS: usize = 13 + async_heap::STEPS + c_interface::STEPS;

/// Every heap of the Rust rows behind the same non-inlined `GlobalAlloc` boundary
/// ([`Shim`]), ours included: the boundary a `#[global_allocator]` is called through.
static HEAP: Shim<SlabHeap> = Shim(SlabHeap::new());
/// mimalloc behind the same boundary.
static MIMALLOC: Shim<MiMalloc> = Shim(MiMalloc);
/// jemalloc behind the same boundary.
static JEMALLOC: Shim<Jemalloc> = Shim(Jemalloc);
/// glibc's malloc behind the same boundary.
static SYSTEM: Shim<System> = Shim(System);

/// The names of the general-purpose allocators compared, ours first, in the order of
/// [`heaps`].
const HEAP_NAMES: [&str; 4] = ["SlabHeap", "mimalloc", "jemalloc", "System"];

/// The general-purpose allocators compared, ours first.
fn heaps() -> [(&'static str, &'static (dyn GlobalAlloc + Sync)); 4] {
    [
        ("SlabHeap", &HEAP),
        ("mimalloc", &MIMALLOC),
        ("jemalloc", &JEMALLOC),
        ("System", &SYSTEM),
    ]
}

const SMALL: Layout = match Layout::from_size_align(64, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("a valid layout"),
};

fn pair<A: GlobalAlloc>(allocator: &A, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: a non-zero layout; the block is written and freed at once.
        unsafe {
            let block = allocator.alloc(SMALL);
            block.write(1);
            allocator.dealloc(black_box(block), SMALL);
        }
    }
    start.elapsed()
}

fn batch<A: GlobalAlloc + ?Sized>(
    allocator: &A,
    n: u64,
    size: usize,
    blocks: &mut Vec<*mut u8>,
) -> Duration {
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        blocks.clear();
        for _ in 0..size {
            // SAFETY: a non-zero layout; freed below.
            let block = unsafe { allocator.alloc(SMALL) };
            // SAFETY: a fresh 64-byte block.
            unsafe { block.write(1) };
            blocks.push(block);
        }
        for &block in blocks.iter() {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { allocator.dealloc(block, SMALL) };
        }
        done += 2 * size as u64;
    }
    // Whole batches only: scale to the `n` operations asked for.
    start.elapsed().mul_f64(n as f64 / done as f64)
}

/// A workload run on one allocator, which keeps its own state (live blocks, counters)
/// from one call to the next.
trait Workload {
    /// Performs `operations` operations (or whole rounds scaled to that many) and
    /// returns how long they took, set-up left out.
    fn run(&mut self, operations: u64) -> Duration;

    /// Frees what is still live and reports what the workload's checks found.
    ///
    /// # Errors
    /// A check failed: contents not read back, counts that do not add up.
    fn finish(self) -> Result<(), String>;
}

/// Measures one workload on the four heaps of [`HEAP_NAMES`] (in that order), with their
/// samples interleaved, then finishes each.
///
/// # Errors
/// A heap failed the workload's checks: its figure cannot be trusted.
fn measure_workloads<A: Workload, B: Workload, C: Workload, D: Workload>(
    settings: Settings,
    (mut a, mut b, mut c, mut d): (A, B, C, D),
) -> Result<Vec<Measurement>, String> {
    let figures = measure_interleaved(
        settings,
        &mut [
            &mut |n| a.run(n),
            &mut |n| b.run(n),
            &mut |n| c.run(n),
            &mut |n| d.run(n),
        ],
    );
    let verdicts = [a.finish(), b.finish(), c.finish(), d.finish()];
    for (name, verdict) in HEAP_NAMES.iter().zip(verdicts) {
        verdict.map_err(|error| format!("{name} failed the workload's checks: {error}"))?;
    }
    Ok(figures)
}

fn row_of(name: &str, figures: &[Measurement], names: &[&str]) -> Row {
    Row::new(name, super::named(names, figures.to_vec()))
}

/// An object cache insert, behind the same non-inlined boundary as the heaps.
#[inline(never)]
fn cache_insert(
    cache: &ObjectCache<[u64; 8]>,
    value: [u64; 8],
) -> pagekeep_slab::ObjectBox<'_, [u64; 8]> {
    cache.insert(value)
}

/// An object cache drop (the object goes back to the cache), behind the same boundary.
#[inline(never)]
fn cache_drop(object: pagekeep_slab::ObjectBox<'_, [u64; 8]>) {
    drop(object);
}

fn pairs(settings: Settings, progress: &mut Progress) -> Vec<Row> {
    progress.step("slab: 64-byte alloc+free pairs");
    let cache: ObjectCache<[u64; 8]> = ObjectCache::new().expect("an object cache");
    let mut object_cache = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            let mut object = cache_insert(&cache, [0; 8]);
            object[0] = 1;
            cache_drop(black_box(object));
        }
        start.elapsed()
    };
    // Each through its non-inlined shim, as a `#[global_allocator]` would be.
    let mut ours = |n| pair(&HEAP, n);
    let mut mimalloc = |n| pair(&MIMALLOC, n);
    let mut jemalloc = |n| pair(&JEMALLOC, n);
    let mut glibc = |n| pair(&SYSTEM, n);
    let figures = measure_interleaved(
        settings,
        &mut [
            &mut object_cache,
            &mut ours,
            &mut mimalloc,
            &mut jemalloc,
            &mut glibc,
        ],
    );
    let peers = ["mimalloc", "jemalloc", "System"];
    let object_row = row_of(
        "ObjectCache<[u64; 8]> insert + drop",
        &[
            figures[0].clone(),
            figures[2].clone(),
            figures[3].clone(),
            figures[4].clone(),
        ],
        &["ObjectCache", peers[0], peers[1], peers[2]],
    )
    .target(Target::at_most_best(0.8));
    let heap_row = row_of(
        "SlabHeap alloc + free, 64 B",
        &figures[1..],
        &["SlabHeap", peers[0], peers[1], peers[2]],
    )
    .target(Target::at_most_best(1.0));
    vec![object_row, heap_row]
}

fn batches(settings: Settings, progress: &mut Progress) -> Vec<Row> {
    let mut rows = Vec::new();
    for size in [1_000usize, 100_000] {
        progress.step(&format!("slab: batches of {size}"));
        let mut buffers: Vec<Vec<*mut u8>> = (0..4).map(|_| Vec::with_capacity(size)).collect();
        let [b0, b1, b2, b3] = &mut buffers[..] else {
            unreachable!("four buffers")
        };
        let mut ours = |n| batch(&HEAP, n, size, b0);
        let mut mimalloc = |n| batch(&MIMALLOC, n, size, b1);
        let mut jemalloc = |n| batch(&JEMALLOC, n, size, b2);
        let mut glibc = |n| batch(&SYSTEM, n, size, b3);
        let figures = measure_interleaved(
            settings,
            &mut [&mut ours, &mut mimalloc, &mut jemalloc, &mut glibc],
        );
        rows.push(
            row_of(
                &format!("allocate {size} then free {size}, 64 B (per operation)"),
                &figures,
                &["SlabHeap", "mimalloc", "jemalloc", "System"],
            )
            .target(Target::at_most_best(1.0)),
        );
    }
    rows
}

/// A pointer handed to another thread.
struct Sent(NonNull<u8>);
// SAFETY: the block is owned by one thread at a time; the allocators allow remote frees.
unsafe impl Send for Sent {}

/// One thread allocates `n` blocks in batches of 1000, another frees them.
fn cross_thread<A: GlobalAlloc + Sync>(allocator: &A, n: u64) -> Duration {
    let (sender, receiver) = mpsc::sync_channel::<Vec<Sent>>(4);
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for batch in receiver {
                for Sent(block) in batch {
                    // SAFETY: allocated by the other thread with this layout, freed once.
                    unsafe { allocator.dealloc(block.as_ptr(), SMALL) };
                }
            }
        });
        let mut left = n;
        while left > 0 {
            let count = left.min(1000);
            let batch = (0..count)
                .map(|_| {
                    // SAFETY: a non-zero layout; freed by the other thread.
                    let block = unsafe { allocator.alloc(SMALL) };
                    Sent(NonNull::new(block).expect("memory"))
                })
                .collect();
            sender.send(batch).expect("the freeing thread is alive");
            left -= count;
        }
        drop(sender);
    });
    start.elapsed()
}

fn cross_thread_row(settings: Settings, machine: &Machine, progress: &mut Progress) -> Row {
    progress.step("slab: cross-thread free");
    let mut ours = |n| cross_thread(&HEAP, n);
    let mut mimalloc = |n| cross_thread(&MIMALLOC, n);
    let mut jemalloc = |n| cross_thread(&JEMALLOC, n);
    let mut glibc = |n| cross_thread(&SYSTEM, n);
    let settings = Settings {
        sample_time: settings.sample_time * 5,
        ..settings
    };
    let figures = measure_interleaved(
        settings,
        &mut [&mut ours, &mut mimalloc, &mut jemalloc, &mut glibc],
    );
    row_of(
        "one thread allocates, another frees (per object)",
        &figures,
        &["SlabHeap", "mimalloc", "jemalloc", "System"],
    )
    .target(Target::at_most_best(1.0))
    .multi_threaded(machine)
}

/// `threads` threads each doing batches of 100 alloc/free pairs for `duration`; returns
/// millions of operations per second.
fn churn_throughput(
    allocator: &(dyn GlobalAlloc + Sync),
    threads: usize,
    duration: Duration,
) -> f64 {
    let barrier = Barrier::new(threads);
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut blocks = Vec::with_capacity(100);
                    let mut operations = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    while start.elapsed() < duration {
                        for _ in 0..20 {
                            batch(allocator, 200, 100, &mut blocks);
                            operations += 200;
                        }
                    }
                    operations
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(0))
            .sum()
    });
    total as f64 / duration.as_secs_f64() / 1e6
}

/// Rounds of the scaling row: 5 in a quick run, 17 in a full one.
fn scaling_rounds(settings: Settings) -> usize {
    (settings.samples / 3) | 1
}

fn scaling(settings: Settings, machine: &Machine, progress: &mut Progress) -> Row {
    progress.step("slab: one and two threads churning");
    let duration = settings.sample_time * 25;
    let heaps = heaps();
    let rounds = scaling_rounds(settings);
    let mut ratios = vec![Vec::with_capacity(rounds); heaps.len()];
    // Rounds of every heap, in rotated order, as `measure_interleaved` does: a change of
    // load shifts all heaps alike instead of whichever ran in the busy moment. Each heap
    // gets one ratio per round, pushed in round order.
    for round in 0..rounds {
        for index in rotated_order(round, heaps.len()) {
            let allocator = heaps[index].1;
            let one = churn_throughput(allocator, 1, duration);
            let two = churn_throughput(allocator, 2, duration);
            ratios[index].push(two / one);
        }
    }
    let results = heaps
        .iter()
        .zip(ratios)
        .map(|((name, _), ratios)| (name.to_string(), Measurement::from_rounds(ratios, 1)))
        .collect();
    Row::new(
        "two threads churning: throughput of two threads / one",
        results,
    )
    .better(Better::Higher)
    .target(Target::at_least_value(1.9))
    .multi_threaded(machine)
}

/// Runs the fragmentation workload in a child process (so resident memory is the
/// allocator's alone) and returns resident bytes / live bytes.
fn fragmentation(progress: &mut Progress) -> Result<Row, String> {
    progress.step("slab: fragmentation after freeing 90% of 1M objects");
    let mut results = Vec::new();
    for (name, _) in heaps() {
        let output =
            std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .args(["--fragmentation-child", name])
                .output()
                .map_err(|error| format!("cannot run the fragmentation child: {error}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let ratio: f64 = text.trim().parse().map_err(|_| {
            format!(
                "fragmentation child for {name} printed {text:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        results.push((name.to_string(), Measurement::exact(ratio)));
    }
    Ok(Row::new(
        "resident bytes / live bytes after freeing a random 90% of 1M mixed-size objects",
        results,
    ))
}

/// The child side of [`fragmentation`]: allocates 1M objects of mixed sizes (16 B to
/// 1 KiB) with the named allocator, frees a random 90%, and prints resident growth
/// divided by live bytes.
pub fn fragmentation_child(name: &str) -> Result<(), String> {
    let allocator = heaps()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a)
        .ok_or("unknown allocator")?;
    let resident = || -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    };
    let mut blocks: Vec<(NonNull<u8>, Layout)> = Vec::with_capacity(1_000_000);
    let before = resident();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1_000_000 {
        let size = 16 << (next() % 7); // 16 B .. 1 KiB
        let layout = Layout::from_size_align(size as usize, 8).map_err(|e| e.to_string())?;
        // SAFETY: a non-zero layout; freed below.
        let block = NonNull::new(unsafe { allocator.alloc(layout) }).ok_or("out of memory")?;
        // SAFETY: a fresh block of `size` bytes: touch it as a program would.
        unsafe { block.write_bytes(1, layout.size()) };
        blocks.push((block, layout));
    }
    let mut live = 0usize;
    for (block, layout) in blocks {
        if next() % 10 == 0 {
            // Kept live until the process exits.
            live += layout.size();
        } else {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { allocator.dealloc(block.as_ptr(), layout) };
        }
    }
    let after = resident();
    println!("{:.3}", after.saturating_sub(before) as f64 / live as f64);
    Ok(())
}

/// Runs the group.
pub fn run(settings: Settings, machine: &Machine, progress: &mut Progress) -> Result<Page, String> {
    let _second = SecondThread::start();
    let mut single = pairs(settings, progress);
    single.extend(batches(settings, progress));
    let cross = cross_thread_row(settings, machine, progress);
    let scaled = scaling(settings, machine, progress);
    let memory = vec![fragmentation(progress)?];
    let (freed_peak, freed_peak_plot) = freed_peak::rows(progress)?;
    let throughput = vec![
        larson::row(settings, machine, progress)?,
        xmalloc::row(settings, machine, progress)?,
        size_mix::row(settings, progress)?,
    ];
    let (false_sharing, placement) = cache_scratch::rows(settings, machine, progress)?;
    let churn = thread_churn::row(settings, machine, progress)?;
    let async_sections = async_heap::sections(settings, progress);
    let c_sections = c_interface::sections(c_interface::rows(settings, machine, progress)?);
    let mut page = Page {
        name: "slab".into(),
        title: "pagekeep-slab: object caches and SlabHeap".into(),
        introduction: "Bonwick object caches with per-thread magazines, and SlabHeap, the \
            general-purpose heap built from them, against mimalloc, jemalloc and glibc's \
            malloc (System), in the same rounds (rotated order), with a second thread alive. \
            Two call paths, labelled: every section but the last is the Rust path, where \
            each allocator, ours included, is called through the same `#[inline(never)]` \
            `GlobalAlloc` shim (the boundary a `#[global_allocator]` is reached through; \
            the object cache's insert and drop sit behind non-inlined functions too); the \
            last section, \"C interface\", calls every allocator through `malloc` and \
            `free` (ours through pagekeep-slab-capi's), as C programs and the originals of \
            the ported workloads do. Every ratio is against the strongest peer of its row."
            .into(),
        sections: vec![
            Section {
                title: "One thread".into(),
                description: "Alloc+free pairs of one 64-byte block (LIFO), and batches that \
                    allocate N blocks then free them all."
                    .into(),
                unit: "ns per operation".into(),
                rows: single,
                line_plot: None,
            },
            Section {
                title: "Cross-thread free".into(),
                description: "One thread allocates 64-byte blocks in batches of 1000 and hands \
                    them to a second thread, which frees them."
                    .into(),
                unit: "ns per object".into(),
                rows: vec![cross],
                line_plot: None,
            },
            Section {
                title: "Two-thread scaling".into(),
                description: "Each thread runs batches of 100 allocations and frees of 64 \
                    bytes; the figure is the throughput of two threads divided by that of one \
                    (2.0 is perfect scaling: a figure above 2.0 is noise, more than two cores \
                    can do), median over rounds that run every heap in rotated order, with \
                    the bootstrap interval of ours."
                    .into(),
                unit: "x one thread".into(),
                rows: vec![scaled],
                line_plot: None,
            },
            Section {
                title: "Fragmentation".into(),
                description: "In a child process per allocator: 1M objects of 16 B to 1 KiB \
                    (powers of two), each written, then a random 90% freed. The figure is the \
                    growth of resident memory divided by the bytes still live (1.0 is no \
                    overhead at all)."
                    .into(),
                unit: "resident / live bytes".into(),
                rows: memory,
                line_plot: None,
            },
            Section {
                title: "Memory after a freed peak".into(),
                description: "In a child process per allocator: 400 MiB of 4000-byte blocks, \
                    each written, then all freed; the program then keeps allocating and \
                    freeing batches of 1000 blocks of 64 to 264 bytes. Its resident memory \
                    above the level before the peak is sampled every 50 ms, from just before \
                    the peak to 3 s after the frees: the table gives the first sample at or \
                    after each time, the line plot below the whole series (issue 14's target: \
                    within 10 % of the level before the peak within 1 s). Lower is better."
                    .into(),
                unit: "MiB".into(),
                rows: freed_peak,
                line_plot: Some(freed_peak_plot),
            },
            Section {
                title: "Server workloads".into(),
                description: "Two multi-thread server workloads written after classic \
                    benchmarks but not the originals (their parameters and structure differ, \
                    so they carry their own names): server churn, after larson (Larson & \
                    Krishnan 1998): each of 2 threads replaces random blocks of 16-1024 B in \
                    its own array of 5000; after each round of 50 000 replacements per thread \
                    the arrays pass to newly started threads, so blocks are freed by threads \
                    that did not allocate them (larson itself, as mimalloc-bench runs it: \
                    8-999 B, 500 000 replacements per thread before it starts its \
                    successor, 5 s, no checks); and producer-consumer, \
                    after xmalloc-test (Lever & Boreham 2000): each of 2 threads allocates \
                    batches of 64 objects of 16-128 B and queues them for the other, which \
                    frees them (xmalloc-test, as mimalloc-bench runs it: 2 allocating and 2 \
                    freeing threads on one shared queue, 64 B objects, batches of 4096, \
                    condition variables, 5 s). The originals themselves run on the \
                    [mimalloc-bench page](mimalloc-bench.md). Then a mixed size \
                    distribution on one thread (10 000 slots, about half live; sizes 85% \
                    16-256 B, 12% to 4 KiB, 2.5% to 16 KiB, 0.5% to 64 KiB; a full slot is \
                    freed, or one time in ten resized by realloc). Every block carries tag \
                    words (first and last word, one per 4 KiB page) that are checked when it \
                    is freed or resized, and the counts of allocations and frees must add \
                    up, or the run fails. An operation is one replacement (server churn), \
                    one object allocated and freed (producer-consumer), or one allocation, \
                    free or realloc (mixed sizes). Higher is better."
                    .into(),
                unit: "million operations per second".into(),
                rows: throughput,
                line_plot: None,
            },
            Section {
                title: "Passive false sharing".into(),
                description: "After cache-scratch (Hoard, Berger et al. 2000), not the \
                    original (which, as mimalloc-bench runs it, uses 1-byte objects, 1000 \
                    allocations per worker of 1 000 000 unchecked writes each, one run per \
                    process; the original runs on the [mimalloc-bench \
                    page](mimalloc-bench.md)): one \
                    thread allocates an 8-byte object for each of 2 workers and hands them \
                    over; each worker frees its object, then 100 times allocates an 8-byte \
                    object, writes it 5000 times (each write read back and checked) and frees \
                    it. An allocator that gives a worker the freed object, a neighbour of the \
                    other worker's in the same cache line, makes every write a cache-line \
                    transfer. Each allocator runs in a fresh \
                    process of its own (placement depends on what a process did before), \
                    the processes' rounds interleaved. The figure is the time of one whole \
                    run, threads started and \
                    joined included. The effect shows only when both workers run at once: on \
                    a busy machine (spin control below 1.8x) the next section's placement \
                    count is the figure to read."
                    .into(),
                unit: "ms per run".into(),
                rows: vec![false_sharing],
                line_plot: None,
            },
            Section {
                title: "Passive false sharing: placement".into(),
                description: "The same hand-over as the section above, untimed and without \
                    the writes, with the two workers in lockstep (both allocate, then both \
                    free, 100 times), each allocator in a fresh process of its own (where an \
                    allocator places a thread's first objects depends on what the process \
                    did before). The figure counts the steps at which the two workers' live \
                    objects lay in the same 64-byte cache line: it depends on where the \
                    allocator places objects, not on how the threads are scheduled, so it \
                    holds on a busy machine where the timed figure cannot show the effect. \
                    Lower is better; 0 means no false sharing at all."
                    .into(),
                unit: "% of steps".into(),
                rows: vec![placement],
                line_plot: None,
            },
            Section {
                title: "Thread churn".into(),
                description: "Threads started two at a time and joined, over and over; each \
                    makes 400 allocations of 16-512 B (a random one freed whenever 64 are \
                    live), frees all but 32 and exits holding those, which the joining thread \
                    checks and frees. The figure is the time per thread: start, work, exit \
                    (the allocator's per-thread teardown), join, and the remote frees of what \
                    it held."
                    .into(),
                unit: "µs per thread".into(),
                rows: vec![churn],
                line_plot: None,
            },
        ],
    };
    page.sections.extend(async_sections);
    page.sections.extend(c_sections);
    Ok(page)
}

/// Progress steps of [`async_heap_page`].
pub const ASYNC_HEAP_STEPS: usize = async_heap::STEPS;

/// The async heap's sections of the page alone (`--only slab-async-heap`), on a page of
/// their own named `slab-async-heap`.
pub fn async_heap_page(settings: Settings, progress: &mut Progress) -> Result<Page, String> {
    let _second = SecondThread::start();
    Ok(Page {
        name: "slab-async-heap".into(),
        title: "pagekeep-slab: the async heap".into(),
        introduction: "The async heap's sections of the slab page, run alone, with a second \
            thread alive."
            .into(),
        sections: async_heap::sections(settings, progress),
    })
}
