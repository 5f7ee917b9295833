//! A mixed size distribution: requests drawn from a realistic mix, mostly small with a
//! tail up to 64 KiB, into a working set of live blocks with random frees and
//! occasional reallocs, on one thread (with a second thread alive).
//!
//! Each step picks a random slot of 10 000: an empty slot gets a new block; a full one
//! has its block freed, or one time in ten resized with `realloc` to a new size from the
//! same mix. About half of the slots are full in the steady state. Sizes: 85% 16 to
//! 256 bytes, 12% 257 bytes to 4 KiB, 2.5% 4 to 16 KiB, 0.5% 16 to 64 KiB (uniform
//! within each band). Blocks carry tag words (first and last word, one word per 4 KiB
//! page), checked when freed and across every realloc.

use core::alloc::GlobalAlloc;
use std::time::{Duration, Instant};

use pagekeep_alloc_test::bench::measure::Settings;
use pagekeep_alloc_test::bench::report::{Better, Row};

use super::random::Rng;
use super::tagged::Tagged;
use super::{HEAP, HEAP_NAMES, JEMALLOC, MIMALLOC, SYSTEM, Workload, measure_workloads, row_of};
use crate::progress::Progress;

const SLOTS: usize = 10_000;

/// A request size from the mix.
fn size(rng: &mut Rng) -> usize {
    let band = rng.below(1000);
    if band < 850 {
        rng.between(16, 256)
    } else if band < 970 {
        rng.between(257, 4096)
    } else if band < 995 {
        rng.between(4097, 16 << 10)
    } else {
        rng.between((16 << 10) + 1, 64 << 10)
    }
}

/// The working set of one allocator.
struct SizeMix<'a, A: GlobalAlloc> {
    allocator: &'a A,
    slots: Vec<Option<Tagged>>,
    rng: Rng,
    allocations: u64,
    frees: u64,
    reallocs: u64,
    failure: Option<String>,
}

impl<'a, A: GlobalAlloc> SizeMix<'a, A> {
    fn new(allocator: &'a A) -> Self {
        SizeMix {
            allocator,
            slots: (0..SLOTS).map(|_| None).collect(),
            rng: Rng::new(0x5123_3a1c),
            allocations: 0,
            frees: 0,
            reallocs: 0,
            failure: None,
        }
    }
}

impl<A: GlobalAlloc> Workload for SizeMix<'_, A> {
    fn run(&mut self, operations: u64) -> Duration {
        let allocator = self.allocator;
        let start = Instant::now();
        for _ in 0..operations {
            let slot = self.rng.below(SLOTS);
            let result = match self.slots[slot].take() {
                None => {
                    let size = size(&mut self.rng);
                    self.slots[slot] = Some(Tagged::new(allocator, size, self.rng.next()));
                    self.allocations += 1;
                    Ok(())
                }
                Some(mut block) if self.rng.below(10) == 0 => {
                    let new_size = size(&mut self.rng);
                    let resized = block.resize(allocator, new_size);
                    self.slots[slot] = Some(block);
                    self.reallocs += 1;
                    resized
                }
                Some(block) => {
                    self.frees += 1;
                    block.free(allocator)
                }
            };
            if let Err(error) = result {
                self.failure.get_or_insert(error);
            }
        }
        start.elapsed()
    }

    fn finish(mut self) -> Result<(), String> {
        let live = self.slots.iter().flatten().count() as u64;
        if self.allocations != self.frees + live {
            self.failure.get_or_insert(format!(
                "{} allocations, {} frees, but {live} blocks live",
                self.allocations, self.frees
            ));
        }
        if self.reallocs == 0 {
            self.failure
                .get_or_insert("no realloc was exercised".to_owned());
        }
        for block in self.slots.drain(..).flatten() {
            if let Err(error) = block.free(self.allocator) {
                self.failure.get_or_insert(error);
            }
        }
        self.failure.map_or(Ok(()), Err)
    }
}

/// Measures the size mix on every heap; the figure is millions of steps (an allocation,
/// a free or a realloc) per second.
pub fn row(settings: Settings, progress: &mut Progress) -> Result<Row, String> {
    progress.step("slab: mixed sizes up to 64 KiB with reallocs");
    let settings = Settings {
        sample_time: settings.sample_time * 5,
        ..settings
    };
    let figures = measure_workloads(settings, on_every_heap!(SizeMix::new))?;
    let throughput: Vec<_> = figures.iter().map(|m| m.millions_per_second()).collect();
    Ok(row_of(
        "mixed sizes 16 B-64 KiB, 5k live, random frees, 1 in 10 resized (1 thread)",
        &throughput,
        &HEAP_NAMES,
    )
    .better(Better::Higher)
    .in_summary())
}

#[cfg(test)]
mod tests {
    use super::*;

    checks_catch_a_block_handed_out_twice!(SizeMix::new, 20_000);
}
