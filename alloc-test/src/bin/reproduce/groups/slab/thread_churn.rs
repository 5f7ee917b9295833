//! Thread churn: threads are created and joined over and over; each makes a few hundred
//! allocations and frees and exits while still holding some of its blocks, which the
//! joining thread then checks and frees. This exercises what an allocator does when a
//! thread starts (setting up its caches) and exits (tearing them down with blocks of
//! its own still live elsewhere).
//!
//! Parameters (the same in quick and full runs): threads started two at a time; each
//! makes 400 allocations of 16 to 512 bytes, keeping at most 64 live (a random live
//! block is freed once 64 are live), then frees all but 32, which it hands back to the
//! joining thread. For `SlabHeap`, the count of live objects must be the same before and
//! after: the exited threads' magazines went back.

use core::alloc::GlobalAlloc;
use pagekeep_alloc_test::bench::threads::join_all;
use std::time::{Duration, Instant};

use pagekeep_alloc_test::bench::machine::Machine;
use pagekeep_alloc_test::bench::measure::Settings;
use pagekeep_alloc_test::bench::report::Row;

use super::random::Rng;
use super::tagged::Tagged;
use super::{HEAP, HEAP_NAMES, JEMALLOC, MIMALLOC, SYSTEM, Workload, measure_workloads, row_of};
use crate::progress::Progress;

const AT_ONCE: usize = 2;
const ALLOCATIONS: usize = 400;
const MAX_LIVE: usize = 64;
const HELD_AT_EXIT: usize = 32;
const MIN_SIZE: usize = 16;
const MAX_SIZE: usize = 512;

/// What one thread did and the blocks it still held when it exited.
struct Exit {
    allocated: usize,
    freed: usize,
    held: Vec<Tagged>,
    failure: Option<String>,
}

/// The body of one short-lived thread.
fn short_life<A: GlobalAlloc + Sync>(allocator: &A, seed: u64) -> Exit {
    let mut rng = Rng::new(seed);
    let mut live: Vec<Tagged> = Vec::with_capacity(MAX_LIVE + 1);
    let (mut allocated, mut freed) = (0, 0);
    let mut failure = None;
    for _ in 0..ALLOCATIONS {
        let size = rng.between(MIN_SIZE, MAX_SIZE);
        live.push(Tagged::new(allocator, size, rng.next()));
        allocated += 1;
        if live.len() > MAX_LIVE {
            let victim = live.swap_remove(rng.below(live.len()));
            if let Err(error) = victim.free(allocator) {
                failure.get_or_insert(error);
            }
            freed += 1;
        }
    }
    while live.len() > HELD_AT_EXIT {
        let victim = live.swap_remove(rng.below(live.len()));
        if let Err(error) = victim.free(allocator) {
            failure.get_or_insert(error);
        }
        freed += 1;
    }
    Exit {
        allocated,
        freed,
        held: live,
        failure,
    }
}

/// Thread churn on one allocator: each operation is one thread.
struct ThreadChurn<'a, A: GlobalAlloc + Sync> {
    allocator: &'a A,
    seed: u64,
    failure: Option<String>,
}

impl<'a, A: GlobalAlloc + Sync> ThreadChurn<'a, A> {
    fn new(allocator: &'a A) -> Self {
        ThreadChurn {
            allocator,
            seed: 0,
            failure: None,
        }
    }

    fn round(&mut self) {
        let allocator = self.allocator;
        let first_seed = self.seed;
        self.seed += AT_ONCE as u64;
        let exits: Vec<Exit> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..AT_ONCE)
                .map(|index| scope.spawn(move || short_life(allocator, first_seed + index as u64)))
                .collect();
            join_all(threads, || Exit {
                allocated: 0,
                freed: 0,
                held: Vec::new(),
                failure: Some("a short-lived thread panicked".to_owned()),
            })
        });
        for exit in exits {
            if let Some(failure) = exit.failure {
                self.failure.get_or_insert(failure);
            }
            let held = exit.held.len();
            if held != HELD_AT_EXIT
                || exit.allocated != ALLOCATIONS
                || exit.freed + held != ALLOCATIONS
            {
                self.failure.get_or_insert(format!(
                    "a thread allocated {}, freed {} and held {held} blocks at exit \
                     (expected {ALLOCATIONS}, {} and {HELD_AT_EXIT})",
                    exit.allocated,
                    exit.freed,
                    ALLOCATIONS - HELD_AT_EXIT
                ));
            }
            // Blocks of a thread that has exited, freed by this one.
            for block in exit.held {
                if let Err(error) = block.free(allocator) {
                    self.failure.get_or_insert(error);
                }
            }
        }
    }
}

impl<A: GlobalAlloc + Sync> Workload for ThreadChurn<'_, A> {
    fn run(&mut self, operations: u64) -> Duration {
        let rounds = operations.div_ceil(AT_ONCE as u64).max(1);
        let start = Instant::now();
        for _ in 0..rounds {
            self.round();
        }
        // Whole rounds only: scale to the threads asked for.
        start
            .elapsed()
            .mul_f64(operations as f64 / (rounds * AT_ONCE as u64) as f64)
    }

    fn finish(self) -> Result<(), String> {
        self.failure.map_or(Ok(()), Err)
    }
}

/// Objects of `HEAP` handed out and not freed, with this thread's magazines flushed
/// first (frees into a live thread's magazines count as live until they go back). No
/// other thread holds `HEAP`'s magazines when this is called: the workloads' threads
/// have all been joined.
fn heap_objects_live() -> usize {
    HEAP.0.flush_thread_cache();
    let stats = HEAP.0.stats();
    stats.small.objects_live + stats.large_blocks
}

/// Measures thread churn on every heap; the figure is microseconds per thread (start,
/// work, exit, join, and freeing what it held).
pub fn row(settings: Settings, machine: &Machine, progress: &mut Progress) -> Result<Row, String> {
    progress.step("slab: thread churn (short-lived threads exiting with live blocks)");
    let settings = Settings {
        sample_time: settings.sample_time * 10,
        ..settings
    };
    let before = heap_objects_live();
    let figures = measure_workloads(settings, on_every_heap!(ThreadChurn::new))?;
    // Every block the short-lived threads made is freed by now, and the threads have
    // exited, so their magazines must have gone back to the depots.
    let after = heap_objects_live();
    if after != before {
        return Err(format!(
            "SlabHeap counts {after} objects live after thread churn, {before} before: \
             exited threads did not give back what their magazines held"
        ));
    }
    let microseconds: Vec<_> = figures.iter().map(|m| m.scaled(1e-3)).collect();
    Ok(row_of(
        "thread churn: threads of 400 allocations of 16-512 B exit holding 32, 2 at a time",
        &microseconds,
        &HEAP_NAMES,
    )
    .in_summary()
    .multi_threaded(machine))
}

#[cfg(test)]
mod tests {
    use super::*;

    checks_catch_a_block_handed_out_twice!(ThreadChurn::new);
}
