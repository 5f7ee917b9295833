//! Statistics of paired rounds: a ratio per interleaved round, a bootstrap confidence
//! interval for its median, and the verdict on a target that the interval allows.
//!
//! Every sample round of an interleaved measurement runs each subject once, so a
//! subject's figure of round `r` and its peer's figure of the same round met the same
//! machine. The ratio is taken within each round (paired) and the figure is the median
//! of the per-round ratios. Its uncertainty comes from a percentile bootstrap (Efron &
//! Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13): the ratios are
//! resampled with replacement, the median taken each time, and the 2.5th and 97.5th
//! percentiles of those medians bound a 95 % interval. With rounds from several process
//! launches the bootstrap is two-stage (Davison & Hinkley, "Bootstrap Methods and their
//! Application", 1997, section 3.8): launches are resampled first, then rounds within
//! each launch drawn, so that a difference between launches (where the heap was placed,
//! which core ran what) widens the interval instead of hiding in the pool.
//!
//! The random numbers come from a fixed seed: the same rounds always give the same
//! interval.

/// How many bootstrap resamples an interval is made of.
pub const RESAMPLES: usize = 2000;

/// The confidence of the intervals: 95 %.
pub const CONFIDENCE: f64 = 0.95;

/// The seed of every bootstrap, so that an interval is a function of its rounds.
pub const SEED: u64 = 0x5eed_b007_57a9_0001;

/// A small deterministic generator (SplitMix64, Steele, Lea & Flood 2014): enough for
/// resampling indices, and the same on every machine.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`), by Lemire's multiply-shift (the bias is
    /// below 2^-40 for the bounds used here).
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }
}

/// The median of `values` (the mean of the two middle ones for an even count); `None`
/// when there are none. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// The `fraction` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], fraction: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

/// A figure with its confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The median over all rounds of all launches.
    pub value: f64,
    /// Lower bound of the interval.
    pub low: f64,
    /// Upper bound of the interval.
    pub high: f64,
}

impl Estimate {
    /// A figure known exactly (a count, a computed value): its interval is itself.
    pub fn exact(value: f64) -> Estimate {
        Estimate {
            value,
            low: value,
            high: value,
        }
    }

    /// Whether the interval has any width (it came from more than one round).
    pub fn is_exact(&self) -> bool {
        self.low == self.high
    }
}

/// The median of `launches` (each a list of rounds) with a [`CONFIDENCE`] bootstrap
/// interval: two-stage when there are several launches, over the rounds otherwise.
/// Launches without rounds are left out; `None` when no round is left.
///
/// # Examples
///
/// ```
/// use pagekeep_alloc_test::bench::stats::bootstrap_median;
///
/// let rounds = vec![vec![0.9, 1.0, 1.1, 1.0, 0.95, 1.05, 1.0]];
/// let estimate = bootstrap_median(&rounds).unwrap();
/// assert_eq!(estimate.value, 1.0);
/// assert!(estimate.low <= 1.0 && estimate.high >= 1.0);
/// // The same rounds give the same interval: the bootstrap is seeded.
/// assert_eq!(bootstrap_median(&rounds), Some(estimate));
/// ```
pub fn bootstrap_median(launches: &[Vec<f64>]) -> Option<Estimate> {
    let launches: Vec<&Vec<f64>> = launches.iter().filter(|l| !l.is_empty()).collect();
    let pooled: Vec<f64> = launches.iter().flat_map(|l| l.iter().copied()).collect();
    let value = median(&pooled)?;
    if pooled.len() == 1 {
        return Some(Estimate::exact(value));
    }
    let mut rng = SplitMix64::new(SEED);
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut resample = Vec::with_capacity(pooled.len());
    for _ in 0..RESAMPLES {
        resample.clear();
        if launches.len() == 1 {
            for _ in 0..pooled.len() {
                resample.push(pooled[rng.below(pooled.len())]);
            }
        } else {
            for _ in 0..launches.len() {
                let launch = launches[rng.below(launches.len())];
                for _ in 0..launch.len() {
                    resample.push(launch[rng.below(launch.len())]);
                }
            }
        }
        medians.push(median(&resample).unwrap_or(value));
    }
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some(Estimate {
        value,
        low: quantile(&medians, tail).min(value),
        high: quantile(&medians, 1.0 - tail).max(value),
    })
}

