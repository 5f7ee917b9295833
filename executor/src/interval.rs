//! [`Interval`]: ticks at a fixed period, built on one reused [`Sleep`].
//!
//! Each tick reports the instant it was scheduled for, and the next deadline is
//! computed from it, so ticks do not drift by the time the task took to get polled.
//! When a tick is late by more than [`LATE_TOLERANCE`] (the task was busy, or its worker
//! blocked), the [`MissedTickBehavior`] decides when the next one is due.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::timer::{FAR_FUTURE, Sleep, deadline_after, sleep_until};

/// How late a tick may be before it counts as missed (tokio's figure): the timer wheel
/// of an epoll loop is a millisecond coarse, and a tick a little late is not a missed
/// one.
const LATE_TOLERANCE: Duration = Duration::from_millis(5);

/// What an [`Interval`] does after a tick came late (by more than a few milliseconds),
/// when one or more ticks were missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedTickBehavior {
    /// The missed ticks complete at once, one after the other, until the interval has
    /// caught up with its schedule (`start + n * period`). The default, as tokio's.
    #[default]
    Burst,
    /// The schedule moves: the next tick is one period after the late tick was
    /// returned, and later ticks follow from there.
    Delay,
    /// The missed ticks are skipped: the next tick is the next one of the original
    /// schedule still ahead.
    Skip,
}

impl MissedTickBehavior {
    /// The deadline after a tick scheduled for `scheduled` came at `now`, late.
    fn next_deadline(self, scheduled: Instant, now: Instant, period: Duration) -> Instant {
        match self {
            Self::Burst => deadline_after(scheduled, period),
            Self::Delay => deadline_after(now, period),
            Self::Skip => {
                // The first `scheduled + k * period` after `now` (k >= 1).
                let late = now.saturating_duration_since(scheduled).as_nanos();
                let period_nanos = period.as_nanos();
                let periods = late / period_nanos + 1;
                let ahead = period_nanos.saturating_mul(periods);
                let ahead = Duration::from_nanos(u64::try_from(ahead).unwrap_or(u64::MAX));
                deadline_after(scheduled, ahead)
            }
        }
    }
}

/// Ticks every `period`; made by [`interval`] and [`interval_at`].
///
/// Its [`Sleep`] registers with the timers of the worker that polls it, or, polled on no
/// worker (a plain thread, the blocking pool), with the process-wide fallback timer.
pub struct Interval {
    sleep: Sleep,
    /// Non-zero, and at most [`FAR_FUTURE`].
    period: Duration,
    missed_tick_behavior: MissedTickBehavior,
}

impl fmt::Debug for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interval")
            .field("next_tick", &self.sleep.deadline())
            .field("period", &self.period)
            .field("missed_tick_behavior", &self.missed_tick_behavior)
            .finish()
    }
}

/// An [`Interval`] whose first tick completes at once and the following ones every
/// `period` after it.
///
/// A period longer than about 30 years (`Duration::MAX` included) means about 30
/// years, as for [`sleep`](crate::sleep).
///
/// # Panics
///
/// If `period` is zero.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let mut interval = pagekeep_executor::interval(Duration::from_millis(2));
///     let first = interval.tick().await; // at once
///     let second = interval.tick().await;
///     let third = interval.tick().await;
///     // Each tick reports the instant it was scheduled for.
///     assert_eq!(second - first, Duration::from_millis(2));
///     assert_eq!(third - second, Duration::from_millis(2));
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "`period` must be non-zero.");
    interval_at(Instant::now(), period)
}

/// An [`Interval`] whose first tick is at `start` and the following ones every
/// `period` after it.
///
/// A period longer than about 30 years (`Duration::MAX` included) means about 30
/// years, as for [`sleep`](crate::sleep).
///
/// # Panics
///
/// If `period` is zero.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
/// runtime.block_on(async {
///     let start = Instant::now() + Duration::from_millis(3);
///     let mut interval = pagekeep_executor::interval_at(start, Duration::from_millis(2));
///     assert_eq!(interval.tick().await, start);
///     assert!(Instant::now() >= start);
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
#[track_caller]
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(!period.is_zero(), "`period` must be non-zero.");
    Interval {
        sleep: sleep_until(start),
        period: period.min(FAR_FUTURE),
        missed_tick_behavior: MissedTickBehavior::default(),
    }
}

impl Interval {
    /// Completes at the next tick, with the instant that tick was scheduled for.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a tick is consumed only when the future returns it; dropping it
    /// before (a `select!` that took another branch) leaves the tick for the next call.
    pub fn tick(&mut self) -> Tick<'_> {
        Tick { interval: self }
    }

    /// Polls for the next tick, as [`tick`](Self::tick) does, for hand-written
    /// futures.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let scheduled = self.sleep.deadline();
        let now = Instant::now();
        let next = if now > scheduled + LATE_TOLERANCE {
            self.missed_tick_behavior
                .next_deadline(scheduled, now, self.period)
        } else {
            deadline_after(scheduled, self.period)
        };
        self.sleep.reset(next);
        Poll::Ready(scheduled)
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        self.sleep
            .reset(deadline_after(Instant::now(), self.period));
    }

    /// The period between ticks (at most about 30 years).
    pub fn period(&self) -> Duration {
        self.period
    }

    /// What the interval does when ticks are missed.
    pub fn missed_tick_behavior(&self) -> MissedTickBehavior {
        self.missed_tick_behavior
    }

    /// Sets what the interval does when ticks are missed, from the next tick on.
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.missed_tick_behavior = behavior;
    }
}

