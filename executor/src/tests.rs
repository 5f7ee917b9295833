//! Unit tests of the runtime pieces working together on real worker threads: reactor,
//! timers, wakers (stale wake-ups included) and shutdown.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::net::{TcpListener, TcpStream};
use crate::{JoinError, Runtime, Shutdown, sleep, sleep_until, spawn, timeout};

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

    /// A worker that meets a panicking I/O waker dies (as documented), but wakes the
    /// other wakers of the same look first: a task waiting on the same event is not
    /// left unwoken. The panic used to unwind past them, dropping them unwoken.
    #[test]
    fn a_panicking_io_waker_does_not_swallow_the_other_wakes() {
        struct Panicking;
        impl std::task::Wake for Panicking {
            fn wake(self: Arc<Self>) {
                panic!("an I/O waker that panics on purpose");
            }
        }
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let runtime = runtime(1);
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waiting = Arc::clone(&flag);
        let (socket, registration) = runtime.block_on(async move {
            use std::io::Read;
            let mut socket = mio::net::TcpStream::from_std(server);
            let registration = crate::reactor::Registration::new(&mut socket).unwrap();
            for waker in [Waker::from(Arc::new(Panicking)), Waker::from(waiting)] {
                let polled = registration.poll_io(
                    &mut std::task::Context::from_waker(&waker),
                    crate::reactor::Direction::Read,
                    || socket.read(&mut [0; 16]).map(crate::reactor::Outcome::More),
                );
                assert!(polled.is_pending());
            }
            (socket, registration)
        });
        std::io::Write::write_all(&mut client, b"ready").unwrap();
        let start = Instant::now();
        while !flag.0.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the other waiter was never woken"
        );
        let mut socket = socket;
        registration.deregister(&mut socket);
    }

    /// A worker that exits wakes the waiters of every socket still registered with it,
    /// then its leftover sleeps, even when a socket's waiter panics: each waker is
    /// caught and reported, and the exit goes on. The panic used to unwind out of the
    /// exit path at the first socket, leaving the other socket's waiter and the sleep
    /// unwoken (they waited for ever).
    #[test]
    fn an_exiting_worker_wakes_every_orphaned_socket_and_sleep_past_a_panicking_waker() {
        struct Panicking;
        impl std::task::Wake for Panicking {
            fn wake(self: Arc<Self>) {
                panic!("a socket's waker that panics on purpose");
            }
        }
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let runtime = runtime(1);
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let mut pairs = Vec::new();
        for _ in 0..2 {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            pairs.push((client, server));
        }
        let socket_flag = Arc::new(Flag(AtomicBool::new(false)));
        let sleep_flag = Arc::new(Flag(AtomicBool::new(false)));
        let servers: Vec<_> = pairs
            .iter()
            .map(|(_, server)| server.try_clone().unwrap())
            .collect();
        let (socket_waker, sleep_waker) = (
            Waker::from(Arc::clone(&socket_flag)),
            Waker::from(Arc::clone(&sleep_flag)),
        );
        let (kept, sleeper) = runtime.block_on(async move {
            use std::io::Read;
            let mut kept = Vec::new();
            // The panicking waiter's socket registers first, so it is woken first.
            for (server, waker) in servers
                .into_iter()
                .zip([Waker::from(Arc::new(Panicking)), socket_waker])
            {
                let mut socket = mio::net::TcpStream::from_std(server);
                let registration = crate::reactor::Registration::new(&mut socket).unwrap();
                let polled = registration.poll_io(
                    &mut std::task::Context::from_waker(&waker),
                    crate::reactor::Direction::Read,
                    || socket.read(&mut [0; 16]).map(crate::reactor::Outcome::More),
                );
                assert!(polled.is_pending());
                kept.push((socket, registration));
            }
            let mut sleeper = Box::pin(sleep(Duration::from_secs(3600)));
            let polled = sleeper
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&sleep_waker));
            assert!(polled.is_pending());
            (kept, sleeper)
        });
        drop(runtime);
        assert!(
            socket_flag.0.load(Ordering::SeqCst),
            "the other socket's waiter was not woken"
        );
        assert!(
            sleep_flag.0.load(Ordering::SeqCst),
            "the leftover sleep was not woken"
        );
        for (mut socket, registration) in kept {
            registration.deregister(&mut socket);
        }
        drop((sleeper, pairs));
    }

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

    /// Polls a sleep of its own when woken (on the worker, while it fires timers).
    struct PollsASleep {
        sleep: Mutex<Option<std::pin::Pin<Box<crate::Sleep>>>>,
        woken: AtomicBool,
    }

    impl std::task::Wake for PollsASleep {
        fn wake(self: Arc<Self>) {
            if let Some(mut sleep) = crate::sync::lock(&self.sleep).take() {
                let _ = sleep
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(Waker::noop()));
            }
            self.woken.store(true, Ordering::SeqCst);
        }
    }

    /// A waker that polls a `Sleep` (which registers with the worker's timer heap) when
    /// its own timer fires: the worker wakes due timers with the heap unlocked, so this
    /// neither deadlocks the worker nor panics. It used to deadlock.
    #[test]
    fn a_waker_may_poll_a_sleep_when_its_timer_fires() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = runtime(1);
            let woken = runtime.block_on(async {
                let waker = Arc::new(PollsASleep {
                    sleep: Mutex::new(Some(Box::pin(sleep(Duration::from_secs(10))))),
                    woken: AtomicBool::new(false),
                });
                let mut fires = Box::pin(sleep(Duration::from_millis(20)));
                let polled =
                    fires
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(&Waker::from(
                            Arc::clone(&waker),
                        )));
                assert!(polled.is_pending());
                sleep(Duration::from_millis(100)).await;
                waker.woken.load(Ordering::SeqCst)
            });
            let _ = done.send(woken);
        });
        let woken = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker deadlocked in the waker");
        assert!(woken, "the timer's waker ran");
    }

    #[test]
    fn sleeps_complete_in_deadline_order_and_not_early() {
        // One worker: each worker fires its own heap's timers, and tasks move between
        // workers, so across two the order of deadlines 10 ms apart depends on when each
        // worker runs (under miri, 20 and 30 came out swapped).
        let runtime = runtime(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        // Far enough ahead that every task registers before the first deadline (miri
        // interprets slowly, and its clock keeps running meanwhile).
        let start = Instant::now() + Duration::from_millis(if cfg!(miri) { 2000 } else { 50 });
        let handles: Vec<_> = [30u64, 10, 20, 0]
            .into_iter()
            .map(|millis| {
                let order = Arc::clone(&order);
                runtime.spawn(async move {
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
            // Under miri 400: twice the 200 the assertion allows (the heap compacts at 64).
            for _ in 0..if cfg!(miri) { 400 } else { 1000 } {
                let mut far = sleep(Duration::from_secs(3600));
                // Register, then drop.
                poll_fn(|cx| {
                    assert!(std::pin::Pin::new(&mut far).poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            crate::worker::with_local(|local| crate::sync::lock(&local.shared.timers).len())
                .unwrap()
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

    /// Panics when woken.
    struct Panicking;

    impl std::task::Wake for Panicking {
        fn wake(self: Arc<Self>) {
            panic!("a waker that panics on purpose");
        }
    }

    /// Counts its wakes.
    struct Counting(AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A worker that exits wakes every sleep left in its heap even when some of their
    /// wakers panic: each is caught and reported, and the exit goes on. The first
    /// panicking waker (the earliest deadline, woken first) used to unwind out of the
    /// worker's exit path, dropping the later wakers unwoken.
    #[test]
    fn an_exiting_worker_wakes_every_leftover_sleep_past_a_panicking_waker() {
        let runtime = runtime(1);
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let counted = Waker::from(Arc::clone(&counting));
        // In a struct: the runtime hands back a value, not futures to await.
        struct Kept(Vec<std::pin::Pin<Box<crate::Sleep>>>);
        let Kept(sleeps) = runtime.block_on(async move {
            let panicking = Waker::from(Arc::new(Panicking));
            let mut sleeps = Vec::new();
            // Registered in deadline order, the panicking ones first and third.
            for (hours, waker) in [
                (1, &panicking),
                (2, &counted),
                (3, &panicking),
                (4, &counted),
            ] {
                let mut sleeper = Box::pin(sleep(Duration::from_secs(3600 * hours)));
                let polled = sleeper
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(waker));
                assert!(polled.is_pending());
                sleeps.push(sleeper);
            }
            Kept(sleeps)
        });
        drop(runtime);
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            2,
            "a leftover sleep was not woken"
        );
        drop(sleeps);
    }

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
    fn spawns_from_outside_are_taken_by_every_worker() {
        // From a thread that is no worker, spawns go to the runtime's injector; each
        // wakes a sleeping worker, and busy ones take batches: all three run some.
        let runtime = super::runtime(3);
        let tasks: Vec<_> = (0..48)
            .map(|_| {
                runtime.spawn(async {
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(1) {
                        std::hint::spin_loop();
                    }
                    crate::current_worker().unwrap()
                })
            })
            .collect();
        let mut seen: Vec<usize> = tasks
            .into_iter()
            .map(|task| runtime.block_on(task).unwrap())
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

/// Where a value was dropped: the thread's name and its worker index, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DropSite {
    thread: Option<String>,
    worker: Option<usize>,
}

/// Records where it is dropped.
struct RecordsDrop(std::sync::mpsc::Sender<DropSite>);

impl Drop for RecordsDrop {
    fn drop(&mut self) {
        let _ = self.0.send(DropSite {
            thread: std::thread::current().name().map(str::to_owned),
            worker: crate::current_worker(),
        });
    }
}

/// A task that reports its worker once it runs, then waits for ever holding a
/// [`RecordsDrop`].
fn blocked_forever(
    started: std::sync::mpsc::Sender<usize>,
    dropped: std::sync::mpsc::Sender<DropSite>,
) -> impl std::future::Future<Output = u32> + Send + 'static {
    let recorder = RecordsDrop(dropped);
    async move {
        let _recorder = recorder;
        let _ = started.send(crate::current_worker().unwrap());
        std::future::pending::<u32>().await
    }
}

const WAIT: Duration = Duration::from_secs(10);

mod abort {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_task_blocked_forever_is_dropped_on_its_worker_from_a_plain_thread() {
        let runtime = runtime(2);
        let (started, on_worker) = channel();
        let (dropped, drop_site) = channel();
        let task = runtime.spawn(blocked_forever(started, dropped));
        let worker = on_worker.recv_timeout(WAIT).unwrap();
        let abort = task.abort_handle();
        // A thread that is no part of the runtime aborts it.
        std::thread::spawn(move || abort.abort()).join().unwrap();
        let result = runtime.block_on(task);
        assert!(matches!(result, Err(JoinError::Aborted)), "{result:?}");
        // Dropped before the handle resolved, on a worker thread (whichever took the
        // woken task: with work stealing, not necessarily the one it started on).
        let site = drop_site
            .try_recv()
            .expect("dropped before the handle resolved");
        assert!(site.worker.is_some(), "{worker}: {site:?}");
        assert!(
            site.thread
                .as_deref()
                .is_some_and(|name| name.starts_with("executor-worker")),
            "{site:?}"
        );
    }

    #[test]
    fn an_abort_from_another_worker_twice_and_after_the_handle_is_dropped() {
        let runtime = runtime(2);
        let (started, on_worker) = channel();
        let (dropped, drop_site) = channel();
        let task = runtime.spawn_on(0, blocked_forever(started, dropped));
        let worker = on_worker.recv_timeout(WAIT).unwrap();
        let abort = task.abort_handle();
        drop(task);
        let aborter = abort.clone();
        let from = runtime
            .block_on(runtime.spawn_on(1, async move {
                aborter.abort();
                aborter.abort();
                crate::current_worker().unwrap()
            }))
            .unwrap();
        assert_ne!(from, worker, "aborted from the other worker");
        let site = drop_site
            .recv_timeout(WAIT)
            .expect("the future was dropped");
        // On a worker thread: the one that woke it, or one that stole it.
        assert!(site.worker.is_some(), "{worker}: {site:?}");
        abort.abort();
        let deadline = Instant::now() + WAIT;
        while !abort.is_finished() {
            assert!(Instant::now() < deadline, "the task never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_task_that_aborts_itself_is_dropped_at_its_next_turn() {
        let runtime = runtime(1);
        let (dropped, drop_site) = channel();
        let (own_sender, own_receiver) = channel::<crate::AbortHandle>();
        let (ran_on, worker) = channel();
        let recorder = RecordsDrop(dropped);
        let task = runtime.spawn(async move {
            let _recorder = recorder;
            ran_on.send(crate::current_worker()).unwrap();
            let own = own_receiver.recv().unwrap();
            own.abort();
            std::future::pending::<u32>().await
        });
        own_sender.send(task.abort_handle()).unwrap();
        assert!(matches!(runtime.block_on(task), Err(JoinError::Aborted)));
        // The worker's index is process-wide (other tests' runtimes hold entries too),
        // so compare with the one the task ran on, not with 0.
        let worker = worker.try_recv().unwrap();
        assert!(worker.is_some());
        assert_eq!(drop_site.try_recv().unwrap().worker, worker);
    }

    #[test]
    fn aborting_a_finished_task_keeps_its_value() {
        let runtime = runtime(1);
        let task = runtime.spawn(async { 11 });
        let deadline = Instant::now() + WAIT;
        while !task.is_finished() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        task.abort();
        task.abort_handle().abort();
        assert_eq!(runtime.block_on(task).unwrap(), 11);
    }

    #[test]
    fn an_abort_after_the_runtime_is_gone_does_nothing_harmful() {
        let runtime = runtime(2);
        let (started, on_worker) = channel();
        let (dropped, drop_site) = channel();
        let task = runtime.spawn(blocked_forever(started, dropped));
        on_worker.recv_timeout(WAIT).unwrap();
        drop(runtime);
        assert!(drop_site.recv_timeout(WAIT).is_ok());
        // The task's word now names a released (or reused) worker entry.
        let other = super::runtime(2);
        task.abort();
        let result = other.block_on(task);
        assert!(matches!(result, Err(JoinError::Cancelled)), "{result:?}");
    }

    #[test]
    fn many_tasks_aborted_while_others_wake_them() {
        let runtime = runtime(2);
        // Under miri, a fifth as many (still a few pages of the task tables).
        let count = if cfg!(miri) { 100 } else { 500 };
        let tasks: Vec<_> = (0..count)
            .map(|n| {
                runtime.spawn(async move {
                    loop {
                        sleep(Duration::from_millis(n % 3)).await;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let result = runtime.block_on(task);
            assert!(matches!(result, Err(JoinError::Aborted)), "{result:?}");
        }
    }
}

mod abort_races {
    use super::*;

    /// Counts drops of the futures it is part of.
    struct CountsDrop(Arc<AtomicUsize>);

    impl Drop for CountsDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The first poll and the abort race (spawned from a plain thread, aborted at once,
    /// the task possibly already polled on another worker): the task never finishes by
    /// itself, so only the abort's wake-up can end it; a lost wake-up would hang here.
    #[test]
    fn an_abort_racing_the_first_poll_is_never_lost() {
        let runtime = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        let tasks: Vec<_> = (0..rounds)
            .map(|_| {
                let guard = CountsDrop(Arc::clone(&drops));
                let task = runtime.handle().spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await
                });
                task.abort();
                task
            })
            .collect();
        for task in tasks {
            let result = runtime.block_on(timeout(WAIT, task)).expect("abort lost");
            assert!(matches!(result, Err(JoinError::Aborted)), "{result:?}");
        }
        assert_eq!(drops.load(Ordering::SeqCst), rounds);
    }

    /// Aborts racing completions: every task ends exactly once, with its value or
    /// aborted, and its future is dropped exactly once.
    #[test]
    fn aborts_racing_completions_end_every_task_once() {
        let runtime = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        let tasks: Vec<_> = (0..rounds)
            .map(|n| {
                let guard = CountsDrop(Arc::clone(&drops));
                runtime.spawn(async move {
                    let _guard = guard;
                    for _ in 0..n % 5 {
                        yield_now().await;
                    }
                    n
                })
            })
            .collect();
        let aborter = {
            let aborts: Vec<_> = tasks.iter().map(|task| task.abort_handle()).collect();
            std::thread::spawn(move || {
                for (n, abort) in aborts.iter().enumerate() {
                    if n % 7 == 0 {
                        std::thread::yield_now();
                    }
                    abort.abort();
                }
            })
        };
        let (mut values, mut aborted) = (0, 0);
        for (n, task) in tasks.into_iter().enumerate() {
            match runtime
                .block_on(timeout(WAIT, task))
                .expect("a task never ended")
            {
                Ok(value) => {
                    assert_eq!(value, n);
                    values += 1;
                }
                Err(JoinError::Aborted) => aborted += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        aborter.join().unwrap();
        assert_eq!(values + aborted, rounds);
        assert_eq!(drops.load(Ordering::SeqCst), rounds);
    }
}

mod join_set {
    use super::*;
    use crate::JoinSet;

    /// A task's output whose destructor panics.
    struct PanicsOnDrop(Arc<AtomicUsize>);

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("an output's destructor panics on purpose");
        }
    }

    /// Outputs nobody took, whose destructors panic, dropped with their `JoinHandle`
    /// (the task finished before or after), with their `JoinSet`, or by `detach_all`:
    /// no panic comes out, inside `block_on` or outside, and the runtime goes on.
    #[test]
    fn an_output_whose_destructor_panics_is_contained_when_nobody_takes_it() {
        let runtime = runtime(2);
        let drops = Arc::new(AtomicUsize::new(0));
        let output = {
            let drops = Arc::clone(&drops);
            move || PanicsOnDrop(Arc::clone(&drops))
        };
        let until_finished = |finished: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !finished() {
                assert!(Instant::now() < deadline, "the task never finished");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        // Outside `block_on`: finished, then the handle dropped.
        let task = runtime.spawn({
            let output = output.clone();
            async move { output() }
        });
        until_finished(&|| task.is_finished());
        drop(task);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        runtime.block_on({
            let output = output.clone();
            let drops = Arc::clone(&drops);
            async move {
                // Inside `block_on`: finished, then the handle dropped.
                let task = spawn({
                    let output = output.clone();
                    async move { output() }
                });
                while !task.is_finished() {
                    yield_now().await;
                }
                drop(task);
                assert_eq!(drops.load(Ordering::SeqCst), 2);
                // The handle dropped first (an `AbortHandle` kept), then it finishes.
                let (go, wait) = crate::sync::oneshot::channel::<()>();
                let task = spawn({
                    let output = output.clone();
                    async move {
                        let _ = wait.await;
                        output()
                    }
                });
                let abort = task.abort_handle();
                drop(task);
                go.send(()).unwrap();
                while !abort.is_finished() {
                    yield_now().await;
                }
                drop(abort);
                // A set dropped, and a set detached, with finished tasks in it.
                for detach in [false, true] {
                    let mut set = JoinSet::new();
                    let mut aborts = Vec::new();
                    for _ in 0..3 {
                        let output = output.clone();
                        aborts.push(set.spawn(async move { output() }));
                    }
                    while !aborts.iter().all(crate::AbortHandle::is_finished) {
                        yield_now().await;
                    }
                    if detach {
                        set.detach_all();
                    }
                    drop(set);
                }
            }
        });
        assert_eq!(drops.load(Ordering::SeqCst), 9);
        assert_eq!(runtime.block_on(runtime.spawn(async { 5 })).unwrap(), 5);
    }

    #[test]
    fn a_thousand_tasks_over_two_workers_are_all_joined_once() {
        // Under miri, a fifth as many: each worker's tasks still fill more than the
        // first page of its task table (64 slots).
        let count: u32 = if cfg!(miri) { 200 } else { 1000 };
        let runtime = runtime(2);
        let handle = runtime.handle().clone();
        let joined = runtime.block_on(async move {
            let mut set = JoinSet::new();
            for n in 0..count {
                let work = async move {
                    for _ in 0..n % 4 {
                        yield_now().await;
                    }
                    n
                };
                if n % 2 == 0 {
                    set.spawn(work);
                } else {
                    set.spawn_on(work, &handle);
                }
            }
            assert_eq!(set.len(), count as usize);
            let mut joined = Vec::new();
            while let Some(result) = set.join_next().await {
                joined.push(result.unwrap());
            }
            assert!(set.is_empty());
            assert!(set.join_next().await.is_none());
            joined
        });
        let mut sorted = joined.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..count).collect::<Vec<_>>());
    }

    #[test]
    fn tasks_come_out_in_the_order_they_finish_not_the_order_spawned() {
        let runtime = runtime(1);
        let order = runtime.block_on(async {
            let mut set = JoinSet::new();
            // Deadlines from one instant, and far apart under miri, whose clock counts
            // the work done: the time spawning takes must not reorder them.
            let start = Instant::now();
            let step = Duration::from_millis(if cfg!(miri) { 2000 } else { 20 });
            for n in 0..5_u32 {
                set.spawn(async move {
                    sleep_until(start + step * (5 - n)).await;
                    n
                });
            }
            let mut order = Vec::new();
            while let Some(result) = set.join_next().await {
                order.push(result.unwrap());
            }
            order
        });
        assert_eq!(order, [4, 3, 2, 1, 0]);
    }

    #[test]
    fn join_next_is_cancellation_safe() {
        let runtime = runtime(1);
        let value = runtime.block_on(async {
            let mut set = JoinSet::new();
            set.spawn(async {
                sleep(Duration::from_millis(30)).await;
                "kept"
            });
            // Dropped while pending: the outcome must not be lost.
            assert!(
                timeout(Duration::from_millis(1), set.join_next())
                    .await
                    .is_err()
            );
            sleep(Duration::from_millis(60)).await;
            assert_eq!(set.len(), 1);
            set.join_next().await.unwrap().unwrap()
        });
        assert_eq!(value, "kept");
    }

    #[test]
    fn dropping_a_set_aborts_its_tasks_on_their_workers() {
        let runtime = runtime(2);
        let handle = runtime.handle().clone();
        let (dropped, drop_sites) = std::sync::mpsc::channel();
        let (started, on_worker) = std::sync::mpsc::channel();
        let mut set = JoinSet::new();
        // Fewer under miri, where 100 took about 7% of the executor's tests' time there.
        let tasks = if cfg!(miri) { 40 } else { 100 };
        for _ in 0..tasks {
            set.spawn_on(blocked_forever(started.clone(), dropped.clone()), &handle);
        }
        for _ in 0..tasks {
            on_worker.recv_timeout(WAIT).unwrap();
        }
        drop(dropped);
        // Dropped on a thread that is no worker.
        drop(set);
        let sites: Vec<_> = drop_sites.iter().collect();
        assert_eq!(sites.len(), tasks, "every task's future was dropped");
        assert!(sites.iter().all(|site| site.worker.is_some()), "{sites:?}");
    }

    #[test]
    fn abort_all_shutdown_and_detach_all() {
        let runtime = runtime(2);
        let (sender, receiver) = std::sync::mpsc::channel();
        runtime.block_on(async move {
            let mut set = JoinSet::new();
            set.spawn(async { 1 });
            for _ in 0..3 {
                set.spawn(std::future::pending());
            }
            sleep(Duration::from_millis(10)).await;
            set.abort_all();
            let (mut values, mut aborted) = (0, 0);
            while let Some(result) = set.join_next().await {
                match result {
                    Ok(value) => values += value,
                    Err(error) => aborted += usize::from(error.is_cancelled()),
                }
            }
            assert_eq!((values, aborted), (1, 3));

            for _ in 0..3 {
                set.spawn(std::future::pending());
            }
            set.shutdown().await;
            assert!(set.is_empty());

            let detached = sender.clone();
            set.spawn(async move {
                sleep(Duration::from_millis(20)).await;
                detached.send(7).unwrap();
                0
            });
            set.detach_all();
            assert!(set.is_empty() && set.try_join_next().is_none());
            drop(set);
        });
        assert_eq!(
            receiver.recv_timeout(WAIT),
            Ok(7),
            "a detached task runs on"
        );
    }

    #[test]
    #[should_panic(expected = "outside an executor worker thread")]
    fn spawn_off_a_worker_panics() {
        let mut set = JoinSet::new();
        set.spawn(async {});
    }
}

mod handle {
    use super::*;
    use crate::Handle;

    #[test]
    fn current_panics_off_runtime_threads_and_try_current_says_why() {
        let error = Handle::try_current().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("not a pagekeep-executor runtime thread")
        );
        let payload = std::panic::catch_unwind(Handle::current).unwrap_err();
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("Handle::current"), "{message}");
    }

    #[test]
    fn plain_threads_spawn_through_a_handle() {
        let runtime = runtime(2);
        let per_thread: u32 = if cfg!(miri) { 10 } else { 50 };
        let threads: Vec<_> = (0..4_u32)
            .map(|thread| {
                let handle = runtime.handle().clone();
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|n| {
                            handle.spawn(async move {
                                (thread * per_thread + n, crate::current_worker())
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut values = Vec::new();
        for thread in threads {
            for task in thread.join().unwrap() {
                let (value, worker) = runtime.block_on(task).unwrap();
                assert!(worker.is_some());
                values.push(value);
            }
        }
        values.sort_unstable();
        assert_eq!(values, (0..4 * per_thread).collect::<Vec<_>>());
    }

    #[test]
    fn a_handle_that_outlives_its_runtime_cancels_at_once() {
        let runtime = runtime(2);
        let from_a_worker = runtime.block_on(async { Handle::current() });
        drop(runtime);
        let (dropped, drop_site) = std::sync::mpsc::channel();
        let recorder = RecordsDrop(dropped);
        let task = from_a_worker.spawn(async move {
            let _recorder = recorder;
            1
        });
        assert!(
            drop_site.try_recv().is_ok(),
            "the future was dropped at once"
        );
        assert!(matches!(
            crate::runtime::block_on_thread(task),
            Err(JoinError::Cancelled)
        ));
        let (dropped, drop_site) = std::sync::mpsc::channel();
        let recorder = RecordsDrop(dropped);
        let blocking = from_a_worker.spawn_blocking(move || {
            let _recorder = recorder;
            2
        });
        assert!(
            drop_site.try_recv().is_ok(),
            "the closure was dropped unrun"
        );
        assert!(matches!(
            crate::runtime::block_on_thread(blocking),
            Err(JoinError::Cancelled)
        ));
        // A later runtime that takes over the same worker-table entries is not reached.
        let later = super::runtime(2);
        let stale = from_a_worker.clone();
        let result = later
            .block_on(async move { crate::runtime::block_on_thread(stale.spawn(async { 3 })) });
        assert!(matches!(result, Err(JoinError::Cancelled)), "{result:?}");
    }
}

mod blocking {
    use super::*;

    #[test]
    fn more_closures_than_threads_all_complete_within_the_bound() {
        const MAX: usize = 3;
        let runtime = Runtime::builder()
            .workers(1)
            .max_blocking_threads(MAX)
            .build()
            .unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..24_usize)
            .map(|n| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                runtime.handle().spawn_blocking(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    n
                })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(runtime.block_on(task).unwrap(), n);
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=MAX).contains(&most), "{most} closures ran at once");
        let (_, most_threads) = runtime.handle().blocking_pool().thread_counts();
        assert!(most_threads <= MAX, "{most_threads} threads");
    }

    #[test]
    fn a_panicking_closure_gives_panicked_and_the_pool_goes_on() {
        let runtime = Runtime::builder()
            .workers(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let result = runtime.block_on(on_blocking(|| -> u32 {
            panic!("a blocking closure panics on purpose")
        }));
        assert!(result.unwrap_err().is_panic());
        let after = runtime.block_on(on_blocking(|| 4));
        assert_eq!(after.unwrap(), 4);
    }

    #[test]
    fn blocking_threads_are_not_workers_and_know_their_runtime() {
        let runtime = runtime(1);
        let (worker, name, has_handle, spawn_refused) = runtime
            .block_on(on_blocking(|| {
                let refused = std::panic::catch_unwind(|| drop(spawn(async {}))).is_err();
                (
                    crate::current_worker(),
                    std::thread::current().name().map(str::to_owned),
                    crate::Handle::try_current().is_ok(),
                    refused,
                )
            }))
            .unwrap();
        assert_eq!(worker, None);
        assert_eq!(name.as_deref(), Some("executor-worker-blocking"));
        assert!(has_handle && spawn_refused);
    }

    #[test]
    fn idle_threads_retire_after_the_keep_alive() {
        let runtime = Runtime::builder()
            .workers(1)
            .thread_keep_alive(Duration::from_millis(20))
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                runtime
                    .handle()
                    .spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
            })
            .collect();
        for task in tasks {
            runtime.block_on(task).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        while runtime.handle().blocking_pool().thread_counts().0 != 0 {
            assert!(Instant::now() < deadline, "idle threads never retired");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The pool starts threads again when needed.
        let again = runtime.handle().spawn_blocking(|| 5);
        assert_eq!(runtime.block_on(again).unwrap(), 5);
    }

    #[test]
    fn at_shutdown_the_running_closure_finishes_and_queued_ones_are_cancelled() {
        let runtime = Runtime::builder()
            .workers(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started_sender, started) = std::sync::mpsc::channel();
        let running = runtime.handle().spawn_blocking(move || {
            started_sender.send(()).unwrap();
            released.recv().unwrap();
            "finished"
        });
        started.recv_timeout(WAIT).unwrap();
        let (dropped, drop_sites) = std::sync::mpsc::channel();
        let queued: Vec<_> = (0..5)
            .map(|_| {
                let recorder = RecordsDrop(dropped.clone());
                runtime.handle().spawn_blocking(move || drop(recorder))
            })
            .collect();
        drop(dropped);
        drop(runtime);
        for task in queued {
            let result = crate::runtime::block_on_thread(task);
            assert!(matches!(result, Err(JoinError::Cancelled)), "{result:?}");
        }
        // Dropped unrun (on the dropping thread), not run.
        let sites: Vec<_> = drop_sites.iter().collect();
        assert_eq!(sites.len(), 5);
        release.send(()).unwrap();
        assert_eq!(
            crate::runtime::block_on_thread(running).unwrap(),
            "finished"
        );
    }

    #[test]
    fn zero_and_extreme_settings_still_run_every_closure() {
        for (threads, keep_alive) in [
            (0, Duration::ZERO),
            (usize::MAX, Duration::MAX),
            (1, Duration::MAX),
            (usize::MAX, Duration::ZERO),
        ] {
            let runtime = Runtime::builder()
                .workers(1)
                .max_blocking_threads(threads)
                .thread_keep_alive(keep_alive)
                .build()
                .unwrap();
            let tasks: Vec<_> = (0..8_u32)
                .map(|n| runtime.handle().spawn_blocking(move || n + 1))
                .collect();
            let total: u32 = tasks
                .into_iter()
                .map(|task| runtime.block_on(task).unwrap())
                .sum();
            assert_eq!(total, 36, "{threads} threads, keep-alive {keep_alive:?}");
            let (_, most_threads) = runtime.handle().blocking_pool().thread_counts();
            assert!((1..=8).contains(&most_threads), "{most_threads}");
            // Idle threads kept for good must not hold up the runtime's drop.
            drop(runtime);
        }
    }

    #[test]
    fn an_aborted_closure_that_has_not_started_never_runs() {
        let runtime = Runtime::builder()
            .workers(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let first = runtime
            .handle()
            .spawn_blocking(move || released.recv().unwrap());
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let second = runtime
            .handle()
            .spawn_blocking(move || flag.store(true, Ordering::SeqCst));
        second.abort();
        release.send(()).unwrap();
        runtime.block_on(first).unwrap();
        let result = runtime.block_on(second);
        assert!(matches!(result, Err(JoinError::Aborted)), "{result:?}");
        assert!(!ran.load(Ordering::SeqCst));
    }
}

/// Runs `work` through the free [`crate::spawn_blocking`], called on a worker.
async fn on_blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, JoinError> {
    crate::spawn_blocking(work).await
}

/// The work-stealing scheduler: tasks move to idle workers, wakes reach them wherever
/// they run, no poll overlaps another of the same task, shutdown with work in flight.
mod stealing {
    use super::*;

    /// Spins for `duration` of wall-clock time (a CPU-bound handler).
    fn spin(duration: Duration) {
        let start = Instant::now();
        while start.elapsed() < duration {
            std::hint::spin_loop();
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "its 64 wall-clock spins of 1 ms take minutes under miri"
    )]
    fn tasks_spawned_on_one_busy_worker_are_stolen_by_the_idle_one() {
        let runtime = runtime(2);
        let workers = runtime
            .block_on(runtime.spawn_on(0, async {
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        spawn(async {
                            spin(Duration::from_millis(1));
                            crate::current_worker().unwrap()
                        })
                    })
                    .collect();
                let mut workers = Vec::new();
                for task in tasks {
                    workers.push(task.await.unwrap());
                }
                workers
            }))
            .unwrap();
        let mut distinct = workers.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 2, "both workers ran some: {workers:?}");
        let polls: Vec<u64> = runtime
            .scheduler_for_tests()
            .workers
            .iter()
            .map(|worker| worker.polls())
            .collect();
        assert!(
            polls.iter().all(|&polls| polls > 8),
            "polls per worker: {polls:?}"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "bounds wall-clock time, which miri's interpretation stretches"
    )]
    fn a_worker_stuck_in_a_long_poll_has_its_queue_emptied_by_the_other() {
        let runtime = runtime(2);
        let done = runtime
            .block_on(runtime.spawn_on(0, async {
                // Queued behind a task that holds worker 0 for 300 ms.
                let blocker = spawn(async { spin(Duration::from_millis(300)) });
                let quick: Vec<_> = (0..8).map(|n| spawn(async move { n })).collect();
                let started = Instant::now();
                let mut sum = 0;
                for task in quick {
                    sum += task.await.unwrap();
                }
                let quick_elapsed = started.elapsed();
                blocker.await.unwrap();
                (sum, quick_elapsed)
            }))
            .unwrap();
        assert_eq!(done.0, 28);
        // Whichever worker holds the spinning task, the other one steals the quick ones
        // from its queue instead of leaving them behind it.
        assert!(done.1 < Duration::from_millis(250), "{:?}", done.1);
    }

    #[test]
    fn a_worker_whose_queue_never_empties_still_runs_what_other_threads_spawn() {
        let runtime = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = {
            let stop = Arc::clone(&stop);
            runtime.spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    yield_now().await;
                }
            })
        };
        // From this thread: through the injector, behind a queue that is never empty.
        let handle = runtime.handle().clone();
        let spawned = std::thread::spawn(move || handle.spawn(async { 7 }))
            .join()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        while !spawned.is_finished() {
            assert!(Instant::now() < deadline, "the injected task never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Release);
        runtime.block_on(spinning).unwrap();
        assert_eq!(runtime.block_on(spawned).unwrap(), 7);
    }

    #[test]
    fn wakes_from_a_foreign_thread_reach_a_task_wherever_it_runs() {
        let runtime = runtime(2);
        let (sender, receiver) = std::sync::mpsc::channel::<Waker>();
        let rounds = if cfg!(miri) { 20 } else { 2_000 };
        let waker_thread = std::thread::spawn(move || {
            let mut woken = 0;
            while let Ok(waker) = receiver.recv() {
                waker.wake();
                woken += 1;
            }
            woken
        });
        let polls = runtime.block_on(runtime.spawn(async move {
            let mut count = 0;
            let mut sent = 0;
            poll_fn(|cx| {
                count += 1;
                if sent == rounds {
                    return Poll::Ready(());
                }
                sent += 1;
                sender.send(cx.waker().clone()).unwrap();
                Poll::Pending
            })
            .await;
            count
        }));
        assert_eq!(
            polls.unwrap(),
            rounds + 1,
            "each wake polled once, none lost"
        );
        assert_eq!(waker_thread.join().unwrap(), rounds);
    }

    #[test]
    fn no_two_polls_of_a_task_overlap_while_three_threads_wake_it() {
        let runtime = runtime(2);
        let (count, last_poll) = if cfg!(miri) { (4, 10) } else { (16, 200) };
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let polling = Arc::new(AtomicBool::new(false));
                let waker: Arc<Mutex<Option<Waker>>> = Arc::default();
                let stored = Arc::clone(&waker);
                let mut polls = 0;
                let handle = runtime.spawn(poll_fn(move |cx| {
                    assert!(!polling.swap(true, Ordering::AcqRel), "two polls at once");
                    *stored.lock().unwrap() = Some(cx.waker().clone());
                    spin(Duration::from_micros(20));
                    polls += 1;
                    polling.store(false, Ordering::Release);
                    if polls == last_poll {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }));
                (handle, waker)
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let wakers: Vec<_> = tasks.iter().map(|(_, waker)| Arc::clone(waker)).collect();
        let wakers = Arc::new(wakers);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let wakers = Arc::clone(&wakers);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        for waker in wakers.iter() {
                            if let Some(waker) = waker.lock().unwrap().clone() {
                                waker.wake();
                            }
                        }
                    }
                })
            })
            .collect();
        for (handle, _) in tasks {
            runtime.block_on(handle).unwrap();
        }
        stop.store(true, Ordering::Release);
        for thread in threads {
            thread.join().unwrap();
        }
        runtime.scheduler_for_tests().tasks.check_invariants();
    }

    #[test]
    fn wakes_racing_completion_never_poll_a_finished_or_later_task() {
        let runtime = runtime(2);
        let stale: Arc<Mutex<Vec<Waker>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let waking = {
            let stale = Arc::clone(&stale);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let wakers = stale.lock().unwrap().clone();
                    wakers.iter().for_each(Waker::wake_by_ref);
                }
            })
        };
        for _ in 0..if cfg!(miri) { 10 } else { 500 } {
            let polls = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&polls);
            let keep = Arc::clone(&stale);
            let task = runtime.spawn(poll_fn(move |cx| {
                let n = counted.fetch_add(1, Ordering::AcqRel);
                if n == 0 {
                    keep.lock().unwrap().push(cx.waker().clone());
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            }));
            runtime.block_on(task).unwrap();
            // Finished after its second poll: stale wakes never poll it again (a third
            // poll would count here) nor any later task in its slot.
            assert_eq!(polls.load(Ordering::Acquire), 2);
            let mut wakers = stale.lock().unwrap();
            if wakers.len() > 32 {
                wakers.drain(..16);
            }
        }
        stop.store(true, Ordering::Release);
        waking.join().unwrap();
        runtime.scheduler_for_tests().tasks.check_invariants();
    }

    #[test]
    fn dropping_the_runtime_with_tasks_queued_and_stolen_cancels_each_once() {
        let (rounds, count) = if cfg!(miri) { (2, 16) } else { (20, 200) };
        for _ in 0..rounds {
            let runtime = runtime(2);
            let drops = Arc::new(AtomicUsize::new(0));
            struct CountsDrop(Arc<AtomicUsize>);
            impl Drop for CountsDrop {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::AcqRel);
                }
            }
            let mut wakers = Vec::new();
            let tasks: Vec<_> = (0..count)
                .map(|n| {
                    let guard = CountsDrop(Arc::clone(&drops));
                    let (sender, receiver) = std::sync::mpsc::channel();
                    wakers.push(receiver);
                    runtime.spawn(async move {
                        let _guard = guard;
                        let mut sent = false;
                        loop {
                            if !sent {
                                sent = true;
                                let waker = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
                                let _ = sender.send(waker);
                            }
                            if n % 2 == 0 {
                                spin(Duration::from_micros(50));
                            }
                            yield_now().await;
                        }
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(2));
            drop(runtime);
            assert_eq!(
                drops.load(Ordering::Acquire),
                count,
                "every task dropped once"
            );
            for task in tasks {
                assert!(task.is_finished());
            }
            // Wakes after shutdown are no-ops.
            for receiver in wakers {
                if let Ok(waker) = receiver.try_recv() {
                    waker.wake();
                }
            }
        }
    }
}

/// A worker held by a task that never yields (issue 17): its timers, its queue and its
/// sockets are served all the same (see `monitor`).
mod held_worker {
    use super::*;

    /// Spins the thread for `duration` without yielding.
    fn spin(duration: Duration) {
        let start = Instant::now();
        while start.elapsed() < duration {
            std::hint::spin_loop();
        }
    }

    /// 100 sleepers of 10 ms, some of them registered with the heap of the worker that a
    /// 2 s computation then holds, all complete while it computes.
    #[test]
    fn sleeps_fire_behind_a_held_worker() {
        let runtime = runtime(2);
        let spinning = Arc::new(AtomicBool::new(true));
        let late = Arc::new(AtomicUsize::new(0));
        let (sleepers, spinner) = {
            let spinning = Arc::clone(&spinning);
            let late = Arc::clone(&late);
            runtime.block_on(async move {
                // Let the other worker settle into `epoll_wait`.
                sleep(Duration::from_millis(20)).await;
                let sleepers: Vec<_> = (0..100)
                    .map(|_| {
                        let spinning = Arc::clone(&spinning);
                        let late = Arc::clone(&late);
                        spawn(async move {
                            sleep(Duration::from_millis(10)).await;
                            if !spinning.load(Ordering::SeqCst) {
                                late.fetch_add(1, Ordering::SeqCst);
                            }
                        })
                    })
                    .collect();
                let spinner = spawn(async move {
                    // Behind the sleepers on this worker's queue: those it polls
                    // register with its heap before it computes.
                    yield_now().await;
                    spin(Duration::from_secs(2));
                    spinning.store(false, Ordering::SeqCst);
                });
                (sleepers, spinner)
            })
        };
        runtime.block_on(async move {
            for sleeper in sleepers {
                sleeper.await.unwrap();
            }
            spinner.await.unwrap();
        });
        assert_eq!(
            late.load(Ordering::SeqCst),
            0,
            "sleeps waited for the held worker"
        );
    }

    /// First polls posted to a worker behind a task that then holds it for 1 s run on
    /// the other worker during the computation: the monitor moves them from the held
    /// worker's inbox to the injector.
    #[test]
    fn first_polls_posted_behind_a_held_worker_run_elsewhere() {
        let runtime = runtime(2);
        let ran_during = runtime.block_on(async {
            let spawner = crate::Handle::current().spawner().clone();
            let here = crate::worker::with_local(|local| local.shared.local_index()).unwrap();
            let spinning = Arc::new(AtomicBool::new(true));
            let spinner = {
                let spinning = Arc::clone(&spinning);
                spawner.spawn_on(here, async move {
                    spin(Duration::from_secs(1));
                    spinning.store(false, Ordering::SeqCst);
                })
            };
            let posted: Vec<_> = (0..5)
                .map(|_| {
                    let spinning = Arc::clone(&spinning);
                    spawner.spawn_on(here, async move { spinning.load(Ordering::SeqCst) })
                })
                .collect();
            let mut during = 0;
            for task in posted {
                if task.await.unwrap() {
                    during += 1;
                }
            }
            spinner.await.unwrap();
            during
        });
        assert_eq!(ran_during, 5, "first polls waited for the held worker");
    }

    /// A socket registered with a worker that then computes for 1 s without yielding
    /// still gets its readiness: the monitor collects the held worker's events, and
    /// the reading task runs on the other worker.
    #[test]
    fn a_socket_of_a_held_worker_still_gets_its_events() {
        let runtime = runtime(2);
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let address = listener.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            // Once the reader waits and the worker computes.
            std::thread::sleep(Duration::from_millis(100));
            std::io::Write::write_all(&mut peer, b"ping").unwrap();
            peer
        });
        let read_during = runtime.block_on(async move {
            // Registered with this worker's `Poll`.
            let stream = TcpStream::connect(address).await.unwrap();
            let spinning = Arc::new(AtomicBool::new(true));
            let reader = {
                let spinning = Arc::clone(&spinning);
                spawn(async move {
                    let mut buffer = [0; 4];
                    let read = stream.read(&mut buffer).await.unwrap();
                    assert_eq!(&buffer[..read], b"ping"[..read].as_ref());
                    spinning.load(Ordering::SeqCst)
                })
            };
            // The reader's first poll, here or stolen: it waits for the socket.
            yield_now().await;
            spin(Duration::from_secs(1));
            spinning.store(false, Ordering::SeqCst);
            reader.await.unwrap()
        });
        drop(writer.join().unwrap());
        assert!(read_during, "the socket's event waited for the held worker");
    }

    /// A worker that runs out of tasks collects, before it blocks, the pending I/O
    /// events of a worker still in a turn (one preempted by the kernel, or held by a
    /// task), and runs the tasks they wake. The monitor, which would otherwise collect
    /// them once the turn is 4 ms old, is stopped here, so only the idle worker can:
    /// the socket's event used to wait for the end of the hold.
    #[test]
    fn an_idle_worker_collects_the_events_of_a_busy_one_before_it_blocks() {
        let runtime = runtime(2);
        runtime.scheduler_for_tests().monitor.stop();
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let address = listener.local_addr().unwrap();
        let (go, told) = std::sync::mpsc::channel::<()>();
        let handle = runtime.handle().clone();
        let writer = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            told.recv().unwrap();
            std::io::Write::write_all(&mut peer, b"ping").unwrap();
            // The event is now in the holding worker's `epoll`. Something for the idle
            // worker to do: it wakes, runs it, and looks at the busy worker's events
            // on its way back to sleep.
            drop(handle.spawn(async {}));
            peer
        });
        let read_during = runtime.block_on(async move {
            // Registered with this worker's `Poll`.
            let stream = TcpStream::connect(address).await.unwrap();
            let spinning = Arc::new(AtomicBool::new(true));
            let started = Arc::new(AtomicBool::new(false));
            let read = Arc::new(AtomicBool::new(false));
            let reader = {
                let (spinning, started, read) = (
                    Arc::clone(&spinning),
                    Arc::clone(&started),
                    Arc::clone(&read),
                );
                spawn(async move {
                    let mut buffer = [0; 4];
                    started.store(true, Ordering::SeqCst);
                    let count = stream.read(&mut buffer).await.unwrap();
                    assert_eq!(&buffer[..count], b"ping"[..count].as_ref());
                    read.store(true, Ordering::SeqCst);
                    spinning.load(Ordering::SeqCst)
                })
            };
            // The reader's first poll, here or stolen: it waits for the socket.
            while !started.load(Ordering::SeqCst) {
                yield_now().await;
            }
            yield_now().await;
            go.send(()).unwrap();
            // Held without yielding until the reader has read (or for 2 s).
            let start = Instant::now();
            while !read.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(2) {
                std::hint::spin_loop();
            }
            spinning.store(false, Ordering::SeqCst);
            reader.await.unwrap()
        });
        drop(writer.join().unwrap());
        assert!(read_during, "the socket's event waited for the held worker");
        let collected: u64 = runtime
            .scheduler_for_tests()
            .workers
            .iter()
            .map(|worker| worker.peer_events())
            .sum();
        assert!(collected >= 1, "no worker collected another's events");
    }

    /// A task spawned onto the empty queue of a worker that then computes for 1 s
    /// without yielding is stolen and runs during the computation (three times over,
    /// as the other worker may happen to be awake at the spawn).
    #[test]
    fn a_lone_task_behind_a_held_worker_is_stolen() {
        let runtime = runtime(2);
        for round in 0..3 {
            let ran_during = runtime.block_on(async {
                sleep(Duration::from_millis(20)).await;
                spawn(async {
                    let spinning = Arc::new(AtomicBool::new(true));
                    let lone = {
                        let spinning = Arc::clone(&spinning);
                        spawn(async move { spinning.load(Ordering::SeqCst) })
                    };
                    spin(Duration::from_secs(1));
                    spinning.store(false, Ordering::SeqCst);
                    lone.await.unwrap()
                })
                .await
                .unwrap()
            });
            assert!(
                ran_during,
                "round {round}: the lone task waited for the held worker"
            );
        }
    }

    /// A task queued on a worker that then computes for 1 s without yielding runs during
    /// the computation even while the other worker stays busy with a task that yields
    /// all the time: that worker never empties its own queue, so it never steals; the
    /// monitor moves the held worker's queue to the injector, which every worker looks
    /// at first in each turn.
    #[test]
    fn a_task_queued_behind_a_held_worker_runs_while_the_others_are_busy() {
        let runtime = runtime(2);
        let ran_during = runtime.block_on(async {
            let spawner = crate::Handle::current().spawner().clone();
            let here = crate::worker::with_local(|local| local.shared.local_index()).unwrap();
            let busy = Arc::new(AtomicBool::new(true));
            let busy_task = {
                let busy = Arc::clone(&busy);
                spawner.spawn_on(1 - here, async move {
                    while busy.load(Ordering::SeqCst) {
                        spin(Duration::from_micros(20));
                        yield_now().await;
                    }
                })
            };
            sleep(Duration::from_millis(20)).await;
            let ran_during = spawner
                .spawn_on(here, async {
                    let spinning = Arc::new(AtomicBool::new(true));
                    let queued = {
                        let spinning = Arc::clone(&spinning);
                        spawn(async move { spinning.load(Ordering::SeqCst) })
                    };
                    spin(Duration::from_secs(1));
                    spinning.store(false, Ordering::SeqCst);
                    queued.await.unwrap()
                })
                .await
                .unwrap();
            busy.store(false, Ordering::SeqCst);
            busy_task.await.unwrap();
            ran_during
        });
        assert!(
            ran_during,
            "the queued task waited for the held worker while the other one was busy"
        );
    }

    /// Notes whether it was woken while `spinning` was set.
    struct NotesWake {
        spinning: Arc<AtomicBool>,
        during: Arc<AtomicBool>,
    }

    impl std::task::Wake for NotesWake {
        fn wake(self: Arc<Self>) {
            if self.spinning.load(Ordering::SeqCst) {
                self.during.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Sets its flag when woken.
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Spins the thread until `flag` is set or `limit` has passed; returns the flag.
    fn spin_until(flag: &AtomicBool, limit: Duration) -> bool {
        let start = Instant::now();
        while !flag.load(Ordering::SeqCst) && start.elapsed() < limit {
            std::hint::spin_loop();
        }
        flag.load(Ordering::SeqCst)
    }

    /// An I/O waker that panics when the monitor dispatches a held worker's socket
    /// event is caught and reported, as a timer's is: the other task waiting on the same
    /// event is still woken during the hold, and the monitor still serves the worker's
    /// timers afterwards. The panic used to unwind out of the monitor's thread, dropping
    /// the other waker unwoken and ending the monitor.
    #[test]
    fn the_monitor_survives_a_panicking_io_waker() {
        struct Panicking;
        impl std::task::Wake for Panicking {
            fn wake(self: Arc<Self>) {
                panic!("an I/O waker that panics on purpose");
            }
        }
        let runtime = runtime(2);
        let listener = std::net::TcpListener::bind(loopback()).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let (woken_during, fired_during) = runtime.block_on(async move {
            let spawner = crate::Handle::current().spawner().clone();
            let here = crate::worker::with_local(|local| local.shared.local_index()).unwrap();
            // Two wakers wait for the socket to be readable, the panicking one first; the
            // worker is then held while the peer writes: only the monitor sees the event.
            let woken_during = spawner
                .spawn_on(here, async move {
                    use std::io::{Read, Write};
                    let mut socket = mio::net::TcpStream::from_std(server);
                    let registration = crate::reactor::Registration::new(&mut socket).unwrap();
                    let flag = Arc::new(Flag(AtomicBool::new(false)));
                    for waker in [
                        Waker::from(Arc::new(Panicking)),
                        Waker::from(Arc::clone(&flag)),
                    ] {
                        let polled = registration.poll_io(
                            &mut std::task::Context::from_waker(&waker),
                            crate::reactor::Direction::Read,
                            || socket.read(&mut [0; 16]).map(crate::reactor::Outcome::More),
                        );
                        assert!(polled.is_pending());
                    }
                    client.write_all(b"ready").unwrap();
                    let woken = spin_until(&flag.0, Duration::from_secs(10));
                    registration.deregister(&mut socket);
                    woken
                })
                .await
                .unwrap();
            // Then a sleep registered with a worker that this task then holds: only the
            // monitor can fire it during the hold.
            let fired_during = spawner
                .spawn_on(here, async {
                    let flag = Arc::new(Flag(AtomicBool::new(false)));
                    let waker = Waker::from(Arc::clone(&flag));
                    let mut sleeper = Box::pin(sleep(Duration::from_millis(20)));
                    let polled = sleeper
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(&waker));
                    assert!(polled.is_pending());
                    spin_until(&flag.0, Duration::from_secs(10))
                })
                .await
                .unwrap();
            (woken_during, fired_during)
        });
        assert!(
            woken_during,
            "the second I/O waker was not woken during the hold"
        );
        assert!(
            fired_during,
            "the monitor no longer fires a held worker's sleeps"
        );
    }

    /// A waker that panics when the monitor fires its timer does not end the monitor: a
    /// sleep registered with a worker that is then held for 1 s still fires during the
    /// hold afterwards. The waker panics with a payload whose destructor panics too:
    /// that payload used to be dropped outside any catch, ending the monitor.
    #[test]
    fn the_monitor_survives_a_panicking_waker() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("a panic payload whose destructor panics on purpose");
            }
        }
        struct Panicking;
        impl std::task::Wake for Panicking {
            fn wake(self: Arc<Self>) {
                std::panic::panic_any(Bomb);
            }
        }
        let runtime = runtime(2);
        let fired_during = runtime.block_on(async {
            let spawner = crate::Handle::current().spawner().clone();
            let here = crate::worker::with_local(|local| local.shared.local_index()).unwrap();
            // A sleep polled with the panicking waker, on a worker then held for 300 ms:
            // the monitor fires it.
            spawner
                .spawn_on(here, async {
                    let mut doomed = Box::pin(sleep(Duration::from_millis(20)));
                    let waker = Waker::from(Arc::new(Panicking));
                    let polled = doomed
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(&waker));
                    assert!(polled.is_pending());
                    spin(Duration::from_millis(300));
                    drop(doomed);
                })
                .await
                .unwrap();
            // Then a sleep registered with a worker that this task then holds: only the
            // monitor can fire it during the hold.
            spawner
                .spawn_on(here, async {
                    let spinning = Arc::new(AtomicBool::new(true));
                    let during = Arc::new(AtomicBool::new(false));
                    let waker = Waker::from(Arc::new(NotesWake {
                        spinning: Arc::clone(&spinning),
                        during: Arc::clone(&during),
                    }));
                    let mut sleeper = Box::pin(sleep(Duration::from_millis(50)));
                    let polled = sleeper
                        .as_mut()
                        .poll(&mut std::task::Context::from_waker(&waker));
                    assert!(polled.is_pending());
                    spin(Duration::from_secs(1));
                    spinning.store(false, Ordering::SeqCst);
                    during.load(Ordering::SeqCst)
                })
                .await
                .unwrap()
        });
        assert!(fired_during, "the sleep waited for the held worker");
    }
}

