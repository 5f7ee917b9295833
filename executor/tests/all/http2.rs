//! HTTP/2 (feature `http2`): cleartext with prior knowledge (h2c) on the same port as
//! HTTP/1.1, driven by hyper's HTTP/2 client on a tokio runtime, many streams on one
//! connection.
//!
//! The rules under test (the README's "HTTP/2"): each stream's handler runs in an arena
//! of its own, under its own budget (503 on that stream, the connection goes on) and
//! its own panic containment (500 on that stream); the server's concurrent-stream bound
//! is announced and kept; shutdown lets open streams finish; a client that sends the
//! preface and nothing more, or whose streams are all done, is closed by the header
//! read and idle timeouts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pagekeep_executor::{PoolConfig, RequestBody};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `scenario` on a tokio runtime of its own, bounded by [`LIMIT`].
pub(crate) fn on_tokio<F: Future>(scenario: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(LIMIT, scenario)
                .await
                .expect("the scenario took too long")
        })
}

/// An HTTP/2 connection with prior knowledge to `address`; the connection's task runs
/// until the server closes it.
async fn connect(address: SocketAddr) -> (SendRequest<Empty<Bytes>>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("the HTTP/2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, driver)
}

/// GETs `path` as a new stream on `sender`'s connection.
pub(crate) async fn get_h2(
    mut sender: SendRequest<Empty<Bytes>>,
    path: &'static str,
) -> (StatusCode, Bytes) {
    sender.ready().await.expect("the connection takes streams");
    let request = Request::get(format!("http://localhost{path}"))
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.version(), Version::HTTP_2);
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    (status, body)
}

/// Starts one stream per path on `sender`'s connection at once and waits for them all.
async fn get_all_at_once(
    sender: &SendRequest<Empty<Bytes>>,
    paths: &[&'static str],
) -> Vec<(StatusCode, Bytes)> {
    let streams: Vec<_> = paths
        .iter()
        .map(|path| tokio::spawn(get_h2(sender.clone(), path)))
        .collect();
    let mut results = Vec::new();
    for stream in streams {
        results.push(stream.await.unwrap());
    }
    results
}

/// Handlers that have arrived at `/together` and not left yet.
static TOGETHER: AtomicUsize = AtomicUsize::new(0);
/// How many `/together` handlers wait for each other.
const STREAMS: usize = 10;

/// `/together`: a fresh allocation's arena, reported once `STREAMS` handlers are in at
/// once (so they ran concurrently); `/gauge`: notes how many run at once in `GAUGE_MAX`.
async fn probes(request: Request<RequestBody>) -> Response<TestBody> {
    match request.uri().path() {
        "/together" => {
            let probe = Box::new([7u8; 100]);
            let address = probe.as_ptr().addr();
            let routed = pagekeep_arena::in_arena();
            TOGETHER.fetch_add(1, Ordering::AcqRel);
            let deadline = Instant::now() + Duration::from_secs(10);
            while TOGETHER.load(Ordering::Acquire) < STREAMS && Instant::now() < deadline {
                pagekeep_executor::sleep(Duration::from_millis(1)).await;
            }
            text(StatusCode::OK, format!("{address} {routed}"))
        }
        "/gauge" => {
            let now = GAUGE.fetch_add(1, Ordering::AcqRel) + 1;
            GAUGE_MAX.fetch_max(now, Ordering::AcqRel);
            pagekeep_executor::sleep(Duration::from_millis(20)).await;
            GAUGE.fetch_sub(1, Ordering::AcqRel);
            text(StatusCode::OK, "gauged")
        }
        _ => routes(request).await,
    }
}

static GAUGE: AtomicUsize = AtomicUsize::new(0);
static GAUGE_MAX: AtomicUsize = AtomicUsize::new(0);

#[test]
fn many_concurrent_streams_on_one_connection_each_run_in_an_arena_of_its_own() {
    let server = start_with_arenas(builder(), PoolConfig::new(16, 256 << 10), probes);
    let paths = vec!["/together"; STREAMS];
    let results = on_tokio(async {
        let (sender, _driver) = connect(server.address).await;
        get_all_at_once(&sender, &paths).await
    });
    let mut arenas = Vec::new();
    for (status, body) in results {
        assert_eq!(status, StatusCode::OK);
        let body = String::from_utf8(body.to_vec()).unwrap();
        let (address, routed) = body.split_once(' ').unwrap();
        assert_eq!(routed, "true", "a stream's handler ran outside an arena");
        let address: usize = address.parse().unwrap();
        let arena = server
            .pool()
            .arena_index_of(address)
            .unwrap_or_else(|| panic!("{address:#x} is not in the server's arenas"));
        arenas.push(arena);
    }
    arenas.sort_unstable();
    arenas.dedup();
    assert_eq!(
        arenas.len(),
        STREAMS,
        "streams running together shared an arena"
    );
    assert_eq!(server.stats.accepted_connections(), 1, "one connection");
}

#[test]
fn a_stream_over_budget_gets_503_while_the_others_on_its_connection_complete() {
    let server = start(builder());
    let (results, after) = on_tokio(async {
        let (sender, _driver) = connect(server.address).await;
        let mut paths = vec!["/slow?ms=30"; 8];
        paths.insert(3, "/hog");
        let results = get_all_at_once(&sender, &paths).await;
        // The connection goes on.
        let after = get_h2(sender.clone(), "/hello").await;
        (results, after)
    });
    for (index, (status, body)) in results.iter().enumerate() {
        if index == 3 {
            assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
            let reason = String::from_utf8_lossy(body);
            assert!(reason.contains("memory budget"), "503 body: {reason}");
        } else {
            assert_eq!((*status, body.as_ref()), (StatusCode::OK, &b"slow"[..]));
        }
    }
    assert_eq!(after, (StatusCode::OK, Bytes::from_static(b"hello")));
    assert_eq!(server.stats.over_budget(), 1);
    assert_eq!(server.stats.accepted_connections(), 1);
}

#[test]
fn a_handler_panic_gives_500_on_its_stream_only() {
    let server = start(builder());
    let (results, after) = on_tokio(async {
        let (sender, _driver) = connect(server.address).await;
        let results =
            get_all_at_once(&sender, &["/slow?ms=30", "/panic", "/hello", "/slow?ms=30"]).await;
        let after = get_h2(sender.clone(), "/hello").await;
        (results, after)
    });
    let statuses: Vec<_> = results.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK,
            StatusCode::OK
        ]
    );
    assert_eq!(after.0, StatusCode::OK);
    assert_eq!(server.stats.panics(), 1);
    assert_eq!(server.stats.accepted_connections(), 1);
}

