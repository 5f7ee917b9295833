//! Memory after a freed peak (issue 14): a child process per allocator allocates 400 MiB
//! of 4000-byte blocks (each written), frees them all, then keeps working in other size
//! classes (batches of 1000 blocks of 64 to 264 bytes, allocated, written and freed).
//! Its resident memory (`/proc/self/statm`) is sampled before the peak, right after the
//! frees and at fixed times afterwards; each figure is the resident memory above the
//! level before the peak, in MiB. Target: within 10 % of the level before the peak
//! within 1 s.

use core::alloc::{GlobalAlloc, Layout};
use std::time::{Duration, Instant};

use alloc_test::bench::measure::Measurement;
use alloc_test::bench::report::Row;

use super::heaps;
use crate::progress::Progress;

/// Blocks in the peak: 400 MiB of 4000-byte blocks.
pub const PEAK_BLOCKS: usize = 100 * 1024;
/// When resident memory is sampled after the frees.
const SAMPLES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Runs the child of every allocator and returns one row per sampling time.
pub fn rows(progress: &mut Progress) -> Result<Vec<Row>, String> {
    progress.step("slab: resident memory after freeing a 400 MiB peak");
    let mut figures: Vec<Vec<(String, Measurement)>> = vec![Vec::new(); SAMPLES.len()];
    for (name, _) in heaps() {
        for (time, figure) in child(name, PEAK_BLOCKS)?.into_iter().enumerate() {
            figures[time].push((name.to_string(), Measurement::exact(figure)));
        }
    }
    Ok(SAMPLES
        .iter()
        .zip(figures)
        .map(|(time, results)| {
            Row::new(
                format!(
                    "resident MiB above the level before the peak, {} ms after the frees",
                    time.as_millis()
                ),
                results,
            )
        })
        .collect())
}

/// Runs the child for allocator `name` with a peak of `blocks` blocks; returns the
/// resident MiB above the level before the peak at each of [`SAMPLES`].
pub fn child(name: &str, blocks: usize) -> Result<Vec<f64>, String> {
    let output = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--freed-peak-child", name, &blocks.to_string()])
        .output()
        .map_err(|error| format!("cannot run the freed-peak child: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<f64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!(
                "freed-peak child for {name} printed {text:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    if figures.len() != SAMPLES.len() {
        return Err(format!("freed-peak child for {name} printed {text:?}"));
    }
    Ok(figures)
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// One batch of work in other size classes.
fn work(allocator: &dyn GlobalAlloc, blocks: &mut Vec<(*mut u8, Layout)>) -> Result<(), String> {
    for index in 0..1000 {
        let layout = Layout::from_size_align(64 + index % 3 * 100, 8).map_err(|e| e.to_string())?;
        // SAFETY: a non-zero layout; freed below.
        let block = unsafe { allocator.alloc(layout) };
        if block.is_null() {
            return Err("out of memory".into());
        }
        // SAFETY: a fresh block of at least 8 bytes.
        unsafe { block.cast::<u64>().write_unaligned(index as u64) };
        blocks.push((block, layout));
    }
    for (block, layout) in blocks.drain(..) {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { allocator.dealloc(block, layout) };
    }
    Ok(())
}

/// The child side: prints the resident MiB above the level before the peak at each of
/// [`SAMPLES`], separated by spaces.
pub fn run_child(name: &str, blocks: usize) -> Result<(), String> {
    let allocator = heaps()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a)
        .ok_or("unknown allocator")?;
    let mut batch = Vec::with_capacity(1000);
    for _ in 0..100 {
        work(allocator, &mut batch)?;
    }
    let before = resident_bytes();
    let layout = Layout::from_size_align(4000, 8).map_err(|e| e.to_string())?;
    let mut peak = Vec::with_capacity(blocks);
    for _ in 0..blocks {
        // SAFETY: a non-zero layout; freed below.
        let block = unsafe { allocator.alloc(layout) };
        if block.is_null() {
            return Err("out of memory".into());
        }
        // SAFETY: a fresh block of 4000 bytes: touched as a program would.
        unsafe { block.write_bytes(0xA5, layout.size()) };
        peak.push(block);
    }
    for block in peak.drain(..) {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { allocator.dealloc(block, layout) };
    }
    let freed = Instant::now();
    let mut figures = Vec::with_capacity(SAMPLES.len());
    for sample in SAMPLES {
        while freed.elapsed() < sample {
            work(allocator, &mut batch)?;
        }
        let above = resident_bytes().saturating_sub(before);
        figures.push(format!("{:.2}", above as f64 / (1024.0 * 1024.0)));
    }
    println!("{}", figures.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_child_runs_with_a_tiny_peak_on_every_allocator() {
        // The test binary is not `reproduce`, so the child side is called in-process.
        for (name, _) in super::heaps() {
            super::run_child(name, 64).unwrap();
        }
    }
}
