//! A panicking handler gets a 500; everything else carries on.

use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use pagekeep_executor::client::ClientConnection;

#[test]
fn panic_gets_500_while_concurrent_requests_succeed() {
    let server = start(builder());
    let address = server.address;
    let results = client_runtime().block_on(async move {
        let slow = spawn_clients(address, 8, "/slow?ms=100", 1);
        pagekeep_executor::sleep(Duration::from_millis(20)).await;
        let mut connection = ClientConnection::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        let panicked = get_on(&mut connection, "/panic").await;
        // The same connection keeps working after the 500.
        let after = get_on(&mut connection, "/hello").await;
        let mut slow_results = Vec::new();
        for handle in slow {
            slow_results.extend(handle.await.unwrap());
        }
        (panicked, after, slow_results)
    });
    let (panicked, after, slow) = results;
    assert_eq!(panicked.0, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(after, (StatusCode::OK, bytes::Bytes::from_static(b"hello")));
    assert_eq!(slow.len(), 8);
    for (status, body) in slow {
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"slow"[..]));
    }
}

#[test]
fn handler_that_panics_before_returning_a_future_gets_500() {
    let server = start_with(
        builder(),
        |_request| -> std::future::Ready<http::Response<TestBody>> {
            panic!("the handler function itself panics")
        },
    );
    for _ in 0..3 {
        let (status, _) = get(server.address, "/");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}

#[test]
fn handler_whose_destructor_panics_is_still_cancelled_cleanly() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("destructor panics on purpose");
        }
    }
    let server = start_with(
        builder().handler_timeout(Duration::from_millis(100)),
        |_request| async {
            let _guard = PanicOnDrop;
            std::future::pending::<http::Response<TestBody>>().await
        },
    );
    for _ in 0..3 {
        let (status, _) = get(server.address, "/");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}

/// Panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a destructor panics on purpose");
    }
}

/// Waits (bounded) for `work` on another thread; `None` if it did not finish in time.
fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    });
    match receiver.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(output)) => Some(output),
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => None,
    }
}

#[test]
fn a_task_output_that_panics_on_drop_does_not_kill_its_worker() {
    let runtime = std::sync::Arc::new(
        pagekeep_executor::Runtime::builder()
            .workers(1)
            .build()
            .unwrap(),
    );
    // Detached before it finishes: nobody takes the output, so the worker drops it
    // with the task.
    let detached = |runtime: &pagekeep_executor::Runtime| {
        let go = pagekeep_executor::Shutdown::new();
        let wait = go.wait();
        drop(runtime.spawn(async move {
            wait.await;
            PanicsOnDrop
        }));
        go.trigger();
    };
    detached(&runtime);
    // A finished task's future that panics on drop (a hand-written one: it is dropped
    // only when the task is freed), and a cancelled one that panics when dropped.
    drop(runtime.spawn(async {
        let guard = PanicsOnDrop;
        pagekeep_executor::sleep(Duration::from_millis(1)).await;
        std::mem::forget(guard);
    }));
    let running = std::sync::Arc::clone(&runtime);
    let answer = bounded(move || running.block_on(async { 42 }));
    assert_eq!(answer, Some(42), "the worker died with the destructor");
    // The worker goes on with more tasks, each dropped with a panic.
    for _ in 0..3 {
        detached(&runtime);
    }
    let running = std::sync::Arc::clone(&runtime);
    assert_eq!(bounded(move || running.block_on(async { 7 })), Some(7));
}

#[test]
fn a_cancelled_task_that_panics_on_drop_reports_cancelled_and_the_rest_are_dropped() {
    let runtime = pagekeep_executor::Runtime::builder()
        .workers(1)
        .build()
        .unwrap();
    let first = runtime.spawn(async {
        let _guard = PanicsOnDrop;
        std::future::pending::<()>().await;
    });
    let second = runtime.spawn(async {
        let _guard = PanicsOnDrop;
        std::future::pending::<()>().await;
    });
    let (dropped_sender, dropped) = std::sync::mpsc::channel::<()>();
    let third = runtime.spawn(async move {
        let _noted = dropped_sender;
        std::future::pending::<()>().await;
    });
    // Let all three start, then stop the runtime: every task is dropped.
    std::thread::sleep(Duration::from_millis(50));
    drop(runtime);
    assert_eq!(
        dropped.recv_timeout(Duration::from_secs(5)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
        "the third task was never dropped"
    );
    let client = client_runtime();
    for handle in [first, second, third] {
        let result = client.block_on(handle);
        assert!(
            matches!(result, Err(pagekeep_executor::JoinError::Cancelled)),
            "{result:?}"
        );
    }
}

/// A waker that panics when woken: the one piece of user code a worker runs outside
/// a task's poll or drop (its timers and reactor wake wakers).
struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("a waker panics on purpose");
    }
}