#[test]
fn the_concurrent_stream_bound_is_announced_and_kept() {
    let server = start_with(builder().max_concurrent_streams(2), probes);
    let results = on_tokio(async {
        let (sender, _driver) = connect(server.address).await;
        // One stream first: its response comes after the server's SETTINGS, so the
        // client knows the bound before it opens more (streams opened past the bound
        // before that would be refused, `REFUSED_STREAM`, for the client to retry).
        assert_eq!(get_h2(sender.clone(), "/hello").await.0, StatusCode::OK);
        get_all_at_once(&sender, &["/gauge"; 8]).await
    });
    for (status, _) in &results {
        assert_eq!(*status, StatusCode::OK);
    }
    let most = GAUGE_MAX.load(Ordering::Acquire);
    assert!(
        (1..=2).contains(&most),
        "{most} streams ran at once with a bound of 2"
    );
}

#[test]
fn shutdown_lets_open_streams_finish_and_closes_the_connection() {
    let server = start(builder());
    let address = server.address;
    let shutdown = server.shutdown.clone();
    let stats = server.stats.clone();
    let results = on_tokio(async move {
        let (sender, driver) = connect(address).await;
        let streams: Vec<_> = (0..4)
            .map(|_| tokio::spawn(get_h2(sender.clone(), "/slow?ms=300")))
            .collect();
        while stats.requests() < 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        shutdown.trigger();
        let mut results = Vec::new();
        for stream in streams {
            results.push(stream.await.unwrap());
        }
        // GOAWAY, then the connection ends.
        driver.await.unwrap();
        results
    });
    for result in results {
        assert_eq!(result, (StatusCode::OK, Bytes::from_static(b"slow")));
    }
    server.stop();
}

#[test]
fn a_client_that_sends_the_preface_and_stops_is_closed_at_the_header_read_timeout() {
    let server = start(builder().header_read_timeout(Duration::from_millis(200)));
    let mut stream = raw(server.address);
    std::io::Write::write_all(&mut stream, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let ended = read_until(&mut stream, &mut received, Duration::from_secs(10), |_| {
        false
    });
    assert_eq!(ended, Ended::Closed);
    // The server's SETTINGS came first: it took the connection for HTTP/2.
    assert_eq!(received.get(3), Some(&4), "no SETTINGS frame: {received:?}");
    server.assert_no_connection_left();
}

#[test]
fn an_http2_connection_whose_streams_are_done_is_closed_at_the_idle_timeout() {
    let server = start(builder().idle_timeout(Duration::from_millis(200)));
    let first = on_tokio(async {
        let (sender, driver) = connect(server.address).await;
        // The body outlives the connection task's poll that sent the response head:
        // only the stream's task sees it end.
        let first = get_h2(sender.clone(), "/chunked").await;
        // Ends when the server closes the connection (bounded by `LIMIT`).
        driver.await.unwrap();
        first
    });
    assert_eq!(
        first,
        (StatusCode::OK, Bytes::from_static(b"one,two,three"))
    );
    server.assert_no_connection_left();
}

#[test]
fn http1_and_http2_clients_share_the_port() {
    let server = start(builder());
    assert_eq!(
        get(server.address, "/hello"),
        (StatusCode::OK, Bytes::from_static(b"hello"))
    );
    let h2 = on_tokio(async {
        let (sender, _driver) = connect(server.address).await;
        get_h2(sender, "/hello").await
    });
    assert_eq!(h2, (StatusCode::OK, Bytes::from_static(b"hello")));
}
