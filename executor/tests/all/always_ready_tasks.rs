//! Tasks that never wait (a channel that is never empty, a peer that always has more to
//! send) against their neighbours on the same worker: the cooperative budget makes them
//! give the worker back, every poll, so a timer next to them fires while they run.
//! Without the budget every test here fails (the loop runs to its end in one poll).

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pagekeep_executor::net::TcpStream;
use pagekeep_executor::sync::mpsc;

/// Units per poll: the figure the README gives (tokio's).
const BUDGET_UNITS: usize = 128;

fn one_worker() -> pagekeep_executor::Runtime {
    pagekeep_executor::Runtime::builder()
        .workers(1)
        .build()
        .unwrap()
}

/// Spawns, on the current worker, a task that sets the returned flag after a 1 ms sleep.
fn neighbour() -> (Arc<AtomicBool>, pagekeep_executor::JoinHandle<()>) {
    let flag = Arc::new(AtomicBool::new(false));
    let task = pagekeep_executor::spawn({
        let flag = Arc::clone(&flag);
        async move {
            pagekeep_executor::sleep(Duration::from_millis(1)).await;
            flag.store(true, Ordering::Release);
        }
    });
    (flag, task)
}

#[test]
fn a_receive_loop_over_a_full_channel_lets_a_sleeping_neighbour_run() {
    const ITEMS: usize = 1_000_000;
    let (received, seen_at) = one_worker().block_on(async {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        for item in 0..ITEMS {
            sender.send(item).unwrap();
        }
        drop(sender);
        let (flag, task) = neighbour();
        let mut received = 0;
        let mut seen_at = None;
        while let Some(item) = receiver.recv().await {
            assert_eq!(item, received, "in order, none lost to a refused recv");
            received += 1;
            if seen_at.is_none() && flag.load(Ordering::Acquire) {
                seen_at = Some(received);
            }
        }
        task.await.unwrap();
        (received, seen_at)
    });
    assert_eq!(received, ITEMS);
    let seen_at = seen_at.expect("the neighbour's 1 ms timer never ran while the loop did");
    assert!(seen_at < ITEMS);
}

#[test]
fn a_read_loop_over_a_peer_that_always_writes_lets_a_sleeping_neighbour_run() {
    // Enough 16-byte reads (a million) to take far longer than a millisecond.
    const LIMIT_BYTES: usize = 16 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let chunk = [7u8; 64 << 10];
        // Until the reader goes away.
        while socket.write_all(&chunk).is_ok() {}
    });
    let (read, flag_seen) = one_worker().block_on(async move {
        let stream = TcpStream::connect(address).await.unwrap();
        // The peer fills the socket's buffers meanwhile, and keeps them full: every
        // read below finds its 16 bytes waiting and never has to wait.
        pagekeep_executor::sleep(Duration::from_millis(50)).await;
        let (flag, task) = neighbour();
        let mut buffer = [0u8; 16];
        let mut read = 0;
        while !flag.load(Ordering::Acquire) && read < LIMIT_BYTES {
            let bytes = stream.read(&mut buffer).await.unwrap();
            assert!(bytes > 0, "the peer never stops writing");
            read += bytes;
        }
        let flag_seen = flag.load(Ordering::Acquire);
        drop(stream);
        task.await.unwrap();
        (read, flag_seen)
    });
    peer.join().unwrap();
    assert!(
        flag_seen,
        "the neighbour's 1 ms timer never ran during {read} bytes of reads"
    );
}

/// Counts the polls of the future it wraps.
struct CountPolls<F> {
    future: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.future.as_mut().poll(cx)
    }
}

/// The budget is refilled at every poll: a task that spends it all each time yields
/// once per `BUDGET_UNITS` operations, no more often, so it finishes in as many worker
/// turns as that takes (and no fewer: it did yield).
#[test]
fn a_task_that_spends_its_budget_gets_a_full_one_at_every_poll() {
    const ITEMS: usize = BUDGET_UNITS * 1_000;
    let runtime = one_worker();
    let polls = Arc::new(AtomicUsize::new(0));
    let (sender, mut receiver) = mpsc::unbounded_channel();
    for item in 0..ITEMS {
        sender.send(item).unwrap();
    }
    drop(sender);
    let looping = runtime.spawn(CountPolls {
        future: Box::pin(async move {
            let mut received = 0;
            while receiver.recv().await.is_some() {
                received += 1;
            }
            received
        }),
        polls: Arc::clone(&polls),
    });
    assert_eq!(runtime.block_on(looping).unwrap(), ITEMS);
    // ITEMS + 1 receives (the last one sees the end), BUDGET_UNITS per poll.
    let polls = polls.load(Ordering::Relaxed);
    let expected = (ITEMS + 1).div_ceil(BUDGET_UNITS);
    assert!(
        (expected..=expected + 2).contains(&polls),
        "{polls} polls for {ITEMS} receives; expected {expected}"
    );
}

/// A timeout around a future that spends its whole budget at every poll still fires:
/// the deadline is checked apart from the budget.
#[test]
fn a_timeout_fires_around_a_future_that_always_spends_its_budget() {
    let outcome = one_worker().block_on(async {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        sender.send(0u64).unwrap();
        let echo = async {
            // Always ready: each value received is sent again. Bounded, so that a
            // broken budget fails the test instead of hanging it.
            for _ in 0..50_000_000u64 {
                let value = receiver.recv().await.unwrap();
                sender.send(value + 1).unwrap();
            }
        };
        pagekeep_executor::timeout(Duration::from_millis(5), echo).await
    });
    assert_eq!(outcome, Err(pagekeep_executor::Elapsed));
}

/// `task::unconstrained` opts out: the same loop runs in one poll.
#[test]
fn an_unconstrained_loop_runs_in_one_poll() {
    let runtime = one_worker();
    let polls = Arc::new(AtomicUsize::new(0));
    let (sender, mut receiver) = mpsc::unbounded_channel();
    for item in 0..BUDGET_UNITS * 10 {
        sender.send(item).unwrap();
    }
    drop(sender);
    let looping = runtime.spawn(CountPolls {
        future: Box::pin(pagekeep_executor::task::unconstrained(async move {
            while receiver.recv().await.is_some() {}
        })),
        polls: Arc::clone(&polls),
    });
    runtime.block_on(looping).unwrap();
    assert_eq!(polls.load(Ordering::Relaxed), 1);
}