/// Registers a 10 ms timer of the current worker with a waker that panics: when it
/// fires, the worker's loop unwinds.
/// Allocated outside any request's arena: it is leaked on purpose.
async fn arm_a_panicking_waker() {
    pagekeep_arena::outside_arena(|| {
        let waker = std::task::Waker::from(std::sync::Arc::new(PanickingWaker));
        let mut context = std::task::Context::from_waker(&waker);
        let mut sleep = Box::pin(pagekeep_executor::sleep(Duration::from_millis(10)));
        assert!(sleep.as_mut().poll(&mut context).is_pending());
        // Kept registered: the sleep is leaked, so the timer is never cancelled.
        std::mem::forget(sleep);
    });
}

#[test]
fn block_on_a_dead_worker_panics_instead_of_hanging() {
    let runtime = std::sync::Arc::new(
        pagekeep_executor::Runtime::builder()
            .workers(1)
            .build()
            .unwrap(),
    );
    let pending = runtime.spawn(std::future::pending::<()>());
    runtime.block_on(arm_a_panicking_waker());
    std::thread::sleep(Duration::from_millis(100));
    let running = std::sync::Arc::clone(&runtime);
    let outcome = bounded(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            running.block_on(async { 1 })
        }))
    });
    let outcome = outcome.expect("block_on hangs on a dead worker");
    let payload = outcome.expect_err("block_on on a dead worker must panic");
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("died"), "{message}");
    // The dead worker's tasks were failed, not left hanging.
    let result = client_runtime().block_on(pending);
    assert!(
        matches!(result, Err(pagekeep_executor::JoinError::Cancelled)),
        "{result:?}"
    );
}

/// On a runtime with a live worker left, a spawn aimed at a dead worker is not refused:
/// its first poll runs on a live worker (a pin names where a task starts, not where it
/// must run), so `block_on`, which aims at worker 0, and `spawn_on(0, ..)` still work
/// once worker 0 died.
#[test]
fn spawns_aimed_at_a_dead_worker_run_on_a_live_one() {
    let runtime = std::sync::Arc::new(
        pagekeep_executor::Runtime::builder()
            .workers(2)
            .build()
            .unwrap(),
    );
    // Worker 0 (`block_on` polls there first) dies 10 ms after this returns.
    let worker_0 = runtime.block_on(async {
        arm_a_panicking_waker().await;
        pagekeep_executor::current_worker().unwrap()
    });
    // `block_on` runs on worker 0 until it dies, then on the other one.
    let start = std::time::Instant::now();
    loop {
        let running = std::sync::Arc::clone(&runtime);
        let worker =
            bounded(move || running.block_on(async { pagekeep_executor::current_worker() }))
                .expect("block_on hangs with worker 0 dead")
                .expect("on a worker");
        if worker != worker_0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "worker 0 never died"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let running = std::sync::Arc::clone(&runtime);
    let ran_on = bounded(move || {
        let task = running.spawn_on(0, async { pagekeep_executor::current_worker() });
        running.block_on(task)
    })
    .expect("a spawn aimed at the dead worker hangs");
    let ran_on = ran_on.expect("a spawn aimed at the dead worker was refused");
    assert!(
        ran_on.is_some_and(|worker| worker != worker_0),
        "{ran_on:?}"
    );
}

#[test]
fn a_worker_that_dies_gets_no_more_connections() {
    let server = start_with(
        builder(),
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            if request.uri().path() == "/kill-worker" {
                arm_a_panicking_waker().await;
                return text(StatusCode::OK, "armed");
            }
            routes(request).await
        },
    );
    // One of the two workers dies 10 ms after answering.
    assert_eq!(get(server.address, "/kill-worker").0, StatusCode::OK);
    std::thread::sleep(Duration::from_millis(100));
    // Every new connection goes to the live worker and is served, even while the
    // dead one serves fewer: kept open at once, they would otherwise be spread.
    let mut open = Vec::new();
    for _ in 0..6 {
        let mut stream = raw(server.address);
        std::io::Write::write_all(&mut stream, b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        let mut received = Vec::new();
        let ended = read_until(
            &mut stream,
            &mut received,
            Duration::from_secs(5),
            |bytes| count(bytes, "hello") == 1,
        );
        assert_eq!(ended, Ended::Done, "a connection went to the dead worker");
        open.push(stream);
    }
    drop(open);
}

/// `/call` panics in the handler call, `/poll` in the handler's first poll, `/body` in
/// the response body's second poll, each with a payload whose destructor panics
/// ([`PanicsOnDrop`]); anything else is the usual routes.
fn panics_with_a_payload_that_panics_on_drop(
    request: http::Request<pagekeep_executor::RequestBody>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<TestBody>> + Send>> {
    use http_body_util::BodyExt;
    match request.uri().path() {
        "/call" => std::panic::panic_any(PanicsOnDrop),
        "/poll" => Box::pin(async { std::panic::panic_any(PanicsOnDrop) }),
        "/body" => Box::pin(async {
            http::Response::new(SecondFramePanics(0).map_err(|never| match never {}).boxed())
        }),
        _ => Box::pin(routes(request)),
    }
}

/// A response body whose first frame is "first\n" and whose second poll panics with a
/// [`PanicsOnDrop`] payload.
struct SecondFramePanics(u8);

impl http_body::Body for SecondFramePanics {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0 += 1;
        if self.0 > 1 {
            std::panic::panic_any(PanicsOnDrop);
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"first\n",
        )))))
    }
}