/// Per-round ratios `ours / peer` of paired rounds (same launches, same round counts);
/// `None` when the rounds do not pair up or a peer's round is zero.
pub fn paired_ratios(ours: &[Vec<f64>], peer: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    if ours.len() != peer.len() || ours.is_empty() {
        return None;
    }
    ours.iter()
        .zip(peer)
        .map(|(ours, peer)| {
            if ours.len() != peer.len() || ours.is_empty() {
                return None;
            }
            ours.iter()
                .zip(peer)
                .map(|(&ours, &peer)| (peer != 0.0).then(|| ours / peer))
                .collect()
        })
        .collect()
}

/// What the interval says about a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval is on the good side of the target.
    Met,
    /// The interval contains the target: the run cannot tell.
    Unclear,
    /// The whole interval is on the wrong side.
    No,
}

impl Verdict {
    /// The verdict on `estimate` for a bound: `at_most` (lower is better: the interval
    /// must lie at or below `bound`) or at least (higher is better).
    ///
    /// # Examples
    ///
    /// ```
    /// use pagekeep_alloc_test::bench::stats::{Estimate, Verdict};
    ///
    /// let straddles = Estimate { value: 0.98, low: 0.95, high: 1.02 };
    /// assert_eq!(Verdict::of(straddles, 1.0, true), Verdict::Unclear);
    /// let below = Estimate { value: 0.9, low: 0.85, high: 0.97 };
    /// assert_eq!(Verdict::of(below, 1.0, true), Verdict::Met);
    /// assert_eq!(Verdict::of(below, 1.0, false), Verdict::No);
    /// ```
    pub fn of(estimate: Estimate, bound: f64, at_most: bool) -> Verdict {
        let (good_edge, bad_edge) = if at_most {
            (estimate.high, estimate.low)
        } else {
            (estimate.low, estimate.high)
        };
        let on_good_side = |value: f64| {
            if at_most {
                value <= bound
            } else {
                value >= bound
            }
        };
        if on_good_side(good_edge) {
            Verdict::Met
        } else if on_good_side(bad_edge) {
            Verdict::Unclear
        } else {
            Verdict::No
        }
    }

