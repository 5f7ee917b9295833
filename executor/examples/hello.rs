//! Plaintext "Hello, World!" on every path.
//!
//! `cargo run --release -p pagekeep-executor --example hello -- [PORT] [WORKERS]`
//! (or `PORT=8080 WORKERS=2`; `REUSE_PORT=1` gives each worker its own `SO_REUSEPORT`
//! socket instead of sharing one); Ctrl-C shuts down gracefully.

mod common;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;

// Routes each request's allocations to its own arena (see `pagekeep_executor::RequestAllocator`).
#[global_allocator]
static GLOBAL: pagekeep_executor::RequestAllocator = pagekeep_executor::request_allocator();

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8080);
    let mut builder = pagekeep_executor::Server::builder().workers(workers);
    if let Ok(value) = std::env::var("REUSE_PORT") {
        // REUSE_PORT=1: one SO_REUSEPORT socket per worker (default: one shared socket).
        builder = builder.reuse_port(value != "0");
    }
    let server = builder.bind(address)?;
    println!(
        "hello: listening on http://{} with {workers} workers",
        server.local_addr()
    );
    server.serve(|_request| async {
        let mut response = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        response
    })?;
    println!("hello: shut down");
    Ok(())
}
