//! Durations at their extremes: `Duration::MAX` means "as long as can be" everywhere,
//! `None` means no limit, and a zero sleep yields.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;
use http::StatusCode;

#[test]
fn sleep_and_timeout_accept_duration_max() {
    let runtime = pagekeep_executor::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        // A sleep of `Duration::MAX` is pending, not a panic.
        let mut forever = Box::pin(pagekeep_executor::sleep(Duration::MAX));
        let pending = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(forever.as_mut().poll(cx).is_pending())
        })
        .await;
        let bounded = pagekeep_executor::timeout(Duration::MAX, async { 5 }).await;
        let secs = pagekeep_executor::timeout(Duration::from_secs(u64::MAX), async { 6 }).await;
        (pending, bounded, secs)
    });
    assert_eq!(outcome, (true, Ok(5), Ok(6)));
}

#[test]
fn a_loop_of_zero_sleeps_lets_other_tasks_run() {
    let runtime = pagekeep_executor::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let spins = runtime.block_on({
        let flag = Arc::clone(&flag);
        async move {
            let setter = pagekeep_executor::spawn({
                let flag = Arc::clone(&flag);
                async move { flag.store(true, Ordering::Release) }
            });
            // Without a yield this loop would never let `setter` run.
            let mut spins = 0u32;
            while !flag.load(Ordering::Acquire) && spins < 1_000_000 {
                pagekeep_executor::sleep(Duration::ZERO).await;
                spins += 1;
            }
            setter.await.unwrap();
            spins
        }
    });
    assert!(flag.load(Ordering::Acquire));
    assert!(spins >= 1, "the first zero sleep must yield");
    assert!(spins < 1_000_000, "the other task never ran");
    // `yield_now` does the same.
    let flag = Arc::new(AtomicBool::new(false));
    let ran = runtime.block_on({
        let flag = Arc::clone(&flag);
        async move {
            let setter = pagekeep_executor::spawn({
                let flag = Arc::clone(&flag);
                async move { flag.store(true, Ordering::Release) }
            });
            pagekeep_executor::yield_now().await;
            let ran = flag.load(Ordering::Acquire);
            setter.await.unwrap();
            ran
        }
    });
    assert!(ran);
}

#[test]
fn every_server_duration_takes_max_and_none() {
    for max in [true, false] {
        let limit = |duration| if max { Some(duration) } else { None };
        let server = start(
            builder()
                .header_read_timeout(limit(Duration::MAX))
                .handler_timeout(limit(Duration::MAX))
                .idle_timeout(limit(Duration::MAX))
                .response_write_timeout(limit(Duration::MAX))
                .arena_wait(limit(Duration::MAX))
                .shutdown_deadline(limit(Duration::MAX)),
        );
        // Requests that await (handler timer), on a kept connection (header and idle
        // timers), all answered in full.
        let results = client_runtime().block_on(get_all_on_one_connection(
            server.address,
            ["/slow?ms=20", "/hello", "/chunked"],
        ));
        let statuses: Vec<_> = results.iter().map(|(status, _)| *status).collect();
        assert_eq!(statuses, [StatusCode::OK; 3], "max: {max}");
        assert_eq!(&results[0].1[..], b"slow");
        // The shutdown deadline is no limit either: with nothing in flight, shutdown is
        // immediate.
        assert!(server.stop() < Duration::from_secs(5));
    }
}

#[test]
fn zero_past_and_far_deadlines() {
    let outcomes = client_runtime().block_on(async {
        // A zero timeout lets a ready future through and stops a pending one.
        let ready = pagekeep_executor::timeout(Duration::ZERO, async { 5 }).await;
        let pending =
            pagekeep_executor::timeout(Duration::ZERO, std::future::pending::<()>()).await;
        // A deadline an hour past completes; so does a sleep reset to now.
        pagekeep_executor::sleep_until(std::time::Instant::now() - Duration::from_secs(3600)).await;
        let mut sleep = pagekeep_executor::sleep(Duration::from_secs(3600));
        sleep.reset(std::time::Instant::now());
        (&mut sleep).await;
        // A deadline two centuries ahead (past the 30 years `sleep` clamps to) waits.
        let far = std::time::Instant::now() + Duration::from_secs(200 * 365 * 24 * 3600);
        let until_far = pagekeep_executor::timeout(
            Duration::from_millis(20),
            pagekeep_executor::sleep_until(far),
        )
        .await;
        sleep.reset(far);
        let reset_far = pagekeep_executor::timeout(Duration::from_millis(20), &mut sleep).await;
        (ready, pending, until_far, reset_far)
    });
    assert_eq!(outcomes.0, Ok(5));
    assert_eq!(outcomes.1, Err(pagekeep_executor::Elapsed));
    assert_eq!(outcomes.2, Err(pagekeep_executor::Elapsed));
    assert_eq!(outcomes.3, Err(pagekeep_executor::Elapsed));
}
