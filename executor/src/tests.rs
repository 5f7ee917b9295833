//! Unit tests of the runtime pieces working together on real worker threads: reactor,
//! timers, wakers (stale wake-ups included) and shutdown.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::net::{TcpListener, TcpStream};
use crate::{JoinError, Runtime, Shutdown, sleep, spawn, timeout};

fn runtime(workers: usize) -> Runtime {
    Runtime::builder()
        .workers(workers)
        .build()
        .expect("runtime")
}

/// Yields to the worker once (wakes itself and returns `Pending`).
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

mod reactor {
    use super::*;

    #[test]
    fn echo_over_loopback_between_workers() {
        let runtime = runtime(2);
        let received = runtime.block_on(async {
            let listener = TcpListener::bind(loopback()).unwrap();
            let address = listener.local_addr().unwrap();
            let server = spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let mut buffer = [0; 64];
                let read = stream.read(&mut buffer).await.unwrap();
                stream.write_all(&buffer[..read]).await.unwrap();
            });
            let client = TcpStream::connect(address).await.unwrap();
            let parts = [
                std::io::IoSlice::new(b"ping "),
                std::io::IoSlice::new(b"pong"),
            ];
            assert_eq!(client.write_vectored(&parts).await.unwrap(), 9);
            let mut buffer = [0; 64];
            let mut total = 0;
            while total < 9 {
                let read = client.read(&mut buffer[total..]).await.unwrap();
                assert!(read > 0, "early end of stream");
                total += read;
            }
            server.await.unwrap();
            client.shutdown(std::net::Shutdown::Both).unwrap();
            buffer[..total].to_vec()
        });
        assert_eq!(received, b"ping pong");
    }

    /// Data and the peer's FIN arrive in one edge-triggered event; the first (short)
    /// read must not leave the end of stream unseen.
    #[test]
    fn end_of_stream_behind_a_short_read_is_seen() {
        let runtime = runtime(1);
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let address = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            use std::io::Write;
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"last words").unwrap();
        });
        let outcome = runtime.block_on(async move {
            let stream = TcpStream::connect(address).await.unwrap();
            // Let data and FIN both arrive before the first read.
            sleep(Duration::from_millis(50)).await;
            let mut buffer = [0; 1024];
            let first = stream.read(&mut buffer).await.unwrap();
            let second = timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
            (first, second.map(Result::unwrap))
        });
        peer.join().unwrap();
        assert_eq!(
            outcome,
            (10, Ok(0)),
            "end of stream lost after a short read"
        );
    }

    #[test]
    fn stream_used_from_another_worker_gets_its_events() {
        let runtime = runtime(2);
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let address = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            use std::io::Write;
            let (mut stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            stream.write_all(b"late").unwrap();
        });
        // Connect on worker 0, read from a task on worker 1.
        let stream = runtime.block_on(async move { TcpStream::connect(address).await.unwrap() });
        let read = runtime.spawn_on(1, async move {
            let mut buffer = [0; 4];
            let read = stream.read(&mut buffer).await.unwrap();
            buffer[..read].to_vec()
        });
        assert_eq!(runtime.block_on(read).unwrap(), b"late");
        peer.join().unwrap();
    }

    #[test]
    fn refused_connect_is_an_error_and_sockets_deregister() {
        let runtime = runtime(1);
        // A port that was just free: connecting is refused.
        let address = std::net::TcpListener::bind(loopback())
            .unwrap()
            .local_addr()
            .unwrap();
        let live = runtime.block_on(async move {
            let error = TcpStream::connect(address).await.unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
            let listener = TcpListener::bind(loopback()).unwrap();
            drop(listener);
            crate::worker::with_local(|local| local.shared.io_table().live()).unwrap()
        });
        assert_eq!(live, 0, "every registration was removed");
    }

    #[test]
    fn sockets_outside_a_worker_are_an_error() {
        let error = TcpListener::bind(loopback()).unwrap_err();
        assert!(error.to_string().contains("worker"));
    }
}

mod timers {
    use super::*;

