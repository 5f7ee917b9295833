//! An axum app served as it is (`ServiceHandler`, what `Server::serve_service` serves):
//! its routing, extractors, middleware and bodies run in each request's arena, under
//! its budget (503), its handler timeout (503) and its panic rule (500), and the server
//! goes on serving. Every test server checks on drop that all its arenas came back:
//! nothing axum does for a request outlives it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http::{Method, StatusCode};
use pagekeep_executor::ServiceHandler;
use serde::{Deserialize, Serialize};

use crate::support::*;

/// The app's shared state: requests seen by the middleware.
#[derive(Clone, Default)]
struct Counted {
    requests: Arc<AtomicU64>,
}

/// Where the middleware made an allocation, and whether it ran in an arena.
#[derive(Clone, Copy)]
struct MiddlewareProbe {
    address: usize,
    in_arena: bool,
}

/// Counts the request, leaves a probe of its own allocation for the handler, and marks
/// the response.
async fn probing_middleware(
    State(state): State<Counted>,
    mut request: Request,
    next: Next,
) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let allocation = Box::new([3u8; 100]);
    request.extensions_mut().insert(MiddlewareProbe {
        address: allocation.as_ptr().addr(),
        in_arena: pagekeep_arena::in_arena(),
    });
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("x-middleware", HeaderValue::from_static("ran"));
    drop(allocation);
    response
}

#[derive(Serialize, Deserialize)]
struct Where {
    path: usize,
    handler: usize,
    middleware: usize,
    handler_in_arena: bool,
    middleware_in_arena: bool,
}

/// Where the path extractor's string, a handler allocation and the middleware's
/// allocation are.
async fn where_(
    Path(name): Path<String>,
    Extension(probe): Extension<MiddlewareProbe>,
) -> Json<Where> {
    let allocation = Box::new([7u8; 100]);
    Json(Where {
        path: name.as_ptr().addr(),
        handler: allocation.as_ptr().addr(),
        middleware: probe.address,
        handler_in_arena: pagekeep_arena::in_arena(),
        middleware_in_arena: probe.in_arena,
    })
}

#[derive(Serialize, Deserialize)]
struct Sum {
    sum: u64,
    /// Where the JSON extractor put the numbers.
    address: usize,
}

async fn sum(Json(numbers): Json<Vec<u64>>) -> Json<Sum> {
    Json(Sum {
        sum: numbers.iter().sum(),
        address: numbers.as_ptr().addr(),
    })
}

/// Allocates without bound, awaiting between allocations, until cancelled.
async fn hog() -> &'static str {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 64 << 10]);
        pagekeep_executor::sleep(Duration::from_millis(1)).await;
    }
}

/// Goes past the budget (256 KiB) in one poll, without awaiting, and returns.
async fn gulp() -> String {
    let block = std::hint::black_box(vec![1u8; 1 << 20]);
    block.len().to_string()
}

async fn panics() -> &'static str {
    panic!("axum handler panics on purpose")
}

async fn slow() -> &'static str {
    pagekeep_executor::sleep(Duration::from_secs(5)).await;
    "slow"
}

async fn stream() -> Body {
    let chunks = futures::stream::unfold(0, |chunk| async move {
        if chunk == 3 {
            return None;
        }
        pagekeep_executor::sleep(Duration::from_millis(2)).await;
        let data = Bytes::from(format!("chunk {chunk};"));
        Some((Ok::<_, std::convert::Infallible>(data), chunk + 1))
    });
    Body::from_stream(chunks)
}

fn app(state: Counted) -> Router {
    Router::new()
        .route(
            "/hello/{name}",
            get(|Path(name): Path<String>| async move { format!("Hello, {name}!") }),
        )
        .route("/where/{name}", get(where_))
        .route("/sum", post(sum))
        .route("/hog", get(hog))
        .route("/gulp", get(gulp))
        .route("/panic", get(panics))
        .route("/slow", get(slow))
        .route("/stream", get(stream))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            probing_middleware,
        ))
        .with_state(state)
}

fn get_request(path: &str) -> http::Request<http_body_util::Full<Bytes>> {
    request(Method::GET, path, "")
}

