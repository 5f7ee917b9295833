//! Memory after a freed peak (issue 14): a child process per allocator allocates 400 MiB
//! of 4000-byte blocks (each written), frees them all, then keeps working in other size
//! classes (batches of 1000 blocks of 64 to 264 bytes, allocated, written and freed).
//! Its resident memory (`/proc/self/statm`) is sampled every [`INTERVAL`], from just
//! before the peak until [`LAST_SAMPLE`] after the frees; each figure is the resident
//! memory above the level before the peak, in MiB. The series is plotted against the time
//! since the frees, and the table takes from it the first sample at or after each of
//! [`TABLE_TIMES`]. Target: within 10 % of the level before the peak within 1 s.

use core::alloc::{GlobalAlloc, Layout};
use std::io::Read as _;
use std::time::{Duration, Instant};

use pagekeep_alloc_test::bench::measure::Measurement;
use pagekeep_alloc_test::bench::report::{LinePlot, Row};
use pagekeep_alloc_test::bench::svg::Series;

use super::heaps;
use crate::progress::Progress;

/// Blocks in the peak: 400 MiB of 4000-byte blocks.
pub const PEAK_BLOCKS: usize = 100 * 1024;
/// How often resident memory is sampled.
const INTERVAL: Duration = Duration::from_millis(50);
/// How long after the frees the sampling goes on.
const LAST_SAMPLE: Duration = Duration::from_secs(3);
/// The times after the frees of the table's rows: multiples of [`INTERVAL`] up to
/// [`LAST_SAMPLE`], so each is a time the child samples at.
const TABLE_TIMES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(1),
    LAST_SAMPLE,
];
/// The peak's allocation loop looks at the clock once every this many blocks.
const BLOCKS_BETWEEN_CLOCK_READS: usize = 16;

/// One sample of a child's series: seconds since the frees (negative before them) and
/// resident MiB above the level before the peak.
type Sample = (f64, f64);

/// Runs the child of every allocator and returns one row per time of [`TABLE_TIMES`] and
/// the plot of the whole series.
pub fn rows(progress: &mut Progress) -> Result<(Vec<Row>, LinePlot), String> {
    progress.step("slab: resident memory after freeing a 400 MiB peak");
    let mut figures: Vec<Vec<(String, Measurement)>> = vec![Vec::new(); TABLE_TIMES.len()];
    let mut series = Vec::new();
    for (name, _) in heaps() {
        let samples = child(name, PEAK_BLOCKS)?;
        for (time, figure) in TABLE_TIMES.iter().zip(&mut figures) {
            let value = at(&samples, *time).ok_or_else(|| {
                format!(
                    "the freed-peak child for {name} stopped sampling before {} ms",
                    time.as_millis()
                )
            })?;
            figure.push((name.to_string(), Measurement::exact(value)));
        }
        series.push(Series {
            name: name.to_string(),
            points: samples,
        });
    }
    let rows = TABLE_TIMES
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
        .collect();
    let plot = LinePlot {
        title: "Resident memory around a freed 400 MiB peak".into(),
        x_unit: "seconds since the frees (negative: the peak being allocated)".into(),
        y_unit: "MiB resident above the level before the peak".into(),
        series,
    };
    Ok((rows, plot))
}

/// The figure of the first sample at or after `time` since the frees, if the series goes
/// on that long.
fn at(samples: &[Sample], time: Duration) -> Option<f64> {
    let seconds = time.as_secs_f64();
    samples
        .iter()
        .find(|(when, _)| *when >= seconds)
        .map(|(_, mebibytes)| *mebibytes)
}

/// Runs the child for allocator `name` with a peak of `blocks` blocks; returns its
/// series (see [`Sample`]).
pub fn child(name: &str, blocks: usize) -> Result<Vec<Sample>, String> {
    let output = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["--freed-peak-child", name, &blocks.to_string()])
        .output()
        .map_err(|error| format!("cannot run the freed-peak child: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let bad = || {
        format!(
            "freed-peak child for {name} printed {text:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let samples = parse_samples(&text).ok_or_else(bad)?;
    if samples.is_empty() {
        return Err(bad());
    }
    Ok(samples)
}

/// The series a child printed: one sample a line, seconds and MiB separated by a space.
fn parse_samples(text: &str) -> Option<Vec<Sample>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (seconds, mebibytes) = line.trim().split_once(' ')?;
            Some((seconds.parse().ok()?, mebibytes.parse().ok()?))
        })
        .collect()
}

/// This process's resident memory in bytes (0 if it cannot be read), read without
/// allocating: the reading is taken while an allocator is being measured.
fn resident_bytes() -> usize {
    let mut buffer = [0u8; 128];
    let length = std::fs::File::open("/proc/self/statm")
        .and_then(|mut file| file.read(&mut buffer))
        .unwrap_or(0);
    let pages: usize = std::str::from_utf8(&buffer[..length])
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1))
        .and_then(|pages| pages.parse().ok())
        .unwrap_or(0);
    // SAFETY: `sysconf` has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page_bytes).unwrap_or(4096)
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

/// The child side: prints its series (see [`Sample`]), one sample a line.
pub fn run_child(name: &str, blocks: usize) -> Result<(), String> {
    print!("{}", samples_text(&sample(name, blocks)?));
    Ok(())
}

