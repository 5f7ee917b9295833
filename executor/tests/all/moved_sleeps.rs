//! A sleep registered on one worker and awaited on another must not depend on the
//! first: blocked, it would hold the sleep back until it unblocks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use pagekeep_executor::{Runtime, interval, sleep};

/// How long worker 0 is blocked; the timers are far shorter.
const BLOCKED: Duration = Duration::from_secs(1);
const SHORT: Duration = Duration::from_millis(50);

/// Polls `future` once with a waker that does nothing, so that it registers its timer
/// with the current worker.
fn poll_once<F: Future + Unpin>(future: &mut F) {
    assert!(
        Pin::new(future)
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
    );
}

/// Blocks worker 0 of `runtime` for [`BLOCKED`]; the flag says when it is free again.
fn block_worker_zero(runtime: &Runtime) -> Arc<AtomicBool> {
    let unblocked = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&unblocked);
    drop(runtime.spawn_on(0, async move {
        std::thread::sleep(BLOCKED);
        flag.store(true, Ordering::SeqCst);
    }));
    unblocked
}

#[test]
fn a_sleep_registered_on_a_blocked_worker_fires_on_the_one_awaiting_it() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    #[expect(
        clippy::async_yields_async,
        reason = "the registered sleep is handed to another worker, to be awaited there"
    )]
    let registered = runtime
        .block_on(runtime.spawn_on(0, async {
            let mut sleep = sleep(SHORT);
            poll_once(&mut sleep);
            sleep
        }))
        .unwrap();
    let unblocked = block_worker_zero(&runtime);
    let awaited = runtime.spawn_on(1, async move {
        registered.await;
        unblocked.load(Ordering::SeqCst)
    });
    // `block_on` runs on worker 0: this returns once it is free, and the flag recorded
    // whether it was when the sleep fired.
    let worker_zero_was_free = runtime.block_on(awaited).unwrap();
    assert!(
        !worker_zero_was_free,
        "the sleep waited for its blocked registering worker"
    );
}

#[test]
fn an_interval_registered_on_a_blocked_worker_ticks_on_the_one_awaiting_it() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let registered = runtime
        .block_on(runtime.spawn_on(0, async {
            let mut ticks = interval(SHORT);
            ticks.tick().await;
            poll_once(&mut Box::pin(ticks.tick()));
            ticks
        }))
        .unwrap();
    let unblocked = block_worker_zero(&runtime);
    let awaited = runtime.spawn_on(1, async move {
        let mut ticks = registered;
        ticks.tick().await;
        unblocked.load(Ordering::SeqCst)
    });
    let worker_zero_was_free = runtime.block_on(awaited).unwrap();
    assert!(
        !worker_zero_was_free,
        "the interval waited for its blocked registering worker"
    );
}
