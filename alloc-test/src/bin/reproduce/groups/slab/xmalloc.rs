//! A producer-consumer workload after xmalloc-test (Lever & Boreham, "malloc()
//! Performance in a Multithreaded Linux Environment", USENIX 2000), named
//! "producer-consumer" in the pages because it is not the original: xmalloc-test, as
//! mimalloc-bench runs it (`xmalloc-test -w 2 -t 5 -s 64`), has 2 allocating and 2
//! freeing threads on one shared queue (at most 100 batches, condition variables),
//! 64-byte objects, batches of 4096, and runs for 5 seconds (the original itself runs
//! on the mimalloc-bench page, `xmalloc-testN`); this one has 2 threads that each
//! allocate and free, random 16-128 B objects, batches of 64 and spinning (yielding) on
//! empty queues. Every object is freed by a thread that did not allocate it, while both
//! threads allocate and free at once.
//!
//! With two cores, each of the two threads is both a producer and a consumer: it fills
//! a batch of 64 objects of random sizes (16 to 128 bytes), pushes it onto its outgoing
//! queue (at most 16 batches waiting; a full queue makes it consume instead), and frees
//! the batches it pops from the other thread's queue. A thread stops once it has
//! produced its share and freed as many objects as the other thread produced.

use core::alloc::GlobalAlloc;
use pagekeep_alloc_test::bench::threads::join_all;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::Settings;
use pagekeep_alloc_test::bench::report::{Better, Row};

use super::random::Rng;
use super::tagged::Tagged;
use super::{HEAP, HEAP_NAMES, JEMALLOC, MIMALLOC, SYSTEM, Workload, measure_workloads, row_of};
use crate::progress::Progress;
use pagekeep_slab::SlabHeap;

const BATCH: usize = 64;
const QUEUE_CAPACITY: usize = 16;
const MIN_SIZE: usize = 16;
const MAX_SIZE: usize = 128;

/// Objects in flight from one thread to the other.
type Queue = Mutex<Vec<Vec<Tagged>>>;

/// What one thread did.
#[derive(Debug, Default)]
struct Tally {
    produced: u64,
    consumed: u64,
    failure: Option<String>,
}

/// One thread: produce `batches` batches onto `outgoing`, free `batches` batches from
/// `incoming`.
fn producer_consumer<A: GlobalAlloc + Sync>(
    allocator: &A,
    outgoing: &Queue,
    incoming: &Queue,
    batches: u64,
    seed: u64,
) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let (mut pushed, mut popped) = (0u64, 0u64);
    // Emptied batch vectors are reused for the next batch, so the queues themselves
    // make no allocation once warm.
    let mut spare: Vec<Vec<Tagged>> = Vec::new();
    let mut pending: Option<Vec<Tagged>> = None;
    while pushed < batches || popped < batches {
        let mut progressed = false;
        if pending.is_none() && pushed < batches {
            let mut batch = spare.pop().unwrap_or_else(|| Vec::with_capacity(BATCH));
            for _ in 0..BATCH {
                let size = rng.between(MIN_SIZE, MAX_SIZE);
                batch.push(Tagged::new(allocator, size, rng.next()));
            }
            tally.produced += BATCH as u64;
            pending = Some(batch);
        }
        if let Some(batch) = pending.take() {
            let mut queue = outgoing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if queue.len() < QUEUE_CAPACITY {
                queue.push(batch);
                pushed += 1;
                progressed = true;
            } else {
                pending = Some(batch);
            }
        }
        if popped < batches {
            let batch = incoming
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            if let Some(mut batch) = batch {
                for block in batch.drain(..) {
                    tally.consumed += 1;
                    if let Err(error) = block.free(allocator) {
                        tally.failure.get_or_insert(error);
                    }
                }
                spare.push(batch);
                popped += 1;
                progressed = true;
            }
        }
        if !progressed {
            std::thread::yield_now();
        }
    }
    tally
}

/// The producer-consumer workload on one allocator.
pub struct ProducerConsumer<'a, A: GlobalAlloc + Sync> {
    allocator: &'a A,
    runs: u64,
    failure: Option<String>,
}

impl<'a, A: GlobalAlloc + Sync> ProducerConsumer<'a, A> {
    /// The row's name: what it does, and that it is not xmalloc-test itself.
    pub const NAME: &'static str = "producer-consumer (after xmalloc-test, not the \
        original): 2 threads each allocate 16-128 B objects for the other to free";

    /// The workload on `allocator`.
    pub fn new(allocator: &'a A) -> Self {
        ProducerConsumer {
            allocator,
            runs: 0,
            failure: None,
        }
    }
}

impl<A: GlobalAlloc + Sync> Workload for ProducerConsumer<'_, A> {
    fn run(&mut self, operations: u64) -> Duration {
        // Each thread produces half of the objects, in whole batches.
        let batches = operations.div_ceil(2 * BATCH as u64).max(1);
        let queues: [Queue; 2] = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];
        let allocator = self.allocator;
        let seed = self.runs * 2;
        self.runs += 1;
        let start = Instant::now();
        let tallies: Vec<Tally> = std::thread::scope(|scope| {
            let queues = &queues;
            let workers: Vec<_> = (0..2)
                .map(|index| {
                    scope.spawn(move || {
                        producer_consumer(
                            allocator,
                            &queues[index],
                            &queues[1 - index],
                            batches,
                            seed + index as u64,
                        )
                    })
                })
                .collect();
            join_all(workers, || Tally {
                failure: Some("a producer-consumer thread panicked".to_owned()),
                ..Tally::default()
            })
        });
        let elapsed = start.elapsed();
        let expected = batches * BATCH as u64;
        for tally in &tallies {
            if let Some(failure) = &tally.failure {
                self.failure.get_or_insert(failure.clone());
            }
            if tally.produced != expected || tally.consumed != expected {
                self.failure.get_or_insert(format!(
                    "a thread produced {} and freed {} objects; both should be {expected}",
                    tally.produced, tally.consumed
                ));
            }
        }
        for queue in queues {
            let left = queue
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !left.is_empty() {
                self.failure
                    .get_or_insert(format!("{} batches were never freed", left.len()));
                for block in left.into_iter().flatten() {
                    let _ = block.free(allocator);
                }
            }
        }
        // Whole batches only: scale to the objects asked for.
        elapsed.mul_f64(operations as f64 / (2 * expected) as f64)
    }

    fn finish(self) -> Result<(), String> {
        self.failure.map_or(Ok(()), Err)
    }
}

/// Measures the producer-consumer workload on every heap; the figure is millions of objects (each
/// allocated by one thread and freed by the other) per second.
pub fn row(settings: Settings, machine: &Machine, progress: &mut Progress) -> Result<Row, String> {
    progress.step("slab: producer-consumer after xmalloc-test (2 threads)");
    let settings = Settings {
        sample_time: settings.sample_time * 15,
        ..settings
    };
    let figures = measure_workloads(settings, on_every_heap!(ProducerConsumer::new))?;
    let throughput: Vec<_> = figures.iter().map(|m| m.millions_per_second()).collect();
    Ok(
        row_of(ProducerConsumer::<SlabHeap>::NAME, &throughput, &HEAP_NAMES)
            .better(Better::Higher)
            .in_summary()
            .multi_threaded(machine),
    )
}