#[test]
fn routes_extractors_middleware_state_and_a_stream_answer() {
    let state = Counted::default();
    let server = start_with(builder(), ServiceHandler::new(app(state.clone())));
    let answers = exchange_on_one_connection(
        server.address,
        vec![
            get_request("/hello/axum"),
            request(Method::POST, "/sum", "[1, 2, 3, 4]"),
            request(Method::POST, "/sum", "[1, \"two\"]"),
            get_request("/stream"),
            get_request("/nowhere"),
        ],
    );
    let statuses: Vec<_> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::OK,
            StatusCode::NOT_FOUND
        ],
        "{answers:?}"
    );
    assert_eq!(answers[0].body, "Hello, axum!");
    let total: Sum = serde_json::from_slice(&answers[1].body).unwrap();
    assert_eq!(total.sum, 10);
    assert_eq!(answers[3].body, "chunk 0;chunk 1;chunk 2;");
    assert_eq!(
        answers[3].headers.get("transfer-encoding").unwrap(),
        "chunked"
    );
    // The middleware layer ran for every routed request (axum's fallback for an
    // unknown path included: the layer wraps it too).
    for answer in &answers {
        assert_eq!(
            answer
                .headers
                .get("x-middleware")
                .map(HeaderValue::as_bytes),
            Some(&b"ran"[..]),
            "{answer:?}"
        );
    }
    assert_eq!(state.requests.load(Ordering::Relaxed), 5);
    assert_eq!(server.stats.requests(), 5);
}

/// Requests sent between two readings of the fallback-heap count.
const STEADY_REQUESTS: usize = 1_000;

#[test]
fn requests_through_a_middleware_make_no_fallback_heap_call_in_steady_state() {
    // A route outside the middleware layer reads the worker thread's count; with one
    // worker, that thread runs the connection and all its requests.
    let router = app(Counted::default()).route(
        "/fallback-calls",
        get(|| async { fallback_heap_calls().to_string() }),
    );
    let server = start_with(builder().workers(1), ServiceHandler::new(router));
    // Every response of the middleware carries a header of its own, `x-middleware`. GET
    // requests: a request body costs hyper calls of its own (its channel, its read
    // buffer), middleware or not.
    let mix = |count: usize| {
        (0..count).map(|index| match index % 3 {
            0 => get_request("/hello/steady"),
            1 => get_request("/where/steady"),
            _ => get_request("/nowhere"),
        })
    };
    // Warm up first: the connection's first requests grow its buffers and header map.
    let requests: Vec<_> = mix(100)
        .chain([get_request("/fallback-calls")])
        .chain(mix(STEADY_REQUESTS))
        .chain([get_request("/fallback-calls")])
        .collect();
    let answers = exchange_on_one_connection(server.address, requests);
    let count = |answer: &Answer| -> u64 {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        std::str::from_utf8(&answer.body).unwrap().parse().unwrap()
    };
    let before = count(&answers[100]);
    let after = count(answers.last().unwrap());
    for answer in &answers[101..answers.len() - 1] {
        assert_eq!(answer.headers["x-middleware"], "ran", "{answer:?}");
    }
    assert_eq!(
        after - before,
        0,
        "calls into the fallback heap over {STEADY_REQUESTS} requests through the middleware"
    );
}

#[test]
fn extractors_middleware_and_handlers_allocate_in_the_request_arena() {
    let server = start_with(builder(), ServiceHandler::new(app(Counted::default())));
    let answers = exchange_on_one_connection(
        server.address,
        vec![
            get_request("/where/a-name-long-enough-to-be-allocated"),
            get_request("/where/another-name-long-enough-to-be-allocated"),
            request(Method::POST, "/sum", "[5, 6, 7]"),
        ],
    );
    let pool = server.pool();
    let in_pool = |what: &str, address: usize| {
        assert!(
            pool.arena_index_of(address).is_some(),
            "the {what} allocation at {address:#x} is not in the server's arenas"
        );
        pool.arena_index_of(address).unwrap()
    };
    for answer in &answers[..2] {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let seen: Where = serde_json::from_slice(&answer.body).unwrap();
        assert!(seen.handler_in_arena, "the handler ran outside an arena");
        assert!(
            seen.middleware_in_arena,
            "the middleware ran outside an arena"
        );
        let arena = in_pool("path extractor's", seen.path);
        // All three in the same arena: the request's own.
        assert_eq!(in_pool("handler's", seen.handler), arena);
        assert_eq!(in_pool("middleware's", seen.middleware), arena);
    }
    assert_eq!(answers[2].status, StatusCode::OK, "{:?}", answers[2]);
    let total: Sum = serde_json::from_slice(&answers[2].body).unwrap();
    assert_eq!(total.sum, 18);
    in_pool("JSON extractor's", total.address);
}