/// A full task table (`Builder::max_tasks`, shrunk from the 4,194,240 slots of the
/// real table) is an error that says so, not a cancellation (issue 17).
mod full_task_table {
    use super::*;

    fn small_runtime(tasks: usize) -> Runtime {
        Runtime::builder()
            .workers(2)
            .max_tasks(tasks)
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_spawn_past_the_table_reports_task_table_full() {
        let runtime = small_runtime(8);
        let (error, respawned) = runtime.block_on(async {
            // With the block_on task, 8 alive: the table is full.
            let earlier: Vec<_> = (0..7)
                .map(|_| spawn(std::future::pending::<()>()))
                .collect();
            let error = spawn(async {}).await.unwrap_err();
            // Freed slots take spawns again (a slot is freed just after its task's
            // last poll, which may be a little after its handle has the outcome).
            for task in earlier {
                task.abort();
                assert!(matches!(task.await, Err(JoinError::Aborted)));
            }
            let mut respawned = None;
            for _ in 0..1000 {
                match spawn(async { 5 }).await {
                    Err(JoinError::TaskTableFull) => sleep(Duration::from_millis(1)).await,
                    outcome => {
                        respawned = Some(outcome.unwrap());
                        break;
                    }
                }
            }
            (error, respawned)
        });
        assert!(matches!(error, JoinError::TaskTableFull), "{error:?}");
        assert!(!error.is_cancelled());
        assert!(error.to_string().contains("task table is full"), "{error}");
        assert_eq!(respawned, Some(5));
    }

    #[test]
    fn block_on_with_a_full_table_says_the_table_is_full() {
        let runtime = small_runtime(4);
        let pending: Vec<_> = (0..4)
            .map(|_| runtime.spawn(std::future::pending::<()>()))
            .collect();
        let outside = runtime.spawn(async {});
        let error = crate::runtime::block_on_thread(outside).unwrap_err();
        assert!(matches!(error, JoinError::TaskTableFull), "{error:?}");
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {});
        }))
        .expect_err("block_on with no room for its task");
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(message.contains("task table is full"), "{message}");
        drop(pending);
    }
}

