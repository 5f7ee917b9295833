//! Requests on arenas: handlers allocate from their request's arena, a handler over its
//! budget gets 503 while others carry on, requests wait (bounded) for a free arena, and
//! memory that escapes a request keeps its arena out of use until it is freed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::*;
use http::{Request, Response, StatusCode};
use pagekeep_executor::PoolConfig;
use pagekeep_executor::client::ClientConnection;

/// `/where`: the address of a fresh heap allocation and whether the thread routes to
/// an arena; `/keep`: leaves a vector in `KEPT` (memory escaping the request).
async fn probes(request: Request<pagekeep_executor::RequestBody>) -> Response<TestBody> {
    match request.uri().path() {
        "/where" => {
            let probe = Box::new([7u8; 100]);
            let address = probe.as_ptr().addr();
            text(
                StatusCode::OK,
                format!("{address} {}", pagekeep_arena::in_arena()),
            )
        }
        "/keep" => {
            let escaped = vec![42u8; 1000];
            KEPT.lock().unwrap().push(escaped);
            text(StatusCode::OK, "kept")
        }
        _ => routes(request).await,
    }
}

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[test]
fn handler_allocations_come_from_the_request_arena() {
    let server = start_with(builder(), probes);
    // Every request on the connection runs in an arena of its own.
    let results = client_runtime().block_on(get_all_on_one_connection(
        server.address,
        ["/where", "/where", "/where"],
    ));
    for (status, body) in results {
        assert_eq!(status, StatusCode::OK);
        let body = String::from_utf8(body.to_vec()).unwrap();
        let (address, routed) = body.split_once(' ').unwrap();
        assert_eq!(routed, "true", "the handler ran outside an arena");
        let address: usize = address.parse().unwrap();
        assert!(
            server.pool().arena_index_of(address).is_some(),
            "a handler allocation at {address:#x} is not in the server's arenas"
        );
    }
}

#[test]
fn over_budget_gets_503_while_concurrent_requests_succeed() {
    let server = start(builder());
    let address = server.address;
    let (hog, after, healthy) = client_runtime().block_on(async move {
        let healthy = spawn_clients(address, 8, "/slow?ms=5", 5);
        // The connection stays usable after the 503.
        let hog_then_hello = get_all_on_one_connection(address, ["/hog", "/hello"]).await;
        let mut results = Vec::new();
        for handle in healthy {
            results.extend(handle.await.unwrap());
        }
        (
            hog_then_hello[0].clone(),
            hog_then_hello[1].clone(),
            results,
        )
    });
    assert_eq!(hog.0, StatusCode::SERVICE_UNAVAILABLE);
    let reason = String::from_utf8_lossy(&hog.1);
    assert!(reason.contains("memory budget"), "503 body: {reason}");
    assert_eq!(after, (StatusCode::OK, bytes::Bytes::from_static(b"hello")));
    assert_eq!(healthy.len(), 40);
    assert!(
        healthy
            .iter()
            .all(|(status, body)| *status == StatusCode::OK && body == "slow"),
        "a healthy request failed: {healthy:?}"
    );
    assert_eq!(server.stats.over_budget(), 1);
}

#[test]
fn many_over_budget_requests_among_normal_ones_fail_alone() {
    let server = start(builder());
    let address = server.address;
    let paths: Vec<&'static str> = (0..200)
        .map(|index| if index % 10 == 0 { "/hog" } else { "/hello" })
        .collect();
    let statuses = client_runtime().block_on(get_all_on_one_connection(address, paths.clone()));
    let outcomes: Vec<_> = paths
        .iter()
        .zip(statuses)
        .map(|(path, (status, _))| (*path, status))
        .collect();
    for (path, status) in &outcomes {
        let expected = if *path == "/hog" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        assert_eq!(*status, expected, "{path}");
    }
    assert_eq!(server.stats.over_budget(), 20);
}

#[test]
fn request_waits_for_a_busy_arena_then_gets_503() {
    let one_arena = PoolConfig::new(1, 64 << 10);
    let server = start_with_arenas(
        builder().arena_wait(Duration::from_millis(100)),
        one_arena,
        routes,
    );
    let address = server.address;
    let (holder, refused, waited) = client_runtime().block_on(async move {
        let holder = spawn_clients(address, 1, "/slow?ms=600", 1).remove(0);
        pagekeep_executor::sleep(Duration::from_millis(100)).await;
        let mut connection = ClientConnection::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        let started = Instant::now();
        let refused = get_on(&mut connection, "/hello").await;
        let waited = started.elapsed();
        (holder.await.unwrap().remove(0), refused, waited)
    });
    assert_eq!(holder.0, StatusCode::OK);
    assert_eq!(refused.0, StatusCode::SERVICE_UNAVAILABLE);
    let reason = String::from_utf8_lossy(&refused.1);
    assert!(reason.contains("concurrent requests"), "503 body: {reason}");
    assert!(
        waited >= Duration::from_millis(100),
        "refused after {waited:?}"
    );
    assert_eq!(server.stats.arena_waits_timed_out(), 1);
}

