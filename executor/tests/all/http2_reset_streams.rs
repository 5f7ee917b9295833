//! An HTTP/2 client cancels one of its streams (`RST_STREAM`) mid-request (feature
//! `http2`): while its handler runs, while its response body streams, while its
//! request body uploads. The client is the `h2` crate's, on tokio. Each time the
//! stream's handler (or body) is dropped, its arena goes back to the pool (neither
//! leased nor quarantined), the connection's other streams complete, and the
//! connection takes new streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use pagekeep_executor::RequestBody;

use crate::http2::on_tokio;
use crate::support::*;

/// Counts a drop in its counter.
struct Dropped(&'static AtomicUsize);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// How far one test's cancelled stream got: its handler entered, its guard dropped.
struct Probe {
    entered: AtomicUsize,
    dropped: AtomicUsize,
}

impl Probe {
    const fn new() -> Self {
        Self {
            entered: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }
}

static HOLDING: Probe = Probe::new();
static HOLDING_THE_ONLY_ARENA: Probe = Probe::new();
static DRIPPING: Probe = Probe::new();
static UPLOADING: Probe = Probe::new();

/// A response body that sends a chunk every 10 ms, forever, with a guard.
struct Drip {
    _guard: Dropped,
    tick: pagekeep_executor::Sleep,
}

impl http_body::Body for Drip {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::ready!(std::pin::Pin::new(&mut self.tick).poll(cx));
        let next = Instant::now() + Duration::from_millis(10);
        self.tick.reset(next);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"drop ",
        )))))
    }
}

/// `/hold`: a handler that never answers (it holds arena memory and a guard);
/// `/drip`: an endless response body; `/upload`: reads its request body to the end;
/// the rest as `routes`.
async fn cancellable(request: Request<RequestBody>) -> Response<TestBody> {
    match request.uri().path() {
        "/hold" | "/hold-the-only-arena" => {
            let probe = if request.uri().path() == "/hold" {
                &HOLDING
            } else {
                &HOLDING_THE_ONLY_ARENA
            };
            let _guard = Dropped(&probe.dropped);
            let held = vec![5u8; 10_000];
            probe.entered.fetch_add(1, Ordering::AcqRel);
            pagekeep_executor::sleep(Duration::from_secs(3600)).await;
            text(StatusCode::OK, held)
        }
        "/drip" => {
            DRIPPING.entered.fetch_add(1, Ordering::AcqRel);
            let body = Drip {
                _guard: Dropped(&DRIPPING.dropped),
                tick: pagekeep_executor::sleep(Duration::ZERO),
            };
            Response::new(body.map_err(|never| match never {}).boxed())
        }
        "/upload" => {
            let _guard = Dropped(&UPLOADING.dropped);
            UPLOADING.entered.fetch_add(1, Ordering::AcqRel);
            match request.into_body().collect().await {
                Ok(body) => text(StatusCode::OK, body.to_bytes()),
                Err(_) => text(StatusCode::BAD_REQUEST, "the body failed"),
            }
        }
        _ => routes(request).await,
    }
}