    #[test]
    fn sleeps_complete_in_deadline_order_and_not_early() {
        let runtime = runtime(2);
        let order = Arc::new(Mutex::new(Vec::new()));
        // Far enough ahead that every task registers before the first deadline (miri
        // interprets slowly, and its clock keeps running meanwhile).
        let start = Instant::now() + Duration::from_millis(if cfg!(miri) { 2000 } else { 50 });
        let handles: Vec<_> = [30u64, 10, 20, 0]
            .into_iter()
            .map(|millis| {
                let order = Arc::clone(&order);
                runtime.spawn_on(0, async move {
                    // Absolute deadlines: the order must not depend on when tasks start.
                    crate::sleep_until(start + Duration::from_millis(millis)).await;
                    assert!(Instant::now() >= start + Duration::from_millis(millis));
                    order.lock().unwrap().push(millis);
                })
            })
            .collect();
        for handle in handles {
            runtime.block_on(handle).unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 10, 20, 30]);
    }

    #[test]
    fn timeout_drops_the_slow_future_and_passes_the_fast_one() {
        let runtime = runtime(1);
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dropped);
        let (slow, fast) = runtime.block_on(async move {
            struct SetOnDrop(Arc<AtomicBool>);
            impl Drop for SetOnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let guard = SetOnDrop(flag);
            let slow = timeout(Duration::from_millis(10), async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            })
            .await;
            let fast = timeout(Duration::from_secs(5), async { 7 }).await;
            (slow, fast)
        });
        assert!(slow.is_err());
        assert_eq!(fast, Ok(7));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn dropped_sleeps_leave_no_live_timer_behind() {
        let runtime = runtime(1);
        let heap_len = runtime.block_on(async {
            for _ in 0..1000 {
                let mut far = sleep(Duration::from_secs(3600));
                // Register, then drop.
                poll_fn(|cx| {
                    assert!(std::pin::Pin::new(&mut far).poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            crate::worker::with_local(|local| local.timers.borrow_mut().len()).unwrap()
        });
        assert!(heap_len <= 200, "{heap_len} cancelled timers kept");
    }

    #[test]
    #[allow(
        clippy::async_yields_async,
        reason = "the registered Sleep is the point"
    )]
    fn sleep_moved_to_another_worker_still_fires() {
        let runtime = runtime(2);
        let registered = runtime.block_on(async {
            let mut sleep = sleep(Duration::from_millis(20));
            poll_fn(|cx| {
                assert!(std::pin::Pin::new(&mut sleep).poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            sleep
        });
        runtime.block_on(runtime.spawn_on(1, registered)).unwrap();
    }

    #[test]
    fn a_due_sleep_yields_once_and_a_max_sleep_waits() {
        let runtime = runtime(1);
        let (first, second, max) = runtime.block_on(async {
            let mut zero = sleep(Duration::ZERO);
            let mut max = sleep(Duration::MAX);
            poll_fn(|cx| {
                let first = std::pin::Pin::new(&mut zero).poll(cx).is_ready();
                let second = std::pin::Pin::new(&mut zero).poll(cx).is_ready();
                let max = std::pin::Pin::new(&mut max).poll(cx).is_pending();
                Poll::Ready((first, second, max))
            })
            .await
        });
        assert_eq!((first, second, max), (false, true, true));
        assert!(crate::timer::deadline_after(Instant::now(), Duration::MAX) > Instant::now());
    }
}

mod wakers {
    use super::*;

    /// The core guarantee: a waker kept after its task finished cannot wake the task
    /// that reuses its slot, neither from the worker's own thread nor from another.
    #[test]
    fn stale_waker_does_not_wake_a_later_task_in_the_same_slot() {
        let runtime = runtime(1);
        let polls = Arc::new(AtomicUsize::new(0));
        let live_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let release = Arc::new(AtomicBool::new(false));
        let (stale, later) = {
            let polls = Arc::clone(&polls);
            let live_waker = Arc::clone(&live_waker);
            let release = Arc::clone(&release);
            runtime.block_on(async move {
                // Task A: hands out its waker and finishes.
                let stale = spawn(poll_fn(|cx| Poll::Ready(cx.waker().clone())))
                    .await
                    .unwrap();
                // Task B: reuses A's slot (the free list is LIFO), counts its polls.
                let later = spawn(poll_fn(move |cx| {
                    polls.fetch_add(1, Ordering::SeqCst);
                    *live_waker.lock().unwrap() = Some(cx.waker().clone());
                    if release.load(Ordering::SeqCst) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }));
                yield_now().await;
                (stale, later)
            })
        };
        let polled_once = polls.load(Ordering::SeqCst);
        assert_eq!(polled_once, 1);
        let live = live_waker.lock().unwrap().clone().unwrap();
        let (stale_worker, stale_key) = crate::waker::decode(stale.data().addr());
        let (live_worker, live_key) = crate::waker::decode(live.data().addr());
        assert_eq!(
            (stale_worker, stale_key.slot),
            (live_worker, live_key.slot),
            "slot reused"
        );
        assert_ne!(stale_key.generation, live_key.generation);

        // Stale wakes: on the worker thread, and from this (foreign) thread.
        let on_worker = stale.clone();
        runtime.block_on(async move {
            on_worker.wake_by_ref();
            for _ in 0..5 {
                yield_now().await;
            }
        });
        stale.wake_by_ref();
        runtime.block_on(async {
            for _ in 0..5 {
                yield_now().await;
            }
        });
        assert_eq!(
            polls.load(Ordering::SeqCst),
            polled_once,
            "a stale waker woke the new task"
        );

        // The live waker does wake it.
        release.store(true, Ordering::SeqCst);
        live.wake();
        runtime.block_on(later).unwrap();
        assert_eq!(polls.load(Ordering::SeqCst), polled_once + 1);
    }

    #[test]
    fn cross_thread_wakes_reach_the_task() {
        let runtime = runtime(2);
        let woken = Arc::new(AtomicUsize::new(0));
        let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
        let task = {
            let (woken, slot) = (Arc::clone(&woken), Arc::clone(&slot));
            runtime.spawn_on(
                1,
                poll_fn(move |cx| {
                    *slot.lock().unwrap() = Some(cx.waker().clone());
                    if woken.load(Ordering::SeqCst) >= 100 {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }),
            )
        };
        for _ in 0..100 {
            // Bounded wait for the task to publish its waker.
            let deadline = Instant::now() + Duration::from_secs(5);
            let waker = loop {
                if let Some(waker) = slot.lock().unwrap().take() {
                    break waker;
                }
                assert!(Instant::now() < deadline, "task never re-registered");
                std::thread::yield_now();
            };
            woken.fetch_add(1, Ordering::SeqCst);
            waker.wake();
        }
        runtime.block_on(task).unwrap();
    }

    #[test]
    fn panicking_task_reports_to_its_handle_and_the_worker_survives() {
        let runtime = runtime(1);
        let result = runtime.block_on(async {
            let failed = spawn(async { panic!("task failure on purpose") }).await;
            let fine = spawn(async { 5 }).await.unwrap();
            (failed.unwrap_err().is_panic(), fine)
        });
        assert_eq!(result, (true, 5));
    }
}

mod shutdown {
    use super::*;

    #[test]
    fn trigger_wakes_every_waiter_and_late_waiters_complete_at_once() {
        let runtime = runtime(2);
        let shutdown = Shutdown::new();
        let waiters: Vec<_> = (0..10).map(|_| runtime.spawn(shutdown.wait())).collect();
        let dropped = shutdown.wait();
        drop(dropped);
        shutdown.trigger();
        shutdown.trigger();
        for waiter in waiters {
            runtime.block_on(waiter).unwrap();
        }
        runtime.block_on(shutdown.wait());
    }

    #[test]
    fn dropping_the_runtime_cancels_unfinished_tasks() {
        let runtime = runtime(2);
        let pending = runtime.spawn(std::future::pending::<()>());
        let sleeping = runtime.spawn(sleep(Duration::from_secs(3600)));
        drop(runtime);
        let runtime = super::runtime(1);
        assert!(matches!(
            runtime.block_on(pending),
            Err(JoinError::Cancelled)
        ));
        assert!(matches!(
            runtime.block_on(sleeping),
            Err(JoinError::Cancelled)
        ));
    }
}

mod runtime {
    use super::*;

    #[test]
    fn block_on_inside_a_worker_is_refused_not_deadlocked() {
        let outer = Arc::new(super::runtime(1));
        let inner = Arc::clone(&outer);
        let result = outer.block_on(async move {
            let refused =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.block_on(async {})))
                    .is_err();
            // Released here, so the last reference (and the runtime's drop) stays outside.
            drop(inner);
            refused
        });
        assert!(result);
    }

    #[test]
    fn spawn_is_round_robin_over_workers() {
        let runtime = super::runtime(3);
        let mut seen: Vec<usize> = (0..6)
            .map(|_| {
                runtime
                    .block_on(runtime.spawn(async { crate::current_worker().unwrap() }))
                    .unwrap()
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn spawning_onto_a_stopped_runtime_cancels_at_once() {
        let runtime = super::runtime(2);
        let spawner = runtime.spawner();
        drop(runtime);
        let dropped = Arc::new(AtomicBool::new(false));
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let guard = SetOnDrop(Arc::clone(&dropped));
        let handle = spawner.spawn_on(1, async move {
            let _guard = guard;
        });
        assert!(
            dropped.load(Ordering::Acquire),
            "the future was dropped, not kept"
        );
        assert!(matches!(
            crate::runtime::block_on_thread(handle),
            Err(JoinError::Cancelled)
        ));
    }
}

mod hyper_glue {
    use super::*;
    use hyper::rt::{Executor, Timer};

    #[test]
    fn hyper_executor_spawns_and_hyper_timer_sleeps_and_resets() {
        let runtime = super::runtime(1);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let waited = runtime.block_on(async move {
            crate::HyperExecutor.execute(async move { flag.store(true, Ordering::SeqCst) });
            let start = Instant::now();
            let mut sleep = crate::HyperTimer.sleep(Duration::from_secs(3600));
            // Register the long deadline, then pull it in: the reset must take effect.
            poll_fn(|cx| {
                assert!(sleep.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            crate::HyperTimer.reset(&mut sleep, Instant::now() + Duration::from_millis(10));
            sleep.await;
            yield_now().await;
            start.elapsed()
        });
        assert!(waited < Duration::from_secs(60));
        assert!(ran.load(Ordering::SeqCst));
    }
}

/// The `sync` primitives between tasks on different workers, with futures cancelled
/// by timeouts while they wait: a lost wake-up would hang, so each test runs under a
/// generous overall timeout.
mod cross_worker {
    use super::*;
    use crate::sync::{Notify, mpsc, oneshot};

    /// Long enough never to fire on a working channel, short enough to end a hung test.
    const HANG: Duration = Duration::from_secs(60);

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_one_slot_channel_with_cancelled_sends_delivers_every_sent_value_once() {
        let runtime = super::runtime(2);
        let (sender, mut receiver) = mpsc::channel::<u64>(1);
        let producers: Vec<_> = (0..4u64)
            .map(|producer| {
                let sender = sender.clone();
                runtime.spawn(async move {
                    let (mut sent, mut sum) = (0u64, 0u64);
                    for index in 0..400 {
                        let value = producer * 1_000 + index;
                        // A short timeout cancels some sends while they wait for room.
                        match timeout(Duration::from_micros(100), sender.send(value)).await {
                            Ok(Ok(())) => {
                                sent += 1;
                                sum += value;
                            }
                            Ok(Err(_)) => panic!("the receiver is alive"),
                            Err(_) => {}
                        }
                    }
                    (sent, sum)
                })
            })
            .collect();
        drop(sender);
        let consumer = runtime.spawn(async move {
            let (mut received, mut sum) = (0u64, 0u64);
            while let Some(value) = receiver.recv().await {
                received += 1;
                sum += value;
                if received % 7 == 0 {
                    yield_now().await;
                }
                if received % 100 == 0 {
                    // Long enough for the waiting sends' timeouts to fire.
                    sleep(Duration::from_millis(2)).await;
                }
            }
            (received, sum)
        });
        let ((sent, sent_sum), (received, received_sum)) = runtime.block_on(async move {
            timeout(HANG, async move {
                let (mut sent, mut sum) = (0, 0);
                for producer in producers {
                    let (count, total) = producer.await.unwrap();
                    sent += count;
                    sum += total;
                }
                ((sent, sum), consumer.await.unwrap())
            })
            .await
            .expect("a lost wake-up hung the channel")
        });
        assert!(sent > 0);
        assert_eq!((received, received_sum), (sent, sent_sum));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn notify_one_is_never_lost_to_a_cancelled_waiter() {
        let runtime = super::runtime(2);
        let ping = Arc::new(Notify::new());
        let pong = Arc::new(Notify::new());
        const ROUNDS: usize = 300;
        let waiter = {
            let (ping, pong) = (Arc::clone(&ping), Arc::clone(&pong));
            runtime.spawn(async move {
                for _ in 0..ROUNDS {
                    // Cancelled now and then, possibly after notify_one chose it: the
                    // notification must come back as the permit.
                    while timeout(Duration::from_micros(200), ping.notified())
                        .await
                        .is_err()
                    {}
                    pong.notify_one();
                }
            })
        };
        let notifier = runtime.spawn(async move {
            for round in 0..ROUNDS {
                if round % 20 == 0 {
                    // Long enough for the waiter's timeouts to fire.
                    sleep(Duration::from_millis(2)).await;
                }
                ping.notify_one();
                pong.notified().await;
            }
        });
        runtime.block_on(async move {
            timeout(HANG, async move {
                waiter.await.unwrap();
                notifier.await.unwrap();
            })
            .await
            .expect("a notification was lost");
        });
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn oneshot_replies_cross_workers() {
        let runtime = super::runtime(2);
        let (requests, mut incoming) = mpsc::unbounded_channel::<(u32, oneshot::Sender<u32>)>();
        let server = runtime.spawn(async move {
            while let Some((value, reply)) = incoming.recv().await {
                if value % 5 == 0 {
                    drop(reply); // refused: the client sees `RecvError`
                } else {
                    reply.send(value * 2).unwrap();
                }
            }
        });
        let client = runtime.spawn(async move {
            let mut answered = 0;
            for value in 1..=200u32 {
                let (reply, answer) = oneshot::channel();
                requests.send((value, reply)).unwrap();
                match answer.await {
                    Ok(doubled) => {
                        assert_eq!(doubled, value * 2);
                        answered += 1;
                    }
                    Err(oneshot::RecvError) => assert_eq!(value % 5, 0),
                }
            }
            answered
        });
        let answered = runtime.block_on(async move {
            timeout(HANG, async move {
                let answered = client.await.unwrap();
                server.await.unwrap();
                answered
            })
            .await
            .expect("a reply was lost")
        });
        assert_eq!(answered, 160);
    }
}