/// The series as the child prints it, for [`parse_samples`]: seconds in full (the
/// shortest text that reads back as the same number, so a sample stays on its side of
/// the frees and of each table time) and MiB to two decimals.
fn samples_text(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|(seconds, mebibytes)| format!("{seconds} {mebibytes:.2}\n"))
        .collect()
}

/// Runs the peak on allocator `name` with `blocks` blocks and returns its series: a
/// sample just before the peak, every [`INTERVAL`] while it is allocated, one at the
/// peak, then every [`INTERVAL`] from the end of the frees until [`LAST_SAMPLE`] after.
fn sample(name: &str, blocks: usize) -> Result<Vec<Sample>, String> {
    let allocator = heaps()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a)
        .ok_or("unknown allocator")?;
    let mut batch = Vec::with_capacity(1000);
    for _ in 0..100 {
        work(allocator, &mut batch)?;
    }
    // (when, resident bytes); room for a peak allocated in up to 9 s, made before it, so
    // that sampling does not allocate.
    let intervals = LAST_SAMPLE.as_millis() / INTERVAL.as_millis();
    let mut readings: Vec<(Instant, usize)> = Vec::with_capacity(4 * intervals as usize);
    let start = Instant::now();
    let before = resident_bytes();
    readings.push((start, before));
    let mut due = start + INTERVAL;
    let layout = Layout::from_size_align(4000, 8).map_err(|e| e.to_string())?;
    let mut peak = Vec::with_capacity(blocks);
    for index in 0..blocks {
        // SAFETY: a non-zero layout; freed below.
        let block = unsafe { allocator.alloc(layout) };
        if block.is_null() {
            return Err("out of memory".into());
        }
        // SAFETY: a fresh block of 4000 bytes: touched as a program would.
        unsafe { block.write_bytes(0xA5, layout.size()) };
        peak.push(block);
        if index % BLOCKS_BETWEEN_CLOCK_READS == 0 {
            let now = Instant::now();
            if now >= due {
                readings.push((now, resident_bytes()));
                while due <= now {
                    due += INTERVAL;
                }
            }
        }
    }
    readings.push((Instant::now(), resident_bytes()));
    for block in peak.drain(..) {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { allocator.dealloc(block, layout) };
    }
    let freed = Instant::now();
    let before_frees = readings.len();
    let mut since_frees = Duration::ZERO;
    while since_frees <= LAST_SAMPLE {
        while freed.elapsed() < since_frees {
            work(allocator, &mut batch)?;
        }
        readings.push((Instant::now(), resident_bytes()));
        since_frees += INTERVAL;
    }
    let mebibytes = |bytes: usize| bytes.saturating_sub(before) as f64 / (1024.0 * 1024.0);
    Ok(readings
        .into_iter()
        .enumerate()
        .map(|(index, (when, bytes))| {
            let seconds = if index < before_frees {
                // At least a nanosecond before, should the clock not have moved: a
                // reading taken before the frees never counts as one after them.
                -freed.duration_since(when).as_secs_f64().max(1e-9)
            } else {
                when.duration_since(freed).as_secs_f64()
            };
            (seconds, mebibytes(bytes))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{INTERVAL, LAST_SAMPLE, TABLE_TIMES, at, parse_samples, samples_text};

    #[test]
    fn the_child_samples_every_allocator_from_before_the_peak_to_after_the_last_time() {
        // The test binary is not `reproduce`, so the child side is called in-process.
        for (name, _) in super::heaps() {
            let samples = super::sample(name, 64).unwrap();
            let (first, last) = (samples[0], samples[samples.len() - 1]);
            assert!(first.0 < 0.0 && first.1 == 0.0, "{name}: {samples:?}");
            assert!(last.0 >= LAST_SAMPLE.as_secs_f64(), "{name}: {samples:?}");
            assert!(samples.windows(2).all(|pair| pair[0].0 <= pair[1].0));
            let after: Vec<_> = samples.iter().filter(|(when, _)| *when >= 0.0).collect();
            // One sample an interval from the frees to the last time, the end included.
            let intervals = LAST_SAMPLE.as_millis() / INTERVAL.as_millis();
            assert_eq!(after.len() as u128, intervals + 1, "{name}: {samples:?}");
            for time in TABLE_TIMES {
                assert!(at(&samples, time).is_some());
            }
            let printed = parse_samples(&samples_text(&samples)).expect("a series");
            let times = |samples: &[(f64, f64)]| samples.iter().map(|s| s.0).collect::<Vec<_>>();
            assert_eq!(
                times(&printed),
                times(&samples),
                "the times read back exactly"
            );
        }
    }

    #[test]
    fn the_table_takes_the_first_sample_at_or_after_each_time() {
        let printed = "-0.3 0.00\n-0.0001 400.50\n0.000002 398.00\n0.5 20.00\n0.5500001 10.00\n";
        let samples = parse_samples(printed).expect("a series");
        assert_eq!(samples.len(), 5);
        assert_eq!(at(&samples, Duration::ZERO), Some(398.0));
        assert_eq!(at(&samples, Duration::from_millis(500)), Some(20.0));
        assert_eq!(at(&samples, Duration::from_millis(501)), Some(10.0));
        assert_eq!(at(&samples, Duration::from_secs(1)), None);
        assert_eq!(parse_samples("0.1 nonsense\n"), None);
        for time in TABLE_TIMES {
            assert_eq!(time.as_nanos() % INTERVAL.as_nanos(), 0, "{time:?}");
            assert!(time <= LAST_SAMPLE);
        }
    }
}