/// Misuse a user could try, each expected to end without a hang, a panic out of the
/// runtime or a lost wake-up.
mod misuse {
    use super::*;
    use crate::sync::{Notify, mpsc};
    use crate::{JoinSet, interval, spawn_blocking};

    /// A task whose value spawns from its destructor, dropped by the runtime's
    /// shutdown: the spawn is refused (its future dropped unpolled, its handle
    /// cancelled); nothing panics or hangs.
    #[test]
    fn a_spawn_from_a_destructor_run_by_the_shutdown_is_dropped_unpolled() {
        struct SpawnsOnDrop {
            polled: Arc<AtomicBool>,
            dropped: Arc<AtomicBool>,
            cancelled: Arc<AtomicBool>,
        }
        struct Flags(Arc<AtomicBool>, Arc<AtomicBool>);
        impl Drop for Flags {
            fn drop(&mut self) {
                self.1.store(true, Ordering::SeqCst);
            }
        }
        impl Drop for SpawnsOnDrop {
            fn drop(&mut self) {
                let flags = Flags(Arc::clone(&self.polled), Arc::clone(&self.dropped));
                let handle = spawn(async move {
                    flags.0.store(true, Ordering::SeqCst);
                });
                // Awaited off the runtime: a refused spawn says so at once.
                let joined = crate::runtime::block_on_thread(handle);
                self.cancelled.store(
                    matches!(joined, Err(JoinError::Cancelled)),
                    Ordering::SeqCst,
                );
            }
        }
        let (polled, dropped, cancelled) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let runtime = runtime(2);
        let guard = SpawnsOnDrop {
            polled: Arc::clone(&polled),
            dropped: Arc::clone(&dropped),
            cancelled: Arc::clone(&cancelled),
        };
        let task = runtime.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        runtime.block_on(yield_now());
        drop(runtime);
        assert!(matches!(
            crate::runtime::block_on_thread(task),
            Err(JoinError::Cancelled)
        ));
        assert!(
            !polled.load(Ordering::SeqCst),
            "spawned after the shutdown, and polled"
        );
        assert!(
            dropped.load(Ordering::SeqCst),
            "the refused future was not dropped"
        );
        assert!(
            cancelled.load(Ordering::SeqCst),
            "the refused spawn's handle"
        );
    }