#[test]
fn a_panic_whose_payload_panics_on_drop_still_gets_500() {
    // The payload is user code like the handler: dropping it must be contained too, or
    // the second panic takes the connection down with the 500 unsent.
    let server = start_with(builder(), panics_with_a_payload_that_panics_on_drop);
    let address = server.address;
    let results = client_runtime().block_on(async move {
        let mut connection = ClientConnection::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        let mut results = Vec::new();
        for path in ["/call", "/poll", "/hello"] {
            results.push(get_on(&mut connection, path).await.0);
        }
        results
    });
    assert_eq!(
        results,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK
        ]
    );
    // A response body that panics so is cut off, counted, and the server carries on.
    let mut stream = raw(address);
    std::io::Write::write_all(&mut stream, b"GET /body HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, CLIENT_TIMEOUT, |_| false);
    // (The head may not have gone: hyper polls the body before it writes.)
    assert_eq!(ended, Ended::Closed);
    assert!(
        !received.ends_with(b"0\r\n\r\n"),
        "a cut-off body must not look complete"
    );
    assert_eq!(server.stats.panics(), 3);
    assert_eq!(get(address, "/hello").0, StatusCode::OK);
}

/// A response extension whose destructor panics.
#[derive(Clone)]
struct ExtensionPanicsOnDrop;

impl Drop for ExtensionPanicsOnDrop {
    fn drop(&mut self) {
        panic!("a response extension's destructor panics on purpose");
    }
}

#[test]
fn a_response_extension_that_panics_on_drop_does_not_cut_the_connection() {
    // hyper drops a response's extensions once it has written the head, outside any
    // panic guard; the server drops them itself, in the request's arena, keeping the
    // one hyper reads (a custom reason phrase).
    let server = start_with(
        builder(),
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            if request.uri().path() != "/extension" {
                return routes(request).await;
            }
            let mut response = text(StatusCode::OK, "extended");
            response.extensions_mut().insert(ExtensionPanicsOnDrop);
            response
                .extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Thanks"));
            response
        },
    );
    let text = get_then_hello(server.address, "/extension");
    assert!(
        text.starts_with("HTTP/1.1 200 Fine Thanks") && text.contains("extended"),
        "{text}"
    );
    assert_eq!(count(text.as_bytes(), "HTTP/1.1 200"), 2, "{text}");
}

/// A response extension whose destructor panics, one type for each `N`. It holds no
/// data, so a map that forgets one leaks no memory.
#[derive(Clone)]
struct NumberedExtensionPanicsOnDrop<const N: usize>;

impl<const N: usize> Drop for NumberedExtensionPanicsOnDrop<N> {
    fn drop(&mut self) {
        panic!("response extension {N} panics on drop on purpose");
    }
}

fn insert_panicking<const N: usize>(extensions: &mut http::Extensions) {
    extensions.insert(NumberedExtensionPanicsOnDrop::<N>);
}