#[test]
fn waiting_request_gets_the_arena_when_it_is_released() {
    let one_arena = PoolConfig::new(1, 64 << 10);
    let server = start_with_arenas(
        builder().arena_wait(Duration::from_secs(5)),
        one_arena,
        routes,
    );
    let address = server.address;
    let results = client_runtime().block_on(async move {
        let mut results = Vec::new();
        for handle in spawn_clients(address, 4, "/slow?ms=50", 1) {
            results.extend(handle.await.unwrap());
        }
        results
    });
    assert!(
        results.iter().all(|(status, _)| *status == StatusCode::OK),
        "{results:?}"
    );
    assert_eq!(server.stats.arena_waits_timed_out(), 0);
}

#[test]
fn escaped_memory_keeps_its_arena_quarantined_until_freed() {
    let server = start_with_arenas(builder(), PoolConfig::new(4, 64 << 10), probes);
    // Second on its connection, after one that left nothing behind.
    let results = client_runtime().block_on(get_all_on_one_connection(
        server.address,
        ["/hello", "/keep"],
    ));
    assert_eq!(results[1].0, StatusCode::OK);
    // The vector in KEPT came from the request's arena: that arena must not be reused.
    let kept_address = KEPT.lock().unwrap()[0].as_ptr().addr();
    assert!(server.pool().arena_index_of(kept_address).is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats.arenas().quarantined != 1 {
        assert!(Instant::now() < deadline, "{:?}", server.stats.arenas());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Other requests are served meanwhile from the other arenas, contents intact.
    for _ in 0..10 {
        assert_eq!(get(server.address, "/hello").0, StatusCode::OK);
    }
    assert!(KEPT.lock().unwrap()[0].iter().all(|&byte| byte == 42));
    // Freed here, on a test thread: the arena rejoins the pool (checked on drop). KEPT's
    // own buffer grew inside the request too, so it goes as well: `clear` would not do.
    drop(std::mem::take(&mut *KEPT.lock().unwrap()));
}

#[test]
fn idle_keep_alive_connections_hold_no_arena() {
    let server = start_with_arenas(builder(), PoolConfig::new(8, 64 << 10), routes);
    let address = server.address;
    let pool = server.pool();
    client_runtime().block_on(async move {
        let mut connections = Vec::new();
        for _ in 0..4 {
            let mut connection = ClientConnection::connect(address, CLIENT_TIMEOUT)
                .await
                .unwrap();
            for path in ["/hello", "/typed", "/typed?x=1", "/hello", "/typed"] {
                assert_eq!(get_on(&mut connection, path).await.0, StatusCode::OK);
            }
            connections.push(connection);
        }
        // Four connections open and idle: every arena is free, none pinned by what hyper
        // keeps for a connection between requests. (Well before the connections' own
        // timeouts, 5 s, would close them and free whatever they hold.)
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let arenas = pool.stats();
            if arenas.free == arenas.arenas {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "idle connections pin arenas: {arenas:?}"
            );
            pagekeep_executor::sleep(Duration::from_millis(5)).await;
        }
        drop(connections);
    });
}

#[test]
fn two_servers_share_one_pool_and_one_stops_while_the_other_serves() {
    let pool = own_servers_pool();
    let one = builder()
        .arena_pool(pool)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let two = builder()
        .arena_pool(pool)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let (first, second) = (one.local_addr(), two.local_addr());
    let (stop_one, stop_two) = (one.shutdown_handle(), two.shutdown_handle());
    let serving_one = std::thread::spawn(move || one.serve(routes));
    let serving_two = std::thread::spawn(move || two.serve(routes));
    assert_eq!(get(first, "/hello").0, StatusCode::OK);
    assert_eq!(get(second, "/hello").0, StatusCode::OK);
    // A request of the second server in flight while the first stops.
    let slow = std::thread::spawn(move || get(second, "/slow?ms=300"));
    stop_one.trigger();
    serving_one.join().unwrap().unwrap();
    assert_eq!(slow.join().unwrap().0, StatusCode::OK);
    assert_eq!(get(second, "/hello").0, StatusCode::OK);
    assert_eq!(get(second, "/hog").0, StatusCode::SERVICE_UNAVAILABLE);
    stop_two.trigger();
    serving_two.join().unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pool.stats().free != 8 {
        assert!(Instant::now() < deadline, "{:?}", pool.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}
