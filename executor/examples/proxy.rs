//! A handler that calls another HTTP server: `GET /path` is forwarded to
//! `UPSTREAM` (default `127.0.0.1:8080`, for example the `hello` example) with the
//! executor's HTTP/1 client (non-blocking connect, 2 s timeout); upstream failures
//! become 502, timeouts 504.
//!
//! `UPSTREAM=127.0.0.1:8080 cargo run --release -p pagekeep-executor --example proxy -- [PORT] [WORKERS]`

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use pagekeep_executor::client::{ClientError, send_request};

// Routes each request's allocations to its own arena (see `pagekeep_executor::RequestAllocator`).
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn forward(
    upstream: SocketAddr,
    request: Request<pagekeep_executor::RequestBody>,
) -> Response<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let outbound = match Request::get(path)
        .header("host", upstream.to_string())
        .body(Empty::<Bytes>::new())
    {
        Ok(outbound) => outbound,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "bad path\n"),
    };
    // The exchange runs in this request's arena: the upstream's response counts
    // against the request's budget.
    match send_request(upstream, outbound, Duration::from_secs(2)).await {
        Ok(response) => response.map(Full::new),
        Err(ClientError::Timeout) => plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
        Err(_) => plain(StatusCode::BAD_GATEWAY, "upstream failed\n"),
    }
}

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8081);
    let upstream: SocketAddr = std::env::var("UPSTREAM")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .bind(address)?;
    println!(
        "proxy: listening on http://{} with {workers} workers, forwarding to http://{upstream}",
        server.local_addr()
    );
    server.serve(move |request| forward(upstream, request))?;
    println!("proxy: shut down");
    Ok(())
}