/// An `h2` client connection to `address`, driven by a task of its own.
async fn connect(address: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = h2::client::handshake(stream).await.expect("the handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.ready().await.expect("the connection takes streams")
}

/// Opens a stream for `path`; `end` ends the request (no body).
fn open(
    sender: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    end: bool,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = Request::post(format!("http://localhost{path}"))
        .body(())
        .unwrap();
    sender.send_request(request, end).expect("a stream")
}

/// A response's status and whole body.
async fn finish(response: h2::client::ResponseFuture) -> (StatusCode, Bytes) {
    let response = response.await.expect("a response");
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the body");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, Bytes::from(bytes))
}

/// Waits (bounded) until `counter` reaches `value`.
async fn reaches(what: &str, counter: &AtomicUsize, value: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.load(Ordering::Acquire) < value {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Slow streams on both sides of the cancelled one; `cancel` opens that stream and
/// resets it once it is under way. Then checks the others and a new stream.
async fn around_a_cancelled_stream<F: Future<Output = ()>>(
    address: SocketAddr,
    cancel: impl FnOnce(h2::client::SendRequest<Bytes>) -> F,
) {
    let mut sender = connect(address).await;
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(open(&mut sender, "/slow?ms=300", true).0);
    }
    cancel(sender.clone()).await;
    for _ in 0..2 {
        others.push(open(&mut sender, "/slow?ms=100", true).0);
    }
    for response in others {
        assert_eq!(
            finish(response).await,
            (StatusCode::OK, Bytes::from_static(b"slow"))
        );
    }
    // The connection takes new streams.
    let (response, _) = open(&mut sender, "/hello", true);
    assert_eq!(
        finish(response).await,
        (StatusCode::OK, Bytes::from_static(b"hello"))
    );
}

#[test]
fn a_stream_reset_while_its_handler_runs_drops_the_handler_and_frees_its_arena() {
    let server = start_with(builder(), cancellable);
    let address = server.address;
    on_tokio(around_a_cancelled_stream(
        address,
        |mut sender| async move {
            let (_response, mut stream) = open(&mut sender, "/hold", true);
            reaches("the handler started", &HOLDING.entered, 1).await;
            stream.send_reset(h2::Reason::CANCEL);
            reaches("the handler was dropped", &HOLDING.dropped, 1).await;
        },
    ));
    server.assert_arenas_returned();
    assert_eq!(server.stats.accepted_connections(), 1, "one connection");
}

#[test]
fn a_stream_reset_while_its_body_streams_drops_the_body_and_frees_its_arena() {
    let server = start_with(builder(), cancellable);
    let address = server.address;
    on_tokio(around_a_cancelled_stream(
        address,
        |mut sender| async move {
            let (response, mut stream) = open(&mut sender, "/drip", true);
            let response = response.await.expect("the response head");
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            let chunk = body.data().await.expect("a chunk").expect("the body");
            assert_eq!(&chunk[..], b"drop ");
            stream.send_reset(h2::Reason::CANCEL);
            reaches("the body was dropped", &DRIPPING.dropped, 1).await;
        },
    ));
    assert_eq!(DRIPPING.entered.load(Ordering::Acquire), 1);
    server.assert_arenas_returned();
    assert_eq!(server.stats.accepted_connections(), 1, "one connection");
}

#[test]
fn a_stream_reset_while_its_request_body_uploads_drops_the_handler_and_frees_its_arena() {
    let server = start_with(builder(), cancellable);
    let address = server.address;
    on_tokio(around_a_cancelled_stream(
        address,
        |mut sender| async move {
            let (_response, mut stream) = open(&mut sender, "/upload", false);
            stream
                .send_data(Bytes::from_static(b"the first part"), false)
                .expect("a data frame");
            reaches("the handler started", &UPLOADING.entered, 1).await;
            stream.send_reset(h2::Reason::CANCEL);
            reaches("the handler was dropped", &UPLOADING.dropped, 1).await;
        },
    ));
    server.assert_arenas_returned();
    assert_eq!(server.stats.accepted_connections(), 1, "one connection");
}

#[test]
fn a_stream_reset_while_it_waits_for_an_arena_leaves_the_arena_to_the_next_request() {
    // One arena, held by `/hold-the-only-arena`; a second stream waits for it (up to
    // 10 s) and is reset while it waits. Once the holder is reset too, the arena must
    // go to the next request at once, not to the cancelled waiter.
    let server = start_with_arenas(
        builder().arena_wait(Duration::from_secs(10)),
        pagekeep_executor::PoolConfig::new(1, 64 << 10),
        cancellable,
    );
    let address = server.address;
    let probe = &HOLDING_THE_ONLY_ARENA;
    let stats = server.stats.clone();
    on_tokio(async move {
        let mut sender = connect(address).await;
        let (_holding, mut holder) = open(&mut sender, "/hold-the-only-arena", true);
        reaches("the holder started", &probe.entered, 1).await;
        let (_waiting, mut waiter) = open(&mut sender, "/hello", true);
        while stats.requests() < 2 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        waiter.send_reset(h2::Reason::CANCEL);
        // Time for the reset to reach the server and drop the waiting request.
        tokio::time::sleep(Duration::from_millis(100)).await;
        holder.send_reset(h2::Reason::CANCEL);
        reaches("the holder was dropped", &probe.dropped, 1).await;
        // An arena given to the cancelled waiter would leave this one to wait out
        // the arena wait and get 503.
        let (response, _) = open(&mut sender, "/hello", true);
        assert_eq!(
            finish(response).await,
            (StatusCode::OK, Bytes::from_static(b"hello"))
        );
    });
    server.assert_arenas_returned();
}
