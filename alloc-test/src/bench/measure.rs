//! Timing: calibrated batches, many samples, medians and spread.
//!
//! A routine is asked to perform `n` operations and returns how long they took, so it
//! can keep set-up and clean-up out of the timed part. Batches are sized to a target
//! duration so that timer resolution does not matter; the median of the per-operation
//! times of all samples is the figure, with the 10th and 90th percentiles as its spread.
//!
//! Subjects compared with each other are measured in rounds ([`measure_interleaved`]):
//! each round runs every subject once, in an order rotated from round to round, and each
//! [`Measurement`] keeps its figure of every round in round order, so that a ratio can be
//! taken within each round ([`super::stats`]).

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
#[derive(Clone, Debug, PartialEq)]
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
    /// The figure of every round, in round order, one list per process launch: what
    /// paired ratios are taken from. Empty for a figure that was not measured in rounds
    /// interleaved with its peers.
    pub rounds: Vec<Vec<f64>>,
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
            rounds: Vec::new(),
        }
    }

    /// The figure of rounds given in round order (one launch): the median, with the 10th
    /// and 90th percentiles as its spread, and the rounds kept for pairing.
    pub fn from_rounds(rounds: Vec<f64>, operations_per_sample: u64) -> Measurement {
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |fraction: f64| {
            sorted
                .get(((sorted.len().max(1) - 1) as f64 * fraction).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        Measurement {
            median: at(0.5),
            low: at(0.1),
            high: at(0.9),
            samples: sorted.len(),
            operations_per_sample,
            rounds: vec![rounds],
        }
    }

    /// The same figure with the rounds of another launch of the same measurement added:
    /// median and spread over all rounds.
    pub fn with_launch(&self, rounds: Vec<f64>) -> Measurement {
        let mut launches = self.rounds.clone();
        launches.push(rounds);
        let mut merged = Measurement::from_rounds(launches.concat(), self.operations_per_sample);
        merged.rounds = launches;
        merged
    }

    /// Applies `map` to the figure of every round (and to the median and spread; a
    /// decreasing `map` swaps the ends of the spread).
    pub fn map(&self, map: impl Fn(f64) -> f64) -> Measurement {
        let (low, high) = (map(self.low), map(self.high));
        Measurement {
            median: map(self.median),
            low: low.min(high),
            high: low.max(high),
            samples: self.samples,
            operations_per_sample: self.operations_per_sample,
            rounds: self
                .rounds
                .iter()
                .map(|launch| launch.iter().map(|&value| map(value)).collect())
                .collect(),
        }
    }

    /// The same figure in another unit: every value multiplied by `factor` (e.g. 1e-3 to
    /// turn nanoseconds into microseconds).
    pub fn scaled(&self, factor: f64) -> Measurement {
        self.map(|value| value * factor)
    }

    /// A time per operation in nanoseconds turned into a throughput in millions of
    /// operations per second; the percentiles swap ends (the slowest sample is the
    /// lowest throughput).
    pub fn millions_per_second(&self) -> Measurement {
        self.map(|nanoseconds: f64| {
            if nanoseconds > 0.0 {
                1e3 / nanoseconds
            } else {
                0.0
            }
        })
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
        rounds: Vec::new(),
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
        rounds: Vec::new(),
    }
}

/// The order in which round `round` runs `subjects` subjects: rotated by one each round,
/// so that every subject runs first, second, ... equally often (with as many rounds as
/// subjects, or a multiple), and none always follows the same neighbour's cache and heap
/// state.
pub fn rotated_order(round: usize, subjects: usize) -> impl Iterator<Item = usize> {
    (0..subjects).map(move |position| (position + round) % subjects.max(1))
}

/// Measures several routines that do the same work (ours and its peers) in rounds: each
/// round runs every routine once, in an order rotated from round to round
/// ([`rotated_order`]), so that a change in machine load during the run shifts all of
/// them alike, and no routine always runs first or right after the same one. Each
/// figure keeps its value of every round ([`Measurement::rounds`]) for paired ratios.
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
    // Each routine gets one value per round, pushed in round order.
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(settings.samples); routines.len()];
    for round in 0..settings.samples {
        for index in rotated_order(round, routines.len()) {
            let elapsed = routines[index](operations[index]);
            samples[index].push(elapsed.as_secs_f64() * 1e9 / operations[index] as f64);
        }
    }
    samples
        .into_iter()
        .zip(operations)
        .map(|(rounds, operations_per_sample)| {
            Measurement::from_rounds(rounds, operations_per_sample)
        })
        .collect()
}

/// Measures operations too slow or too stateful to batch on several subjects in rounds,
/// as [`measure_interleaved`] does: each round prepares a fresh input for every subject
/// with `set_up(subject)` (not timed) and times one `operation(subject, input)`, the
/// subjects in rotated order.
pub fn measure_single_interleaved<T>(
    samples: usize,
    subjects: usize,
    mut set_up: impl FnMut(usize) -> T,
    mut operation: impl FnMut(usize, T) -> Duration,
) -> Vec<Measurement> {
    // One untimed run of each warms caches and the allocator.
    for subject in 0..subjects {
        let input = set_up(subject);
        operation(subject, input);
    }
    let samples = samples.max(1);
    // Each subject gets one value per round, pushed in round order.
    let mut times = vec![Vec::with_capacity(samples); subjects];
    for round in 0..samples {
        for subject in rotated_order(round, subjects) {
            let input = set_up(subject);
            times[subject].push(operation(subject, input).as_secs_f64() * 1e9);
        }
    }
    times
        .into_iter()
        .map(|rounds| Measurement::from_rounds(rounds, 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Measurement, rotated_order};

    #[test]
    fn every_subject_runs_in_every_position_once_per_cycle() {
        let orders: Vec<Vec<usize>> = (0..4)
            .map(|round| rotated_order(round, 4).collect())
            .collect();
        for position in 0..4 {
            let mut seen: Vec<usize> = orders.iter().map(|order| order[position]).collect();
            seen.sort_unstable();
            assert_eq!(seen, [0, 1, 2, 3]);
        }
        assert_eq!(orders[1], [1, 2, 3, 0]);
    }

    #[test]
    fn rounds_keep_their_order_and_follow_a_change_of_unit() {
        let measured = Measurement::from_rounds(vec![4.0, 1.0, 2.0], 10);
        assert_eq!(measured.median, 2.0);
        assert_eq!(measured.rounds, vec![vec![4.0, 1.0, 2.0]]);
        let rate = measured.millions_per_second();
        assert_eq!(rate.rounds, vec![vec![250.0, 1000.0, 500.0]]);
        assert_eq!((rate.low, rate.median, rate.high), (250.0, 500.0, 1000.0));
        let merged = measured.with_launch(vec![3.0]);
        assert_eq!(merged.rounds.len(), 2);
        assert_eq!(merged.samples, 4);
    }
}
