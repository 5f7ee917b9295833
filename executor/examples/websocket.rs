//! A WebSocket echo server: `GET /` with the WebSocket upgrade headers switches to the
//! WebSocket protocol (tokio-tungstenite over the upgraded socket, through tokio's I/O
//! traits on `pagekeep_executor::upgrade::Upgraded`, no hyper-util) and every text or
//! binary message comes back as it was sent; a plain request gets a line saying so.
//!
//! `cargo run --release -p pagekeep-executor --example websocket -- [PORT] [WORKERS]`
//! (or `PORT=8080 WORKERS=2`); Ctrl-C shuts down gracefully (open WebSockets are
//! dropped at the shutdown deadline).
//!
//! The handler only answers the handshake, in its request's arena as any handler. The
//! WebSocket outlives that request, so it runs in a task of its own, spawned outside
//! any arena: the request's arena goes back to the pool as soon as the 101 response is
//! written. No request budget counts the WebSocket's memory; what bounds it is the
//! protocol's limits below (per connection) and `max_connections` (an upgraded socket
//! keeps its connection's slot).

mod common;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::Full;
use pagekeep_executor::RequestBody;
use pagekeep_executor::upgrade::Upgraded;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

// Routes each request's allocations to its own arena (see `pagekeep_executor::RequestAllocator`).
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

/// The largest message (and frame) a client may send: a WebSocket's memory is bounded
/// by these limits, not by a request's budget.
const MAX_MESSAGE_BYTES: usize = 64 << 10;

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8080);
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .bind(address)?;
    println!(
        "websocket: listening on http://{} with {workers} workers (ws://{0}/)",
        server.local_addr()
    );
    server.serve(|request| async move { handshake(request) })?;
    println!("websocket: shut down");
    Ok(())
}

/// Answers a WebSocket handshake with 101 and spawns the echo task; anything else gets
/// a plain response.
fn handshake(mut request: Request<RequestBody>) -> Response<Full<Bytes>> {
    let Some(accept) = websocket_accept(request.headers()) else {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "websocket: connect with a WebSocket client\n",
        );
    };
    // Taken from the request here, in the handler; it completes once hyper has written
    // the 101 below and handed the socket over.
    let upgrade = hyper::upgrade::on(&mut request);
    // Spawned tasks live outside any arena: the WebSocket holds nothing of this
    // request's arena (the request itself is not moved in).
    drop(pagekeep_executor::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => echo(Upgraded::new(upgraded)).await,
            Err(error) => eprintln!("websocket: upgrade failed: {error}"),
        }
    }));
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// The `Sec-WebSocket-Accept` value for a valid WebSocket handshake (RFC 6455 §4.2.1).
fn websocket_accept(headers: &HeaderMap) -> Option<header::HeaderValue> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
        || headers.get(header::SEC_WEBSOCKET_VERSION)? != "13"
    {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    derive_accept_key(key.as_bytes()).parse().ok()
}

/// Echoes every text and binary message until the client closes (tungstenite answers
/// pings and the close handshake itself) or goes away.
async fn echo(io: Upgraded) {
    let config = WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(4 * MAX_MESSAGE_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    while let Some(message) = socket.next().await {
        let Ok(message) = message else {
            // A protocol error, a message past the limits, or the client vanished.
            return;
        };
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            return;
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