    /// A `JoinSet` dropped while its tasks panic on both workers: every task ends
    /// exactly once (panicked, or aborted before it could), each panic contained,
    /// and the runtime goes on.
    #[test]
    fn a_join_set_dropped_while_its_tasks_panic() {
        struct Ends(Arc<AtomicUsize>);
        impl Drop for Ends {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let runtime = runtime(2);
        let ended = Arc::new(AtomicUsize::new(0));
        let count = if cfg!(miri) { 8 } else { 200 };
        let after = runtime.block_on({
            let ended = Arc::clone(&ended);
            async move {
                let mut set = JoinSet::new();
                for index in 0..count {
                    // Moved into the task: dropped whether it runs or is aborted.
                    let ends = Ends(Arc::clone(&ended));
                    set.spawn(async move {
                        let _ends = ends;
                        if index % 2 == 0 {
                            yield_now().await;
                        }
                        panic!("a task that panics on purpose");
                    });
                }
                yield_now().await;
                drop(set);
                spawn(async { 7 }).await.unwrap()
            }
        });
        assert_eq!(after, 7);
        drop(runtime);
        assert_eq!(ended.load(Ordering::SeqCst), count);
    }

    /// `interval` with `Duration::MAX` ticks at once, then waits (about 30 years, not
    /// an overflow); `timeout(Duration::MAX, ..)` passes its future's output.
    #[test]
    fn max_durations_for_interval_and_timeout() {
        let runtime = runtime(1);
        runtime.block_on(async {
            let mut ticks = interval(Duration::MAX);
            let first = ticks.tick().await;
            assert!(first <= Instant::now());
            let second = timeout(Duration::from_millis(5), ticks.tick()).await;
            assert!(second.is_err(), "a second tick came at once");
            assert_eq!(timeout(Duration::MAX, async { 3 }).await, Ok(3));
            assert_eq!(
                timeout(Duration::MAX, sleep(Duration::from_millis(1))).await,
                Ok(())
            );
        });
    }

    /// `spawn_blocking` past its bound while every blocking thread is blocked: the
    /// closures queue, and run once a thread is free; the runtime's drop does not
    /// wait for a closure still blocked (it is let go afterwards), and cancels the one
    /// queued behind it.
    #[test]
    fn spawn_blocking_past_its_bound_with_every_thread_blocked() {
        let runtime = Runtime::builder()
            .workers(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let first = runtime
            .handle()
            .spawn_blocking(move || blocked.recv().is_ok());
        let queued: Vec<_> = (0..3)
            .map(|index| runtime.handle().spawn_blocking(move || index))
            .collect();
        runtime.block_on(sleep(Duration::from_millis(5)));
        release.send(()).unwrap();
        assert!(runtime.block_on(first).unwrap());
        for (index, handle) in queued.into_iter().enumerate() {
            assert_eq!(runtime.block_on(handle).unwrap(), index);
        }
        // Now a closure blocked for ever, and one queued behind it, at the drop.
        let (unblock, forever) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = std::sync::mpsc::channel::<()>();
        let stuck = runtime.handle().spawn_blocking(move || {
            started.send(()).unwrap();
            forever.recv().is_ok()
        });
        has_started.recv().unwrap();
        // Queued by the free function, on the runtime's worker.
        let (sender, receiver) = std::sync::mpsc::channel();
        runtime.block_on(async move { sender.send(spawn_blocking(|| 1)).unwrap() });
        let behind = receiver.recv().unwrap();
        drop(runtime);
        assert!(matches!(
            crate::runtime::block_on_thread(behind),
            Err(JoinError::Cancelled)
        ));
        // Let go, so that the thread ends (miri requires it).
        drop(unblock);
        assert!(!crate::runtime::block_on_thread(stuck).unwrap());
    }

    /// `Notify` with two waiters, one of them cancelled after `notify_one` chose it:
    /// the notification passes to the other.
    #[test]
    fn notify_one_with_two_waiters_one_cancelled() {
        let runtime = runtime(1);
        runtime.block_on(async {
            let notify = Notify::new();
            let mut first = Box::pin(notify.notified());
            let mut second = Box::pin(notify.notified());
            let mut cx = std::task::Context::from_waker(Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending());
            assert!(second.as_mut().poll(&mut cx).is_pending());
            notify.notify_one();
            drop(first);
            assert!(
                second.as_mut().poll(&mut cx).is_ready(),
                "the notification was lost"
            );
            // And the other order: the one left is notified first, then dropped.
            let mut third = Box::pin(notify.notified());
            let mut fourth = Box::pin(notify.notified());
            assert!(third.as_mut().poll(&mut cx).is_pending());
            assert!(fourth.as_mut().poll(&mut cx).is_pending());
            drop(fourth);
            notify.notify_one();
            assert!(third.as_mut().poll(&mut cx).is_ready());
        });
    }

    /// A bounded channel whose receiver is dropped while senders wait for room: every
    /// waiting sender is woken and gets its value back.
    #[test]
    fn mpsc_receiver_dropped_while_senders_wait() {
        let runtime = runtime(2);
        runtime.block_on(async {
            let (sender, receiver) = mpsc::channel::<usize>(1);
            sender.send(0).await.unwrap();
            let waiting: Vec<_> = (1..4)
                .map(|value| {
                    let sender = sender.clone();
                    spawn(async move { sender.send(value).await.map_err(|error| error.0) })
                })
                .collect();
            for _ in 0..4 {
                yield_now().await;
            }
            drop(receiver);
            let mut back = Vec::new();
            for task in waiting {
                back.push(task.await.unwrap().unwrap_err());
            }
            back.sort_unstable();
            assert_eq!(back, [1, 2, 3]);
            assert!(sender.is_closed());
        });
    }

    /// `block_on` inside `block_on`'s future is refused (see
    /// `runtime::block_on_inside_a_worker_is_refused_not_deadlocked`); from a closure
    /// on the runtime's blocking pool, which is no worker, it runs.
    #[test]
    fn block_on_from_a_blocking_thread_of_the_same_runtime() {
        let runtime = Arc::new(runtime(1));
        let inner = Arc::clone(&runtime);
        let handle = runtime
            .handle()
            .spawn_blocking(move || inner.block_on(async { 5 }));
        assert_eq!(runtime.block_on(handle).unwrap(), 5);
    }
}
