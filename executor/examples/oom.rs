//! One route allocates without bound; the others keep serving.
//!
//! `GET /oom` builds an ever-growing list of 64 KiB blocks, yielding between blocks as
//! real handlers yield between awaits. Its request arena (the budget, `ARENA_BYTES`,
//! default 1 MiB) runs out after a few blocks: the allocation that does not fit spills
//! to the fallback heap and flags the arena, the server drops the handler at its next
//! poll (its destructors free the list) and the client gets 503 saying the request
//! exceeded its memory budget. Every other path answers "Hello, World!" meanwhile.
//!
//! `cargo run --release -p pagekeep-executor --example oom -- [PORT] [WORKERS]`, then
//! `curl -i http://127.0.0.1:8082/oom` and `curl http://127.0.0.1:8082/`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;

// Routes each request's allocations to its arena; without it budgets are not enforced.
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

async fn handle(request: Request<pagekeep_executor::RequestBody>) -> Response<Full<Bytes>> {
    if request.uri().path() == "/oom" {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Written, so the memory is really used.
            hoard.push(vec![0xA5; 64 << 10]);
            pagekeep_executor::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    response
}

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8082);
    let arena_bytes = std::env::var("ARENA_BYTES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1 << 20);
    let server = pagekeep_executor::Server::builder()
        .workers(workers)
        .arena_bytes(arena_bytes)
        .bind(address)?;
    println!(
        "oom: listening on http://{} with {workers} workers, {arena_bytes} bytes per request; \
         GET /oom goes over budget",
        server.local_addr()
    );
    let stats = server.stats();
    server.serve(handle)?;
    println!(
        "oom: shut down after {} requests, {} cancelled over budget",
        stats.requests(),
        stats.over_budget()
    );
    Ok(())
}