#[test]
fn handlers_past_their_budget_get_503_and_the_server_goes_on() {
    let server = start_with(builder(), ServiceHandler::new(app(Counted::default())));
    let answers = exchange_on_one_connection(
        server.address,
        vec![
            get_request("/hog"),
            get_request("/hello/after-hog"),
            get_request("/gulp"),
            get_request("/hello/after-gulp"),
        ],
    );
    let statuses: Vec<_> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::OK
        ],
        "{answers:?}"
    );
    let reason = String::from_utf8_lossy(&answers[0].body);
    assert!(reason.contains("memory budget"), "503 body: {reason}");
    assert_eq!(answers[3].body, "Hello, after-gulp!");

    // A JSON document whose numbers take more than the budget once parsed (and whose
    // body alone does, once the extractor has collected it): the extractor is cancelled.
    // Alone on its connection: its unread rest may close it.
    let mut numbers = "[1".to_owned();
    numbers.push_str(&",1".repeat(150_000));
    numbers.push(']');
    let big =
        exchange_on_one_connection(server.address, vec![request(Method::POST, "/sum", numbers)]);
    assert_eq!(big[0].status, StatusCode::SERVICE_UNAVAILABLE, "{big:?}");
    let after = exchange_on_one_connection(server.address, vec![get_request("/hello/again")]);
    assert_eq!(after[0].status, StatusCode::OK);
    assert_eq!(server.stats.over_budget(), 3);
}

#[test]
fn a_panicking_handler_gets_500_and_the_server_goes_on() {
    let server = start_with(builder(), ServiceHandler::new(app(Counted::default())));
    let answers = exchange_on_one_connection(
        server.address,
        vec![get_request("/panic"), get_request("/hello/after-panic")],
    );
    assert_eq!(answers[0].status, StatusCode::INTERNAL_SERVER_ERROR);
    let reason = String::from_utf8_lossy(&answers[0].body);
    assert!(reason.contains("panicked"), "500 body: {reason}");
    assert_eq!(answers[1].status, StatusCode::OK);
    assert_eq!(answers[1].body, "Hello, after-panic!");
    assert_eq!(server.stats.panics(), 1);
}

#[test]
fn a_handler_past_the_handler_timeout_gets_503() {
    let server = start_with(
        builder().handler_timeout(Duration::from_millis(100)),
        ServiceHandler::new(app(Counted::default())),
    );
    let answers = exchange_on_one_connection(
        server.address,
        vec![get_request("/slow"), get_request("/hello/after-slow")],
    );
    assert_eq!(answers[0].status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = String::from_utf8_lossy(&answers[0].body);
    assert!(reason.contains("timed out"), "503 body: {reason}");
    assert_eq!(answers[1].status, StatusCode::OK);
    assert_eq!(server.stats.handler_timeouts(), 1);
}

#[test]
fn a_body_past_the_server_limit_gets_413_declared_or_chunked() {
    use http_body_util::BodyExt;
    use http_body_util::combinators::BoxBody;
    use pagekeep_executor::client::ClientConnection;

    let server = start_with(
        builder().max_body_bytes(1000),
        ServiceHandler::new(app(Counted::default())),
    );
    let mut numbers = "[1".to_owned();
    numbers.push_str(&",1".repeat(1000));
    numbers.push(']');
    // Declared: the server answers before calling the app.
    let declared = exchange_on_one_connection(
        server.address,
        vec![request(Method::POST, "/sum", numbers.clone())],
    );
    assert_eq!(declared[0].status, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked: the app's JSON extractor reads past the limit and says 413 itself.
    let address = server.address;
    let status = client_runtime().block_on(async move {
        let pieces = numbers
            .into_bytes()
            .chunks(500)
            .map(|piece| {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::copy_from_slice(
                    piece,
                )))
            })
            .collect::<Vec<_>>();
        let body = http_body_util::StreamBody::new(futures::stream::iter(pieces));
        let body: BoxBody<Bytes, std::convert::Infallible> = body.boxed();
        let mut connection = ClientConnection::connect(address, CLIENT_TIMEOUT)
            .await
            .unwrap();
        let request = http::Request::post("/sum")
            .header("host", "test")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        let response = connection.send(request, CLIENT_TIMEOUT).await.unwrap();
        let status = response.status();
        drop(response.into_body().collect().await);
        status
    });
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn the_client_address_is_an_extension_for_axum_extractors() {
    use pagekeep_executor::ClientAddr;
    let app = Router::new().route(
        "/me",
        get(
            |Extension(ClientAddr(client)): Extension<ClientAddr>| async move {
                client.ip().to_string()
            },
        ),
    );
    let server = start_with(builder().client_addr(true), ServiceHandler::new(app));
    let answers = exchange_on_one_connection(server.address, vec![get_request("/me")]);
    assert_eq!(answers[0].status, StatusCode::OK, "{answers:?}");
    assert_eq!(answers[0].body, "127.0.0.1");
}