/// The future of [`Interval::tick`]; cancel safe.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Tick<'a> {
    interval: &'a mut Interval,
}

impl Future for Tick<'_> {
    type Output = Instant;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        self.get_mut().interval.poll_tick(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Runtime;

    const PERIOD: Duration = Duration::from_millis(10);

    fn runtime() -> Runtime {
        Runtime::builder().workers(1).build().expect("runtime")
    }

    #[test]
    #[should_panic(expected = "`period` must be non-zero.")]
    fn a_zero_period_panics() {
        let _ = interval(Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "`period` must be non-zero.")]
    fn a_zero_period_panics_at_a_start_too() {
        let _ = interval_at(Instant::now(), Duration::ZERO);
    }

    #[test]
    fn ticks_follow_the_schedule_without_drift() {
        runtime().block_on(async {
            let before = Instant::now();
            let mut interval = interval(PERIOD);
            let first = interval.tick().await;
            assert!(first >= before);
            let mut previous = first;
            for n in 1..4u32 {
                let tick = interval.tick().await;
                assert_eq!(tick, first + PERIOD * n, "scheduled instants, no drift");
                assert!(Instant::now() >= tick, "never early");
                assert!(tick > previous);
                previous = tick;
            }
        });
    }

    /// Blocks the worker past several periods after the first tick; returns the first
    /// tick and the instant the worker was blocked until.
    async fn miss_ticks(interval: &mut Interval) -> (Instant, Instant) {
        let first = interval.tick().await;
        std::thread::sleep(PERIOD * 5 + PERIOD / 2);
        (first, Instant::now())
    }

    #[test]
    fn burst_catches_up_with_every_missed_tick() {
        runtime().block_on(async {
            let mut interval = interval(PERIOD);
            assert_eq!(interval.missed_tick_behavior(), MissedTickBehavior::Burst);
            let (first, woke) = miss_ticks(&mut interval).await;
            // The five missed ticks come at once, each the instant it was due.
            for n in 1..=5u32 {
                let tick = interval.tick().await;
                assert_eq!(tick, first + PERIOD * n);
                assert!(tick < woke);
            }
            // Then the schedule goes on as before.
            let next = interval.tick().await;
            assert_eq!(next, first + PERIOD * 6);
        });
    }

    #[test]
    fn delay_moves_the_schedule_after_a_late_tick() {
        runtime().block_on(async {
            let mut interval = interval(PERIOD);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let (first, woke) = miss_ticks(&mut interval).await;
            // The late tick reports its own instant (a period after the first, unless
            // the first was late too on a loaded machine).
            let late = interval.tick().await;
            assert!(late >= first + PERIOD && late < woke);
            let next = interval.tick().await;
            assert!(next >= woke + PERIOD, "a full period after the late tick");
            let after = interval.tick().await;
            assert!(after >= next + PERIOD);
        });
    }

    #[test]
    fn skip_drops_the_missed_ticks_and_keeps_the_schedule() {
        runtime().block_on(async {
            let mut interval = interval(PERIOD);
            interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let (first, woke) = miss_ticks(&mut interval).await;
            let late = interval.tick().await;
            assert!(late >= first + PERIOD && late < woke);
            let next = interval.tick().await;
            assert!(next > woke, "the missed ticks are skipped");
            let since_first = (next - first).as_nanos();
            assert_eq!(
                since_first % PERIOD.as_nanos(),
                0,
                "on the original schedule"
            );
            assert!(next - first >= PERIOD * 6);
        });
    }

    #[test]
    fn reset_starts_the_schedule_again_from_now() {
        runtime().block_on(async {
            let mut interval = interval(PERIOD);
            interval.tick().await;
            std::thread::sleep(PERIOD * 3);
            let reset_at = Instant::now();
            interval.reset();
            let next = interval.tick().await;
            assert!(next >= reset_at + PERIOD);
            assert_eq!(interval.period(), PERIOD);
        });
    }

    #[test]
    fn a_dropped_tick_future_consumes_no_tick() {
        runtime().block_on(async {
            let mut interval = interval(PERIOD);
            let first = interval.tick().await;
            {
                // Polled once (pending: the next tick is a period away), then dropped.
                let mut tick = interval.tick();
                let waker = std::task::Waker::noop();
                assert!(
                    Pin::new(&mut tick)
                        .poll(&mut Context::from_waker(waker))
                        .is_pending()
                );
            }
            assert_eq!(interval.tick().await, first + PERIOD);
        });
    }

    #[test]
    fn the_longest_period_is_accepted() {
        let interval = interval(Duration::MAX);
        assert_eq!(interval.period(), FAR_FUTURE);
        let late = MissedTickBehavior::Skip.next_deadline(
            Instant::now(),
            Instant::now() + Duration::from_secs(1),
            FAR_FUTURE,
        );
        assert!(late > Instant::now());
    }
}
