//! A handler that calls another HTTP server: `GET /path` is forwarded to
//! `UPSTREAM` (`host:port`, a name or an address; default `127.0.0.1:8080`, for example
//! the `hello` example) with the executor's pooled HTTP/1 client (keep-alive
//! connections reused across requests, at most 64 per upstream, 2 s request timeout);
//! upstream failures become 502, timeouts 504.
//!
//! `UPSTREAM=localhost:8080 cargo run --release -p pagekeep-executor --example proxy -- [PORT] [WORKERS]`

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use pagekeep_executor::client::{Client, ClientError};

// Routes each request's allocations to its own arena (see `pagekeep_executor::RequestAllocator`).
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn forward(
    client: Client,
    upstream: &str,
    request: Request<pagekeep_executor::RequestBody>,
) -> Response<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    // The pool's connections live outside this request's arena; the response, read
    // here, counts against the request's budget.
    let response = match client.get(&format!("http://{upstream}{path}")).await {
        Ok(response) => response,
        Err(ClientError::Timeout | ClientError::ConnectTimeout) => {
            return plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n");
        }
        Err(_) => return plain(StatusCode::BAD_GATEWAY, "upstream failed\n"),
    };
    let (parts, body) = response.into_parts();
    // Read to its end, the body gives the connection back to the pool.
    match pagekeep_executor::timeout(Duration::from_secs(2), body.collect()).await {
        Ok(Ok(body)) => Response::from_parts(parts, Full::new(body.to_bytes())),
        Ok(Err(_)) => plain(StatusCode::BAD_GATEWAY, "upstream failed\n"),
        Err(_) => plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
    }
}

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8081);
    let upstream: &'static str = Box::leak(
        std::env::var("UPSTREAM")
            .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
            .into_boxed_str(),
    );
    let client = Client::builder()
        .max_connections_per_host(64)
        .request_timeout(Duration::from_secs(2))
        .build();
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .bind(address)?;
    println!(
        "proxy: listening on http://{} with {workers} workers, forwarding to http://{upstream}",
        server.local_addr()
    );
    server.serve(move |request| forward(client.clone(), upstream, request))?;
    println!("proxy: shut down");
    Ok(())
}
