//! Timing: calibrated batches, many samples, medians and spread.
//!
//! A routine is asked to perform `n` operations and returns how long they took, so it
//! can keep set-up and clean-up out of the timed part. Batches are sized to a target
//! duration so that timer resolution does not matter; the median of the per-operation
//! times of all samples is the figure, with the 10th and 90th percentiles as its spread.

use std::time::{Duration, Instant};

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Samples per measurement.
    pub samples: usize,
    /// Target duration of one sample.
    pub sample_time: Duration,
    /// Time spent running the routine before sampling.
    pub warm_up: Duration,
}

impl Settings {
    /// The default run: a few minutes for the whole suite on two cores.
    pub const QUICK: Settings = Settings {
        samples: 15,
        sample_time: Duration::from_millis(4),
        warm_up: Duration::from_millis(40),
    };

    /// The publication run (`--full`).
    pub const FULL: Settings = Settings {
        samples: 51,
        sample_time: Duration::from_millis(20),
        warm_up: Duration::from_millis(300),
    };
}

/// A measured figure: nanoseconds per operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Median over the samples.
    pub median: f64,
    /// 10th percentile.
    pub low: f64,
    /// 90th percentile.
    pub high: f64,
    /// Number of samples.
    pub samples: usize,
    /// Operations per sample.
    pub operations_per_sample: u64,
}

impl Measurement {
    /// A figure that was not timed but computed (a ratio, a count): one exact sample.
    pub fn exact(value: f64) -> Measurement {
        Measurement {
            median: value,
            low: value,
            high: value,
            samples: 1,
            operations_per_sample: 1,
        }
    }

    /// The same figure in another unit: every value multiplied by `factor` (e.g. 1e-3 to
    /// turn nanoseconds into microseconds).
    pub fn scaled(&self, factor: f64) -> Measurement {
        Measurement {
            median: self.median * factor,
            low: self.low * factor,
            high: self.high * factor,
            ..*self
        }
    }

    /// A time per operation in nanoseconds turned into a throughput in millions of
    /// operations per second; the percentiles swap ends (the slowest sample is the
    /// lowest throughput).
    pub fn millions_per_second(&self) -> Measurement {
        let rate = |nanoseconds: f64| {
            if nanoseconds > 0.0 {
                1e3 / nanoseconds
            } else {
                0.0
            }
        };
        Measurement {
            median: rate(self.median),
            low: rate(self.high),
            high: rate(self.low),
            ..*self
        }
    }

    /// The spread as a fraction of the median.
    pub fn relative_spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.high - self.low) / self.median
        }
    }
}

/// Measures `routine`, which performs the given number of operations and returns how
/// long they took.
pub fn measure(settings: Settings, mut routine: impl FnMut(u64) -> Duration) -> Measurement {
    // Warm up and calibrate: double the batch until it takes a quarter of a sample.
    let mut operations = 1u64;
    let started = Instant::now();
    loop {
        let elapsed = routine(operations);
        if elapsed >= settings.sample_time / 4 || operations >= 1 << 40 {
            let per_operation = elapsed.as_secs_f64() / operations as f64;
            let wanted = settings.sample_time.as_secs_f64() / per_operation.max(1e-12);
            operations = (wanted as u64).clamp(1, 1 << 40);
            if started.elapsed() >= settings.warm_up {
                break;
            }
        } else {
            operations *= 2;
        }
    }
    let mut per_operation: Vec<f64> = (0..settings.samples)
        .map(|_| routine(operations).as_secs_f64() * 1e9 / operations as f64)
        .collect();
    per_operation.sort_by(f64::total_cmp);
    let at = |fraction: f64| {
        per_operation[((per_operation.len() - 1) as f64 * fraction).round() as usize]
    };
    Measurement {
        median: at(0.5),
        low: at(0.1),
        high: at(0.9),
        samples: per_operation.len(),
        operations_per_sample: operations,
    }
}

/// Times `n` calls of `operation`.
pub fn time_each(n: u64, mut operation: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        operation();
    }
    start.elapsed()
}

/// Measures an operation too slow or too stateful to batch: each sample prepares a fresh
/// input with `set_up` (not timed) and times one `operation` on it.
pub fn measure_single<T>(
    samples: usize,
    mut set_up: impl FnMut() -> T,
    mut operation: impl FnMut(T) -> Duration,
) -> Measurement {
    // One untimed run warms caches and the allocator.
    operation(set_up());
    let mut times: Vec<f64> = (0..samples.max(1))
        .map(|_| operation(set_up()).as_secs_f64() * 1e9)
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction).round() as usize];
    Measurement {
        median: at(0.5),
        low: at(0.1),
        high: at(0.9),
        samples: times.len(),
        operations_per_sample: 1,
    }
}

/// Measures several routines that do the same work (ours and its peers) with their
/// samples interleaved, so that a change in machine load during the run shifts all of
/// them alike instead of favouring whichever ran in the quiet moment.
pub fn measure_interleaved(
    settings: Settings,
    routines: &mut [&mut dyn FnMut(u64) -> Duration],
) -> Vec<Measurement> {
    // Calibrate each routine on its own, as `measure` does.
    let mut operations = Vec::with_capacity(routines.len());
    for routine in routines.iter_mut() {
        let calibration = measure(
            Settings {
                samples: 1,
                ..settings
            },
            &mut **routine,
        );
        operations.push(calibration.operations_per_sample);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(settings.samples); routines.len()];
    for _ in 0..settings.samples {
        for (index, routine) in routines.iter_mut().enumerate() {
            let elapsed = routine(operations[index]);
            samples[index].push(elapsed.as_secs_f64() * 1e9 / operations[index] as f64);
        }
    }
    samples
        .into_iter()
        .zip(operations)
        .map(|(mut times, operations_per_sample)| {
            times.sort_by(f64::total_cmp);
            let at = |fraction: f64| times[((times.len() - 1) as f64 * fraction).round() as usize];
            Measurement {
                median: at(0.5),
                low: at(0.1),
                high: at(0.9),
                samples: times.len(),
                operations_per_sample,
            }
        })
        .collect()
}
