//! A server simulation after larson (Larson & Krishnan, "Memory allocation for
//! long-running server applications", ISMM 1998), named "server churn" in the pages
//! because it is not the original: larson, as mimalloc-bench runs it (`larson 5 8 1000
//! 5000 100 4141 2`), uses sizes 8-999 B, 5000 blocks per thread, 500 000 replacements
//! per thread before it starts its successor, runs for 5 seconds and reports its own
//! throughput, with no checks; this one uses 16-1024 B, 5000 blocks per thread, rounds
//! of 50 000 replacements joined by the caller, and tag words checked on every free.
//! The original itself runs on the mimalloc-bench page (`larsonN`). Each thread owns an
//! array of slots holding live blocks; it repeatedly frees the block of a random slot
//! and allocates a block of random size into it. After a round the threads exit and new
//! threads take the arrays over, each a different array than its predecessor's thread
//! had, so blocks are freed by threads that did not allocate them, some after their
//! allocating thread has exited.
//!
//! Parameters (the same in quick and full runs; only the sampling differs): 2 threads,
//! 5000 slots each, sizes 16 to 1024 bytes, 50 000 replacements per thread per round.

use core::alloc::GlobalAlloc;
use pagekeep_alloc_test::bench::threads::join_all;
use std::time::{Duration, Instant};

use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::Settings;
use pagekeep_alloc_test::bench::report::{Better, Row};

use super::random::Rng;
use super::tagged::Tagged;
use super::{HEAP, HEAP_NAMES, JEMALLOC, MIMALLOC, SYSTEM, Workload, measure_workloads, row_of};
use crate::progress::Progress;
use pagekeep_slab::SlabHeap;

const THREADS: usize = 2;
const SLOTS: usize = 5000;
const MIN_SIZE: usize = 16;
const MAX_SIZE: usize = 1024;
const REPLACEMENTS_PER_ROUND: u64 = 50_000;

/// The server churn state of one allocator: the slot arrays survive from round to round.
pub struct ServerChurn<'a, A: GlobalAlloc + Sync> {
    allocator: &'a A,
    arrays: Vec<Vec<Tagged>>,
    seed: u64,
    failure: Option<String>,
}

impl<'a, A: GlobalAlloc + Sync> ServerChurn<'a, A> {
    /// The row's name: what it does, and that it is not larson itself.
    pub const NAME: &'static str = "server churn (after larson, not the original): 2 threads \
        replace random blocks of 16-1024 B, arrays handed to new threads";

    /// The workload on `allocator`, its arrays filled.
    pub fn new(allocator: &'a A) -> Self {
        let mut rng = Rng::new(0x001a_750a);
        let arrays = (0..THREADS)
            .map(|_| {
                (0..SLOTS)
                    .map(|_| Tagged::new(allocator, rng.between(MIN_SIZE, MAX_SIZE), rng.next()))
                    .collect()
            })
            .collect();
        ServerChurn {
            allocator,
            arrays,
            seed: 1,
            failure: None,
        }
    }

    /// One round: a new thread per array, each replacing random slots.
    fn round(&mut self) {
        // Hand every array to the thread that follows its previous one.
        self.arrays.rotate_left(1);
        let allocator = self.allocator;
        let first_seed = self.seed;
        self.seed += THREADS as u64;
        let results: Vec<(u64, Option<String>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .arrays
                .iter_mut()
                .enumerate()
                .map(|(index, slots)| {
                    let mut rng = Rng::new(first_seed + index as u64);
                    scope.spawn(move || {
                        let mut failure = None;
                        for _ in 0..REPLACEMENTS_PER_ROUND {
                            let slot = rng.below(slots.len());
                            let size = rng.between(MIN_SIZE, MAX_SIZE);
                            let fresh = Tagged::new(allocator, size, rng.next());
                            let old = std::mem::replace(&mut slots[slot], fresh);
                            if let Err(error) = old.free(allocator) {
                                failure.get_or_insert(error);
                            }
                        }
                        (REPLACEMENTS_PER_ROUND, failure)
                    })
                })
                .collect();
            join_all(workers, || {
                (0, Some("a server churn thread panicked".to_owned()))
            })
        });
        let mut replaced = 0;
        for (count, failure) in results {
            replaced += count;
            if let Some(failure) = failure {
                self.failure.get_or_insert(failure);
            }
        }
        if replaced != THREADS as u64 * REPLACEMENTS_PER_ROUND {
            self.failure.get_or_insert(format!(
                "a round replaced {replaced} blocks instead of {}",
                THREADS as u64 * REPLACEMENTS_PER_ROUND
            ));
        }
    }
}

impl<A: GlobalAlloc + Sync> Workload for ServerChurn<'_, A> {
    fn run(&mut self, operations: u64) -> Duration {
        let per_round = THREADS as u64 * REPLACEMENTS_PER_ROUND;
        let rounds = operations.div_ceil(per_round).max(1);
        let start = Instant::now();
        for _ in 0..rounds {
            self.round();
        }
        // Whole rounds only: scale to the operations asked for.
        start
            .elapsed()
            .mul_f64(operations as f64 / (rounds * per_round) as f64)
    }

    fn finish(mut self) -> Result<(), String> {
        let allocator = self.allocator;
        for slots in self.arrays.drain(..) {
            if slots.len() != SLOTS {
                self.failure
                    .get_or_insert(format!("an array holds {} slots, not {SLOTS}", slots.len()));
            }
            for block in slots {
                if let Err(error) = block.free(allocator) {
                    self.failure.get_or_insert(error);
                }
            }
        }
        self.failure.map_or(Ok(()), Err)
    }
}

/// Measures the server churn on every heap; the figure is millions of replacements (one free and
/// one allocation) per second.
pub fn row(settings: Settings, machine: &Machine, progress: &mut Progress) -> Result<Row, String> {
    progress.step("slab: server churn after larson (2 threads)");
    let settings = Settings {
        sample_time: settings.sample_time * 15,
        ..settings
    };
    let figures = measure_workloads(settings, on_every_heap!(ServerChurn::new))?;
    let throughput: Vec<_> = figures.iter().map(|m| m.millions_per_second()).collect();
    Ok(
        row_of(ServerChurn::<SlabHeap>::NAME, &throughput, &HEAP_NAMES)
            .better(Better::Higher)
            .in_summary()
            .multi_threaded(machine),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    checks_catch_a_block_handed_out_twice!(ServerChurn::new);
}
