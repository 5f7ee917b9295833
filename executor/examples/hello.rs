//! Plaintext "Hello, World!" on every path.
//!
//! `cargo run --release -p executor --example hello -- [PORT] [WORKERS]`
//! (or `PORT=8080 WORKERS=2`); Ctrl-C shuts down gracefully.

mod common;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8080);
    let server = executor::Server::builder().workers(workers).bind(address)?;
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