    /// The word printed in the tables.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Unclear => "unclear",
            Verdict::No => "**no**",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Estimate, SplitMix64, Verdict, bootstrap_median, median, paired_ratios};

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn the_generator_is_splitmix64() {
        // The first outputs of SplitMix64 from seed 0 (Vigna's reference code).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        let mut rng = SplitMix64::new(7);
        assert!((0..1000).all(|_| rng.below(3) < 3));
    }

    #[test]
    fn a_bootstrap_interval_is_seeded_and_contains_the_median() {
        let rounds: Vec<f64> = (0..31).map(|i| 1.0 + f64::from(i % 7) * 0.01).collect();
        let estimate = bootstrap_median(std::slice::from_ref(&rounds)).expect("rounds");
        assert_eq!(estimate.value, median(&rounds).expect("rounds"));
        assert!(estimate.low <= estimate.value && estimate.value <= estimate.high);
        assert!(estimate.low >= 1.0 && estimate.high <= 1.06, "{estimate:?}");
        assert_eq!(bootstrap_median(&[rounds]), Some(estimate));
    }

    #[test]
    fn identical_rounds_give_an_interval_of_no_width() {
        let estimate = bootstrap_median(&[vec![2.0; 9]]).expect("rounds");
        assert_eq!(estimate, Estimate::exact(2.0));
        assert_eq!(bootstrap_median(&[vec![3.0]]), Some(Estimate::exact(3.0)));
        assert_eq!(bootstrap_median(&[vec![], vec![]]), None);
    }

    #[test]
    fn launches_that_disagree_widen_the_interval() {
        // Within each launch the rounds agree closely, but the launches do not: the
        // pooled bootstrap would be narrow, the two-stage one must span the launches.
        let launch = |level: f64| (0..15).map(|i| level + f64::from(i) * 1e-4).collect();
        let launches: Vec<Vec<f64>> = vec![launch(0.8), launch(1.0), launch(1.2)];
        let pooled: Vec<f64> = launches.concat();
        let two_stage = bootstrap_median(&launches).expect("rounds");
        let one_stage = bootstrap_median(&[pooled]).expect("rounds");
        assert!(two_stage.high - two_stage.low > one_stage.high - one_stage.low);
        assert!(
            two_stage.low <= 0.81 && two_stage.high >= 1.19,
            "{two_stage:?}"
        );
    }

    #[test]
    fn ratios_pair_rounds_and_refuse_what_does_not_pair() {
        let ours = vec![vec![1.0, 2.0], vec![3.0]];
        let peer = vec![vec![2.0, 2.0], vec![6.0]];
        assert_eq!(
            paired_ratios(&ours, &peer),
            Some(vec![vec![0.5, 1.0], vec![0.5]])
        );
        assert_eq!(paired_ratios(&ours, &[vec![2.0, 2.0]]), None);
        assert_eq!(paired_ratios(&[vec![1.0]], &[vec![0.0]]), None);
        assert_eq!(paired_ratios(&[vec![1.0, 2.0]], &[vec![1.0]]), None);
    }

    #[test]
    fn met_unclear_and_no_follow_the_interval() {
        let interval = |low, high| Estimate {
            value: (low + high) / 2.0,
            low,
            high,
        };
        // Lower is better, target at most 1.0.
        assert_eq!(Verdict::of(interval(0.7, 0.99), 1.0, true), Verdict::Met);
        assert_eq!(Verdict::of(interval(0.7, 1.0), 1.0, true), Verdict::Met);
        assert_eq!(Verdict::of(interval(0.9, 1.1), 1.0, true), Verdict::Unclear);
        assert_eq!(Verdict::of(interval(1.01, 1.3), 1.0, true), Verdict::No);
        // Higher is better, target at least 1.9.
        assert_eq!(Verdict::of(interval(1.92, 1.99), 1.9, false), Verdict::Met);
        assert_eq!(
            Verdict::of(interval(1.8, 2.1), 1.9, false),
            Verdict::Unclear
        );
        assert_eq!(Verdict::of(interval(1.5, 1.89), 1.9, false), Verdict::No);
        // An exact figure is met or not, never unclear.
        assert_eq!(Verdict::of(Estimate::exact(0.0), 0.0, true), Verdict::Met);
        assert_eq!(Verdict::of(Estimate::exact(3.0), 0.0, true), Verdict::No);
    }

    #[test]
    fn a_ratio_whose_rounds_straddle_the_target_is_unclear() {
        // Paired rounds whose ratios spread evenly around 1.0: the median sits near the
        // target, the interval crosses it.
        let ratios: Vec<f64> = (0..21).map(|i| 0.9 + f64::from(i) * 0.01).collect();
        let estimate = bootstrap_median(&[ratios]).expect("rounds");
        assert_eq!(Verdict::of(estimate, 1.0, true), Verdict::Unclear);
        // The same spread well below the target is met.
        let ratios: Vec<f64> = (0..21).map(|i| 0.6 + f64::from(i) * 0.01).collect();
        let estimate = bootstrap_median(&[ratios]).expect("rounds");
        assert_eq!(Verdict::of(estimate, 1.0, true), Verdict::Met);
    }
}
