//! Plaintext "Hello, World!" on every path.
//!
//! `cargo run --release -p executor --example hello -- [PORT] [WORKERS]`
//! (or `PORT=8080 WORKERS=2`; `REUSE_PORT=0` shares one listening socket between the
//! workers instead of one `SO_REUSEPORT` socket each); Ctrl-C shuts down gracefully.

mod common;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;

fn main() -> std::io::Result<()> {
    let (address, workers) = common::settings(8080);
    let mut builder = executor::Server::builder().workers(workers);
    if let Ok(value) = std::env::var("REUSE_PORT") {
        // REUSE_PORT=0: one listening socket shared by the workers.
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