/// Panicking extensions of 64 types, for a handler to insert one by one (enough that,
/// whatever order a build's `TypeId`s give the map, one comes before the reason phrase:
/// with sixteen, one build in about seventeen had none).
const PANICKING_EXTENSIONS: [fn(&mut http::Extensions); 64] = [
    insert_panicking::<0>,
    insert_panicking::<1>,
    insert_panicking::<2>,
    insert_panicking::<3>,
    insert_panicking::<4>,
    insert_panicking::<5>,
    insert_panicking::<6>,
    insert_panicking::<7>,
    insert_panicking::<8>,
    insert_panicking::<9>,
    insert_panicking::<10>,
    insert_panicking::<11>,
    insert_panicking::<12>,
    insert_panicking::<13>,
    insert_panicking::<14>,
    insert_panicking::<15>,
    insert_panicking::<16>,
    insert_panicking::<17>,
    insert_panicking::<18>,
    insert_panicking::<19>,
    insert_panicking::<20>,
    insert_panicking::<21>,
    insert_panicking::<22>,
    insert_panicking::<23>,
    insert_panicking::<24>,
    insert_panicking::<25>,
    insert_panicking::<26>,
    insert_panicking::<27>,
    insert_panicking::<28>,
    insert_panicking::<29>,
    insert_panicking::<30>,
    insert_panicking::<31>,
    insert_panicking::<32>,
    insert_panicking::<33>,
    insert_panicking::<34>,
    insert_panicking::<35>,
    insert_panicking::<36>,
    insert_panicking::<37>,
    insert_panicking::<38>,
    insert_panicking::<39>,
    insert_panicking::<40>,
    insert_panicking::<41>,
    insert_panicking::<42>,
    insert_panicking::<43>,
    insert_panicking::<44>,
    insert_panicking::<45>,
    insert_panicking::<46>,
    insert_panicking::<47>,
    insert_panicking::<48>,
    insert_panicking::<49>,
    insert_panicking::<50>,
    insert_panicking::<51>,
    insert_panicking::<52>,
    insert_panicking::<53>,
    insert_panicking::<54>,
    insert_panicking::<55>,
    insert_panicking::<56>,
    insert_panicking::<57>,
    insert_panicking::<58>,
    insert_panicking::<59>,
    insert_panicking::<60>,
    insert_panicking::<61>,
    insert_panicking::<62>,
    insert_panicking::<63>,
];

/// Whether clearing `extensions` meets a panicking destructor before it reaches the
/// reason phrase: `Debug` lists the values in the map's order, which is the order its
/// `clear` drops them in.
fn reason_phrase_behind_a_panic(extensions: &http::Extensions) -> bool {
    let listed = format!("{extensions:?}");
    match (
        listed.find("NumberedExtensionPanicsOnDrop"),
        listed.find("ReasonPhrase"),
    ) {
        (Some(panicking), Some(reason)) => panicking < reason,
        _ => false,
    }
}

#[test]
fn a_reason_phrase_behind_an_extension_that_panics_on_drop_is_freed() {
    // A map's `clear` stops at a destructor that panics and forgets the values it has
    // not reached. Their order is the `TypeId`s', which each build sets, so the handler
    // adds panicking extensions until one comes before its reason phrase: whatever the
    // build, the reason phrase's box (in the request's arena) is behind a panic.
    let server = start_with(
        builder(),
        |request: http::Request<pagekeep_executor::RequestBody>| async move {
            if request.uri().path() != "/reason" {
                return routes(request).await;
            }
            let mut response = text(StatusCode::OK, "reasoned");
            let extensions = response.extensions_mut();
            extensions.insert(hyper::ext::ReasonPhrase::from_static(b"Behind A Panic"));
            for insert in PANICKING_EXTENSIONS {
                insert(extensions);
                if reason_phrase_behind_a_panic(extensions) {
                    return response;
                }
            }
            let extensions = std::mem::take(response.extensions_mut());
            let mut refusal = text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no panicking extension came before the reason phrase",
            );
            *refusal.extensions_mut() = extensions;
            refusal
        },
    );
    let text = get_then_hello(server.address, "/reason");
    assert!(
        text.starts_with("HTTP/1.1 200 Behind A Panic") && text.contains("reasoned"),
        "{text}"
    );
    assert_eq!(count(text.as_bytes(), "HTTP/1.1 200"), 2, "{text}");
    // Dropping the server checks that the request's arena went back to the pool: the
    // reason phrase's box was freed, not forgotten with the extensions behind the panic.
}
